"""The reference of BiMamba's depthwise conv on time-major rows, in torch ops: the spec the C++ op
(``muse::depthwise_conv_time_major``) is tested against, its fallback kernel, and the path taken with
gradients or inside exported graphs (``ops.conv`` chooses)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def depthwise_conv_time_major_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, reverse: bool, silu: bool = False
) -> torch.Tensor:
    """Depthwise conv over time of time-major x: (B, L, Di) any strides -> (B, L, Di) in x's dtype.

    weight (Di, K), bias (Di,) or None. Causal: y[t] = bias + sum_k weight[:, k] x[t - (K-1) + k];
    ``reverse``: anti-causal with the kernel flipped, y[t] = bias + sum_j weight[:, K-1-j] x[t + j]
    (steps outside [0, L) count as zero); then y * sigmoid(y) when ``silu``. Both directions start
    from the tap weight[:, K-1] on x itself, then add each other tap on a shifted slice: K passes over
    (B, L, Di) rows, vectorised over channels, with no padded copy and no transposition. Accumulated in
    float32 for half-precision x, as the conv kernels do. The result is contiguous unless x is a dense
    tensor in another order (its order is kept).
    """
    length, taps = x.shape[1], weight.shape[-1]
    acc_dtype = torch.promote_types(x.dtype, torch.float32)
    xa, weight = x.to(acc_dtype), weight.to(acc_dtype)  # no copy for float32 x
    last = weight[:, taps - 1]
    y = xa * last if bias is None else torch.addcmul(bias.to(acc_dtype), xa, last)
    for shift in range(1, min(taps, length)):
        if reverse:  # y[t] += weight[K-1-shift] x[t + shift]
            y[:, : length - shift].addcmul_(xa[:, shift:], weight[:, taps - 1 - shift])
        else:  # y[t] += weight[K-1-shift] x[t - shift]
            y[:, shift:].addcmul_(xa[:, : length - shift], weight[:, taps - 1 - shift])
    return (F.silu(y) if silu else y).to(x.dtype)
