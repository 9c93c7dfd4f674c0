"""The custom ops ``torch.ops.muse.selective_scan*`` and their Python entries; the registrations of
``muse::depthwise_conv_time_major`` (its entry and reference: ops/conv.py) and of
``muse::conv3x3_winograd`` (ops/winograd.py) too.

- ``selective_scan``: one scan, ``selective_scan_ref``'s arguments; it calls ``muse::selective_scan``,
  or ``muse::selective_scan_with_state`` when ``return_last_state``.
- ``selective_scan_bidirectional``: both scans of a BiMamba block in one call
  (``muse::selective_scan_bidirectional``), the backward one reading its inputs back to front.

Kernels, by device:
- CPU: the C++ kernel in csrc/selective_scan.cpp, in the extension ``muse_infer._C`` that setup.py builds.
  Loading it defines the op's schema (TORCH_LIBRARY) and registers the CPU kernel.
- CUDA: ``muse_infer.ops.triton_scan``'s ``selective_scan_triton`` and
  ``selective_scan_triton_bidirectional``, registered here, imported on the first CUDA call.
- Meta / fake tensors: shape-only kernels registered here (torch.compile, torch.export).

Without the extension (a build with MUSE_SKIP_CPP_BUILD=1, or a failed build) the schema is defined here
instead, with the same text, and the CPU kernel is the reference: slow, but tracing and export still work,
and ``op_available("cpu")`` says False so that the scan choice "auto" (dispatch.py) calls the reference
directly.

The op has no backward. It refuses inputs that need gradients, pointing to the reference instead.
"""

from __future__ import annotations

import importlib
import logging

import torch

from .conv_reference import depthwise_conv_time_major_ref
from .inputs import ScanInputs, check_same_options
from .reference import selective_scan_bidirectional_ref, selective_scan_ref
from .winograd_reference import conv3x3_winograd_ref

logger = logging.getLogger(__name__)

# The same text as TORCH_LIBRARY(muse, m) in csrc/selective_scan.cpp; tests/test_scan_op.py checks it.
_ARGS = (
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
    "Tensor? delta_bias=None, bool delta_softplus=False)"
)
_BIDIRECTIONAL_ARGS = (
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
    "Tensor u_b, Tensor delta_b, Tensor A_b, Tensor B_b, Tensor C_b, Tensor? D_b, Tensor? z_b, "
    "Tensor? delta_bias_b, bool delta_softplus=False)"
)
SCHEMAS = {
    "selective_scan": f"{_ARGS} -> Tensor",
    "selective_scan_with_state": f"{_ARGS} -> (Tensor, Tensor)",
    "selective_scan_bidirectional": f"{_BIDIRECTIONAL_ARGS} -> Tensor",
}
# BiMamba's conv (ops/conv.py); the same text as TORCH_LIBRARY_FRAGMENT in csrc/depthwise_conv.cpp.
CONV_SCHEMA = "(Tensor x, Tensor weight, Tensor? bias=None, bool reverse=False, bool silu=False) -> Tensor"
CONV_NO_BACKWARD_MESSAGE = (
    "muse::depthwise_conv_time_major has no backward; muse_infer.ops.conv.depthwise_conv_time_major "
    "takes depthwise_conv_time_major_ref (torch ops) by itself when gradients are needed."
)
# The pyramid's 3x3 convolutions (ops/winograd.py); the same text as in csrc/winograd_conv.cpp.
WINOGRAD_SCHEMA = "(Tensor x, Tensor U, Tensor? bias=None) -> Tensor"
WINOGRAD_NO_BACKWARD_MESSAGE = (
    "muse::conv3x3_winograd has no backward; the pyramid runs its nn.Conv2d modules when gradients "
    "are needed (ops.winograd.winograd_applies)."
)
NO_BACKWARD_MESSAGE = (
    'muse::selective_scan has no backward. For training use the scan choice "auto" (the default; '
    'model.set_scan("auto")), which picks the differentiable selective_scan_chunked whenever gradients '
    'are needed, or "chunked" / "ref", or call muse_infer.ops.chunked.selective_scan_chunked / '
    "selective_scan_ref directly."
)


def _load_cpu_library():
    """The extension module ``muse_infer._C``, or None when it was not built."""
    try:
        return importlib.import_module("muse_infer._C")
    except (ImportError, OSError) as error:  # OSError: built against another torch (undefined symbols)
        logger.debug("muse_infer._C not loaded (%s); the CPU op falls back to selective_scan_ref", error)
        return None


_cpu_library = _load_cpu_library()

if _cpu_library is None:
    for _name, _schema in SCHEMAS.items():
        torch.library.define(f"muse::{_name}", _schema)
    torch.library.define("muse::depthwise_conv_time_major", CONV_SCHEMA)
    torch.library.define("muse::conv3x3_winograd", WINOGRAD_SCHEMA)

    @torch.library.register_kernel("muse::conv3x3_winograd", "cpu")
    def _winograd_cpu_fallback(x, U, bias=None):
        return conv3x3_winograd_ref(x, U, bias)

    @torch.library.register_kernel("muse::depthwise_conv_time_major", "cpu")
    def _conv_cpu_fallback(x, weight, bias=None, reverse=False, silu=False):
        return depthwise_conv_time_major_ref(x, weight, bias, reverse, silu).contiguous()

    # Why register the reference at all: traced/exported graphs that contain the op still run on CPU.
    @torch.library.register_kernel("muse::selective_scan", "cpu")
    def _scan_cpu_fallback(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus).contiguous()

    @torch.library.register_kernel("muse::selective_scan_with_state", "cpu")
    def _scan_with_state_cpu_fallback(
        u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False
    ):
        y, state = selective_scan_ref(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=True
        )
        return y.contiguous(), state.contiguous()

    @torch.library.register_kernel("muse::selective_scan_bidirectional", "cpu")
    def _scan_bidirectional_cpu_fallback(*args, delta_softplus=False):
        # The dispatcher drops a trailing argument equal to its default: delta_softplus may be absent.
        forward, backward, rest = args[:8], args[8:16], args[16:]
        return selective_scan_bidirectional_ref(
            forward, backward, rest[0] if rest else delta_softplus
        ).contiguous()


@torch.library.register_fake("muse::depthwise_conv_time_major")
def _conv_fake(x, weight, bias=None, reverse=False, silu=False):
    return x.new_empty(x.shape)  # (B, L, Di) contiguous, like the kernel's output


@torch.library.register_fake("muse::conv3x3_winograd")
def _winograd_fake(x, U, bias=None):
    return x.new_empty((*x.shape[:3], U.shape[2]))  # (N, H, W, Co) contiguous, like the kernel's output


@torch.library.register_fake("muse::selective_scan")
def _scan_fake(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    return u.new_empty(u.shape)  # (batch, Di, L), contiguous like the real kernels' output


@torch.library.register_fake("muse::selective_scan_with_state")
def _scan_with_state_fake(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    return u.new_empty(u.shape), u.new_empty(u.shape[0], u.shape[1], A.shape[1])  # y, state (batch, Di, N)


@torch.library.register_fake("muse::selective_scan_bidirectional")
def _scan_bidirectional_fake(u, *args):
    return u.new_empty(u.shape)


@torch.library.register_kernel("muse::selective_scan", "cuda")
def _scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    from .triton_scan import selective_scan_triton  # imports Triton: only when a CUDA scan runs

    return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus).contiguous()


@torch.library.register_kernel("muse::selective_scan_with_state", "cuda")
def _scan_with_state_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    from .triton_scan import selective_scan_triton

    y, state = selective_scan_triton(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=True
    )
    return y.contiguous(), state.contiguous()


@torch.library.register_kernel("muse::selective_scan_bidirectional", "cuda")
def _scan_bidirectional_cuda(*args, delta_softplus=False):
    from .triton_scan import selective_scan_triton_bidirectional

    # The dispatcher drops a trailing argument equal to its default: delta_softplus may be absent.
    forward, backward, rest = ScanInputs(*args[:8]), ScanInputs(*args[8:16]), args[16:]
    return selective_scan_triton_bidirectional(
        forward, backward, rest[0] if rest else delta_softplus
    ).contiguous()


def _refuse_backward(ctx, *grads):
    raise RuntimeError(NO_BACKWARD_MESSAGE)


def _refuse_grad(ctx, inputs, output):
    # Runs in the forward pass as soon as an input requires grad (with grad mode on), so the error comes
    # before any graph is built, not at .backward().
    raise RuntimeError(NO_BACKWARD_MESSAGE)


for _name in SCHEMAS:
    torch.library.register_autograd(f"muse::{_name}", _refuse_backward, setup_context=_refuse_grad)


def _refuse_conv_backward(ctx, *grads):
    raise RuntimeError(CONV_NO_BACKWARD_MESSAGE)


def _refuse_conv_grad(ctx, inputs, output):
    raise RuntimeError(CONV_NO_BACKWARD_MESSAGE)


torch.library.register_autograd(
    "muse::depthwise_conv_time_major", _refuse_conv_backward, setup_context=_refuse_conv_grad
)


def _refuse_winograd_backward(ctx, *grads):
    raise RuntimeError(WINOGRAD_NO_BACKWARD_MESSAGE)


def _refuse_winograd_grad(ctx, inputs, output):
    raise RuntimeError(WINOGRAD_NO_BACKWARD_MESSAGE)


torch.library.register_autograd(
    "muse::conv3x3_winograd", _refuse_winograd_backward, setup_context=_refuse_winograd_grad
)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """Selective scan through ``torch.ops.muse.selective_scan``; same arguments and math as selective_scan_ref.

    Shapes: u, delta, z (batch, Di, L); A (Di, N); B, C (batch, N, L) or (batch, groups, N, L);
    D, delta_bias (Di,). Inputs float32, float16 or bfloat16; computed in float32.
    Returns y (batch, Di, L) in u's dtype, or (y, last_state (batch, Di, N)) when ``return_last_state``.
    Inference only: raises RuntimeError when an input requires grad and grad mode is on.
    """
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        raise RuntimeError(NO_BACKWARD_MESSAGE)  # before the kernel runs, not after
    if return_last_state:
        return torch.ops.muse.selective_scan_with_state(*args)
    return torch.ops.muse.selective_scan(*args)


def selective_scan_bidirectional(forward, backward, delta_softplus: bool = False) -> torch.Tensor:
    """Both scans of a BiMamba block through ``torch.ops.muse.selective_scan_bidirectional``.

    ``forward`` and ``backward``: each a ``ScanInputs`` (or a sequence (u, delta, A, B, C[, D, z,
    delta_bias])) with the shapes of ``selective_scan``, every tensor in natural time order.
    Returns y (batch, Di, L) in forward u's dtype, equal up to fp32 rounding to
    ``selective_scan_bidirectional_ref(forward, backward, delta_softplus)``: the backward scan runs
    from step L-1 down to 0 and each of its outputs lands at its own step, with no flipped copies.
    D, z and delta_bias go in both directions or in neither. Inference only, like ``selective_scan``.
    """
    forward, backward = ScanInputs.of(forward), ScanInputs.of(backward)
    args = (*forward, *backward, delta_softplus)
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        raise RuntimeError(NO_BACKWARD_MESSAGE)
    check_same_options(forward, backward)
    return torch.ops.muse.selective_scan_bidirectional(*args)


def op_available(device_type: str) -> bool:
    """Whether ``muse::selective_scan`` has a fast kernel for this device type ("cpu", "cuda", ...)."""
    if device_type == "cpu":
        return _cpu_library is not None
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            importlib.import_module("triton")
        except ImportError:
            return False
        return True
    return False


def cpu_kernel_isa() -> str | None:
    """Instruction set of the C++ kernel's next CPU call ("avx512", "avx2", "baseline"), or None unbuilt."""
    return _cpu_library.cpu_isa() if _cpu_library is not None else None
