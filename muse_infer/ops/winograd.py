"""The pyramid's 3x3 convolutions (stride 1, zero padding 1) by Winograd's F(2x2, 3x3), on tokens.

- ``winograd_weight``: a Conv2d weight (Co, Ci, 3, 3) -> U = G w G^T as (16, Ci, Co), computed in
  float64 and rounded once; the caller keeps it (``MultiScaleGenerator`` does, per layer).
- ``conv3x3_winograd_ref``: the algorithm in torch ops, with the op's rounding points; the reference
  twin of the op, and what builds without the C++ library run (it and ``winograd_weight`` live in
  winograd_reference.py, which op.py imports for the fallback kernel).
- ``torch.ops.muse.conv3x3_winograd``: the same with the transforms in C++ (csrc/winograd_conv.cpp),
  one pass over the input and one over the output around ``torch.bmm``. No backward. Its schema, fake
  kernel and fallback are registered with the scan ops (op.py).
- ``winograd_applies``: where the model takes it instead of the module.

Why: each 2x2 block of outputs costs 16 multiplications a channel pair instead of 36 (2.25x fewer),
as 16 matmuls (tiles, Ci) x (Ci, Co). In bfloat16 those matmuls run at the speed of oneDNN's direct
convolution, so the pyramid's largest layer (12 frames of 14x14, 512 -> 512) takes ~0.6 of the time
(docs/benchmarks.md, "The MUSE head"). The price is rounding: V and M are rounded to bfloat16 where a
direct convolution rounds only its output, about twice the error of the module on one layer, invisible
in the embeddings (tests/test_head_fast_paths.py measures both). In float32 the matmuls are MKL's:
on an Intel CPU with AVX-512 they run at the core's peak and the op takes 0.6 of the module's time
(14x14: 38 ms against 64); on an AMD CPU, where MKL does not use AVX-512, it was slower than oneDNN's
convolution (55 ms against 48), so there float32 keeps the module (``winograd_dtypes``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..cpu import CPUINFO, cpu_description
from .dispatch import graph_being_recorded
from .winograd_reference import conv3x3_winograd_ref, winograd_weight

__all__ = [
    "WINOGRAD_DTYPES",
    "conv3x3_winograd_ref",
    "winograd_applies",
    "winograd_dtypes",
    "winograd_weight",
]

WINOGRAD_DTYPES = (torch.bfloat16,)  # where it is faster than the module on any x86 CPU (see above)
WINOGRAD_DTYPES_INTEL_AVX512 = (torch.bfloat16, torch.float32)  # MKL's float32 matmuls use AVX-512 there


def winograd_dtypes(cpuinfo: str = CPUINFO) -> tuple[torch.dtype, ...]:
    """The dtypes the op is taken in on this CPU: bfloat16 everywhere, float32 too on an Intel CPU with
    AVX-512 (``muse_infer.cpu``: ``cpuinfo``'s vendor and flags; where there is no such file, bfloat16
    alone)."""
    vendor, flags = cpu_description(cpuinfo)
    intel_avx512 = vendor == "GenuineIntel" and "avx512f" in flags and torch.backends.mkl.is_available()
    return WINOGRAD_DTYPES_INTEL_AVX512 if intel_avx512 else WINOGRAD_DTYPES


def winograd_applies(conv: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``conv`` on tokens x runs as ``torch.ops.muse.conv3x3_winograd``: a Conv2d 3x3, stride 1,
    zero padding 1, no dilation or groups; x and the weight of a dtype of ``winograd_dtypes`` on the CPU, the
    extension built; no gradient needed; weights that track versions (the transformed weight is kept
    until the weight changes; inference tensors have no version); no tracer or exporter recording."""
    if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or conv.groups != 1:
        return False
    if (conv.kernel_size, conv.stride, conv.padding, conv.dilation) != ((3, 3), (1, 1), (1, 1), (1, 1)):
        return False
    weight = conv.weight
    if x.device.type != "cpu" or x.dtype not in winograd_dtypes() or weight.dtype != x.dtype or x.dim() != 4:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    if weight.is_inference() or graph_being_recorded():
        return False
    from .op import op_available  # loads the C++ library: only when a convolution runs

    return op_available("cpu")
