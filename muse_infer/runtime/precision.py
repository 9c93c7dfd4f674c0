"""Precision names ("auto", "fp32", "bf16", "fp16") and what "auto" means on a device.

Light: imports nothing heavy (the CLI offers the choices without importing torch). How a model is run
in a precision: ``muse_infer.model.precision``.

Precision is how an embedding was computed, not which model computed it: it is not part of the model
identity. An index encoded in bf16 is searched with fp32 queries (or the other way round); the rows
differ from fp32 ones by float rounding (cosine >= 0.999, tested). The index sidecar records the
precision of the run that wrote it (``"precision"``, beside ``"backend"``).
"""

from __future__ import annotations

from ..errors import BackendError

PRECISIONS = ("fp32", "bf16", "fp16")
PRECISION_CHOICES = ("auto", *PRECISIONS)


def resolve_precision(precision: str | None, device: str) -> str:
    """ "auto" (or None) -> "bf16" on a CUDA device, "fp32" elsewhere; other names are checked.

    ``device``: a resolved device name ("cpu", "cuda", "cuda:1"), not "auto".
    """
    precision = precision or "auto"
    if precision == "auto":
        return "bf16" if str(device).startswith("cuda") else "fp32"
    if precision not in PRECISIONS:
        raise BackendError(f"precision {precision!r} is not one of {PRECISION_CHOICES}")
    return precision
