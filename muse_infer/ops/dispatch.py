"""Which selective-scan implementation runs: an explicit choice, passed by the caller (the model carries it).

Choices (``SCAN_CHOICES``):
- "op": ``torch.ops.muse.selective_scan`` / ``muse::selective_scan_bidirectional`` (the C++ kernel on
  CPU, Triton on CUDA; refuses gradients). Both directions of a block are ONE fused call.
- "ref": ``selective_scan_ref``, the specification (computes float64 in float64).
- "chunked": ``selective_scan_chunked``, the same function with a backward pass fast enough to train.
- "script": ``selective_scan_script`` compiled by TorchScript, which a traced graph embeds (the
  portable TorchScript export).
- "auto": "chunked" when gradients are needed; else "op" when it has a fast kernel for the inputs'
  device and dtype (float32/16, bfloat16; see ``op.op_available``); else "ref".
Where no fused kernel runs ("ref", "chunked", "script"), both directions are composed as
``scan(forward) + flip(scan(flip(backward)))`` (``reference.selective_scan_bidirectional_ref``).

Who chooses: the model carries its choice (``MuseModel.set_scan``, ``BiMamba(scan=...)``) and passes it
as ``impl`` to ``scan`` / ``scan_bidirectional``; ``impl=None`` means the process default,
``default_scan()``: "auto", unless the environment variable ``MUSE_SCAN`` said otherwise when this module
was first imported (the user's override; read once, never written by this package).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch

from ..errors import ScanChoiceError
from .chunked import selective_scan_chunked
from .inputs import ScanInputs
from .reference import selective_scan_bidirectional_ref, selective_scan_ref

logger = logging.getLogger(__name__)
SCAN_CHOICES = ("auto", "op", "ref", "chunked", "script")
OP_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_ENVIRONMENT_CHOICE = os.environ.get("MUSE_SCAN")  # the user's override, read once, at import
_IMPL_NAMES = {
    "op": "muse::selective_scan",
    "ref": "selective_scan_ref",
    "chunked": "selective_scan_chunked",
    "script": "selective_scan_script (TorchScript)",
}
_announced: set[str] = set()


def check_scan_choice(choice: str, source: str = "scan") -> str:
    """``choice`` lower-cased when it is one of SCAN_CHOICES; else ScanChoiceError naming ``source``."""
    normalised = str(choice).strip().lower()
    if normalised not in SCAN_CHOICES:
        raise ScanChoiceError(
            f"{source}={choice!r} is not a scan choice; use one of {', '.join(SCAN_CHOICES)}"
        )
    return normalised


def default_scan() -> str:
    """The process default: MUSE_SCAN as it was when muse_infer.ops was imported, else "auto"."""
    if _ENVIRONMENT_CHOICE is None or not _ENVIRONMENT_CHOICE.strip():
        return "auto"
    return check_scan_choice(_ENVIRONMENT_CHOICE, source="MUSE_SCAN")


def resolve_scan(impl: str | None, u: torch.Tensor, needs_grad: bool) -> str:
    """The implementation ("op", "ref", "chunked" or "script") that ``impl`` means for inputs like ``u``."""
    choice = default_scan() if impl is None else check_scan_choice(impl)
    if choice == "auto":
        from .op import op_available

        op_fits = u.dtype in OP_DTYPES and op_available(u.device.type)
        choice = "chunked" if needs_grad else "op" if op_fits else "ref"
    key = f"{choice}:{u.device.type}"
    if key not in _announced:
        _announced.add(key)
        logger.debug("selective scan on %s uses %s", u.device.type, _IMPL_NAMES[choice])
    return choice


def scan(inputs: ScanInputs, delta_softplus: bool = False, impl: str | None = None) -> torch.Tensor:
    """One selective scan through the implementation ``impl`` means (None: ``default_scan()``).

    ``inputs``: a ScanInputs (or a sequence (u, delta, A, B, C[, D, z, delta_bias])), shapes as in
    ``ScanInputs``. Returns y (batch, Di, L) in u's dtype; same math as ``selective_scan_ref``.
    """
    inputs = ScanInputs.of(inputs)
    chosen = resolve_scan(impl, inputs.u, needs_grad=_needs_grad(inputs))
    return one_direction(chosen)(inputs, delta_softplus)


def scan_bidirectional(
    forward: ScanInputs, backward: ScanInputs, delta_softplus: bool = False, impl: str | None = None
) -> torch.Tensor:
    """Both scans of a BiMamba block, every input in natural time order; the backward one runs from
    step L-1 down to 0 and each of its outputs lands at its own step.

    "op" runs ``muse::selective_scan_bidirectional`` (one call, no flipped copies); the others compose
    scan(forward) + flip(scan(flip(backward))). Returns y (batch, Di, L) in forward u's dtype.
    """
    forward, backward = ScanInputs.of(forward), ScanInputs.of(backward)
    chosen = resolve_scan(impl, forward.u, needs_grad=_needs_grad((*forward, *backward)))
    if chosen == "op":
        from .op import selective_scan_bidirectional

        return selective_scan_bidirectional(forward, backward, delta_softplus)
    return selective_scan_bidirectional_ref(forward, backward, delta_softplus, scan=one_direction(chosen))


def one_direction(name: str) -> Callable[[ScanInputs, bool], torch.Tensor]:
    """The one-direction scan of a concrete implementation ("op", "ref", "chunked", "script")."""
    if name == "op":
        from .op import selective_scan

        return lambda inputs, softplus: selective_scan(*inputs, delta_softplus=softplus)
    if name == "chunked":
        return lambda inputs, softplus: selective_scan_chunked(*inputs, delta_softplus=softplus)
    if name == "script":
        from .torchscript_scan import selective_scan_scripted

        return selective_scan_scripted
    if name == "ref":
        return lambda inputs, softplus: selective_scan_ref(*inputs, delta_softplus=softplus)
    raise ValueError(f"{name!r} is not a concrete scan implementation (op, ref, chunked, script)")


def selective_scan_fn(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    impl: str | None = None,
) -> torch.Tensor:
    """``scan`` with Mamba's ``selective_scan_fn`` signature: same semantics as selective_scan_ref.

    Shapes: u, delta, z (batch, Di, L); A (Di, N); B, C (batch, N, L); D, delta_bias (Di,).
    Returns y (batch, Di, L) in u's dtype.
    """
    return scan(ScanInputs(u, delta, A, B, C, D, z, delta_bias), delta_softplus, impl)


def selective_scan_bidirectional_fn(
    forward, backward, delta_softplus: bool = False, *, impl: str | None = None
) -> torch.Tensor:
    """``scan_bidirectional`` under its earlier name (``forward``, ``backward``: ScanInputs or sequences)."""
    return scan_bidirectional(forward, backward, delta_softplus, impl)


def graph_being_recorded() -> bool:
    """True under torch.jit.trace / script, torch.compile and torch.export (ONNX's exporter included).

    The model then takes its plain path, without eager-only shortcuts (kept products, loops over the
    batch, the C++ conv), so that an exported graph holds standard ops and a dynamic batch.
    """
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)
