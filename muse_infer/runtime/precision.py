"""Precision names ("auto", "fp32", "bf16", "fp16") and what "auto" means on a device.

Light: imports nothing heavy (the CLI offers the choices without importing torch). How a model is run
in a precision: ``muse_infer.model.precision``.

Precision is how an embedding was computed, not which model computed it: it is not part of the model
identity. An index encoded in bf16 is searched with fp32 queries (or the other way round); the rows
differ from fp32 ones by float rounding (cosine >= 0.999, tested). The index sidecar records the
precision of the run that wrote it (``"precision"``, beside ``"backend"``).
"""

from __future__ import annotations

from ..cpu import CPUINFO, cpu_description
from ..errors import BackendError
from .choices import PRECISION_CHOICES, PRECISIONS

__all__ = ["PRECISIONS", "PRECISION_CHOICES", "resolve_precision", "cpu_has_native_bf16"]


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that compute bf16 natively


def resolve_precision(precision: str | None, device: str, cpu_bf16: bool | None = None) -> str:
    """ "auto" (or None) -> "bf16" on a CUDA device and on a CPU with native bf16 instructions
    (``cpu_bf16``; None: detected, ``cpu_has_native_bf16``), "fp32" elsewhere; other names are checked.

    Why bf16 on such CPUs: ViT-B-32 ran 3.0-3.2x faster there at cosine 0.99998 to fp32
    (docs/benchmarks.md); without the instructions bf16 is emulated and slower than fp32.
    ``device``: a resolved device name ("cpu", "cuda", "cuda:1"), not "auto".
    """
    precision = precision or "auto"
    if precision == "auto":
        if str(device).startswith("cuda"):
            return "bf16"
        if str(device) == "cpu":
            native = cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16
            return "bf16" if native else "fp32"
        return "fp32"
    if precision not in PRECISIONS:
        raise BackendError(f"precision {precision!r} is not one of {PRECISION_CHOICES}")
    return precision


def cpu_has_native_bf16(cpuinfo: str = CPUINFO) -> bool:
    """Whether this CPU reports native bf16 instructions (``CPU_BF16_FLAGS``) in ``cpuinfo``'s flags.

    Read from the kernel's CPU description (Linux x86, ``muse_infer.cpu``); where there is none (macOS,
    Windows, ARM without the file) the answer is False and "auto" stays fp32: detected, never assumed.
    """
    _, flags = cpu_description(cpuinfo)
    return any(flag in flags for flag in CPU_BF16_FLAGS)
