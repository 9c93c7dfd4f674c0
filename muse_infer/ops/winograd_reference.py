"""The pyramid's 3x3 convolutions by Winograd's F(2x2, 3x3) in torch ops: ``winograd_weight`` (the
transformed weight the caller keeps) and ``conv3x3_winograd_ref``, the reference twin of
``muse::conv3x3_winograd`` and its fallback kernel. Why and where it runs: ops/winograd.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))  # F(2x2, 3x3)'s weight transform


def winograd_weight(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """weight (Co, Ci, 3, 3) -> U (16, Ci, Co) in ``dtype`` (default: the weight's), U[4a + b] the
    (a, b) entry of G w G^T for every channel pair, computed in float64 and rounded once."""
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ak,oikl,bl->abio", g, weight.detach().double(), g)  # (4, 4, Ci, Co)
    return u.reshape(16, weight.shape[1], weight.shape[0]).to(dtype or weight.dtype).contiguous()


def _input_transform(x: torch.Tensor) -> torch.Tensor:
    """x (N, H, W, C) -> V (16, T, C) in float32 (or float64): B^T d B of every 4x4 tile at stride 2."""
    n, height, width, channels = x.shape
    tiles_high, tiles_wide = (height + 1) // 2, (width + 1) // 2
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    padded = F.pad(wide, (0, 0, 1, 2 * tiles_wide + 1 - width, 1, 2 * tiles_high + 1 - height))
    rows = [padded[:, r : r + 2 * tiles_high : 2] for r in range(4)]  # (N, TH, 2 TW + 2, C) each
    v = []
    for row in (rows[0] - rows[2], rows[1] + rows[2], rows[2] - rows[1], rows[1] - rows[3]):
        d = [row[:, :, c : c + 2 * tiles_wide : 2] for c in range(4)]  # (N, TH, TW, C) each
        v += [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
    return torch.stack(v).reshape(16, n * tiles_high * tiles_wide, channels)


def _output_transform(
    m: torch.Tensor, shape: tuple[int, int, int], bias: torch.Tensor | None
) -> torch.Tensor:
    """M (16, T, Co) wide -> y (N, H, W, Co) wide: A^T M A of every tile, cropped, plus the bias."""
    n, height, width = shape
    tiles_high, tiles_wide = (height + 1) // 2, (width + 1) // 2
    m = m.reshape(4, 4, n, tiles_high, tiles_wide, -1)
    s = (m[0] + m[1] + m[2], m[1] - m[2] - m[3])  # A^T M: (4, N, TH, TW, Co) each
    y = torch.stack([torch.stack((r[0] + r[1] + r[2], r[1] - r[2] - r[3]), dim=3) for r in s], dim=2)
    y = y.reshape(n, 2 * tiles_high, 2 * tiles_wide, -1)[:, :height, :width]  # (N, TH, 2, TW, 2, Co) merged
    return y if bias is None else y + bias.to(y.dtype)


def conv3x3_winograd_ref(x: torch.Tensor, U: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The 3x3 convolution (stride 1, zero padding 1) of tokens x (N, H, W, Ci) with the weight whose
    ``winograd_weight`` is U (16, Ci, Co), plus bias (Co,): -> y (N, H, W, Co) contiguous in x's dtype.

    Equal to ``F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=1).permute(0, 2, 3, 1)`` up to
    rounding. Rounding points, as the op's: V rounded to x's dtype, M = V @ U in that dtype, the
    output transform and the bias in float32 (float64 for float64 x), y rounded once.
    """
    wide = torch.promote_types(x.dtype, torch.float32)
    v = _input_transform(x).to(x.dtype)
    m = torch.bmm(v, U).to(wide)
    return _output_transform(m, x.shape[:3], bias).to(x.dtype).contiguous()
