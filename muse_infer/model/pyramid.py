"""The multi-scale generator: one branch per scale factor, turning a frame's patch grid into a map.

Two ways to run the same modules:
- ``MultiScaleGenerator.forward``: the branches as written (``nn.Sequential`` on (N, C, H, W) maps), the
  reference;
- ``MultiScaleGenerator.forward_tokens``: the model's path, on (N, H, W, C) grids of tokens, the layout
  the backbone gives and the blocks read, so no layout copy is made around the pyramid. Its layers run
  as ``layer_tokens`` says: ChannelLayerNorm as a plain LayerNorm over the last axis, every other layer
  (convolutions, pooling, GELU) as the module itself on a channels-last view of the tokens; except the
  3x3 convolutions in inference on the CPU in bfloat16 (and float32 on Intel CPUs with AVX-512), which
  run by Winograd's F(2x2, 3x3) (``ops.winograd``, where ``winograd_applies``), their transformed
  weights kept per layer.
tests/test_head_fast_paths.py checks the two against each other; docs/benchmarks.md ("The MUSE head") has the
measurements behind the choice.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.winograd import winograd_applies, winograd_weight


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over channels at each position of a (N, C, H, W) map, computed in fp32 (or float64)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The same on (N, H, W, C) tokens: (N, H, W, C) -> (N, H, W, C)."""
        return super().forward(x.to(torch.promote_types(x.dtype, torch.float32))).to(x.dtype)


def scale_branch(scale: float, width: int) -> nn.Sequential:
    """One branch, its layers indexed exactly as the authors' ``mamba_stages.{s}.{j}``.

    (N, C, G, G) -> (N, C, g, g) with g = floor(G * scale) for pooling and G * scale for upsampling.
    """
    if scale == 4.0:
        layers = [
            nn.ConvTranspose2d(width, width // 2, kernel_size=2, stride=2),
            ChannelLayerNorm(width // 2),
            nn.GELU(),
            nn.ConvTranspose2d(width // 2, width // 4, kernel_size=2, stride=2),
        ]
        branch_width = width // 4
    elif scale == 2.0:
        layers, branch_width = [nn.ConvTranspose2d(width, width // 2, kernel_size=2, stride=2)], width // 2
    elif scale == 1.0:
        layers, branch_width = [], width
    elif scale == 0.5:
        layers, branch_width = [nn.MaxPool2d(kernel_size=2, stride=2)], width
    elif scale == 0.25:
        layers, branch_width = [nn.MaxPool2d(kernel_size=4, stride=4)], width
    else:
        raise ValueError(f"scale factor {scale} is not supported")
    layers += [
        nn.Conv2d(branch_width, width, kernel_size=1),
        ChannelLayerNorm(width),
        nn.GELU(),
        nn.Conv2d(width, width, kernel_size=3, padding=1),
        ChannelLayerNorm(width),
    ]
    return nn.Sequential(*layers)


def scaled_grid(grid: int, scale: float) -> int:
    """Side of a branch's output map for an input grid of side ``grid``."""
    if scale < 1:
        return grid // round(1 / scale)
    return grid * round(scale)


def layer_tokens(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One layer of a branch on tokens: (N, H, W, C) -> (N, H', W', C'), equal to
    ``layer(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)`` up to float rounding.

    ChannelLayerNorm is a plain LayerNorm over the last axis here. Every other layer (convolutions,
    transposed convolution, pooling, GELU) runs as itself on the channels-last view of the tokens, which
    oneDNN's kernels read as is and answer in the same layout, so the permute back is free. Matmul forms
    of the 1x1 and stride == kernel convolutions were measured against this and kept no better
    (docs/benchmarks.md, "The MUSE head"; benchmarks/bench_pyramid_forms.py).
    """
    if isinstance(layer, ChannelLayerNorm):
        return layer.forward_tokens(x)
    return layer(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class MultiScaleGenerator(nn.Module):
    """Patch grid -> one feature map per scale factor (the paper's multi-scale feature pyramid)."""

    def __init__(self, width: int, scales: tuple[float, ...]):
        super().__init__()
        self.scales = tuple(scales)
        self.branches = nn.ModuleList(scale_branch(s, width) for s in self.scales)
        self._winograd = {}  # (branch, layer) -> (key, U): see winograd_weight

    def forward(self, patches: torch.Tensor) -> list[torch.Tensor]:
        """patches (N, C, G, G) -> [(N, C, g_s, g_s) for each scale s]: the reference path."""
        return [branch(patches) for branch in self.branches]

    def forward_tokens(self, grid: torch.Tensor) -> list[torch.Tensor]:
        """grid (N, G, G, C) tokens (any strides) -> [(N, g_s, g_s, C) contiguous for each scale s].

        The same maps as ``forward``, in token layout: ``forward(grid.permute(0, 3, 1, 2))[s]`` equals
        ``forward_tokens(grid)[s].permute(0, 3, 1, 2)`` up to float rounding.
        """
        grid = grid.contiguous()  # a view of the backbone's tokens, class tokens skipped: one small copy
        maps = []
        for b, branch in enumerate(self.branches):
            x = grid
            for j, layer in enumerate(branch):
                if winograd_applies(layer, x):
                    x = torch.ops.muse.conv3x3_winograd(x, self.winograd_weight(b, j), layer.bias)
                else:
                    x = layer_tokens(layer, x)
            maps.append(x.contiguous())
        return maps

    def winograd_weight(self, branch: int, layer: int) -> torch.Tensor:
        """``ops.winograd.winograd_weight`` of the 3x3 conv ``branches[branch][layer]`` (16, Ci, Co),
        kept until its weight is changed in place (version counter) or replaced (storage, dtype,
        device); not part of the state dict."""
        weight = self.branches[branch][layer].weight
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device)
        cached = self._winograd.get((branch, layer))  # one read: another thread may replace it meanwhile
        if cached is None or cached[0] != key:
            cached = self._winograd[(branch, layer)] = (key, winograd_weight(weight))
        return cached[1]
