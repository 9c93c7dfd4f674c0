"""BiMamba's depthwise conv over time on time-major (B, L, Di) activations, and its SiLU.

- ``depthwise_conv_time_major_ref``: the formulation in torch ops (K multiply-adds on shifted slices),
  differentiable; the reference, and what gradients, tracers and exporters get.
- ``torch.ops.muse.depthwise_conv_time_major``: the same in one pass, the C++ kernel of
  csrc/depthwise_conv.cpp (CPU; fp32, and bf16 read and written as is). No backward. Its schema,
  fake kernel and fallback are registered with the scan ops (op.py).
- ``depthwise_conv_time_major``: the entry the model calls; the op where it applies
  (``conv_op_applies``), else the reference.

Both equal ``nn.Conv1d`` (groups = Di, padding K-1) on (B, Di, L), causal or, with ``reverse``,
anti-causal with the kernel flipped (the backward direction's conv read in natural order), up to float
rounding; tests/test_head_fast_paths.py checks them against it.
"""

from __future__ import annotations

import torch

from .conv_reference import depthwise_conv_time_major_ref
from .dispatch import graph_being_recorded

__all__ = ["depthwise_conv_time_major", "depthwise_conv_time_major_ref", "conv_op_applies"]

CONV_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def conv_op_applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether ``depthwise_conv_time_major`` runs the C++ op: CPU tensors of the op's dtypes, the
    extension built, no gradient needed, and no tracer or exporter recording (exported graphs keep the
    reference's standard ops, which every runtime knows)."""
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if any(t.device.type != "cpu" or t.dtype not in CONV_DTYPES for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if graph_being_recorded():
        return False
    from .op import op_available  # loads the C++ library: only when a conv runs

    return op_available("cpu")


def depthwise_conv_time_major(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, reverse: bool, silu: bool = False
) -> torch.Tensor:
    """``depthwise_conv_time_major_ref``'s result: x (B, L, Di), weight (Di, K), bias (Di,) or None ->
    (B, L, Di) in x's dtype, through the C++ op where ``conv_op_applies``, else the reference."""
    if conv_op_applies(x, weight, bias):
        return torch.ops.muse.depthwise_conv_time_major(x, weight, bias, reverse, silu)
    return depthwise_conv_time_major_ref(x, weight, bias, reverse, silu)
