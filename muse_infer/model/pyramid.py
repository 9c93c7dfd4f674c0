"""The multi-scale generator: one branch per scale factor, turning a frame's patch grid into a map."""

from __future__ import annotations

import torch
from torch import nn


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over channels at each position of a (N, C, H, W) map, computed in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.permute(0, 2, 3, 1).float())
        return y.to(x.dtype).permute(0, 3, 1, 2)


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


class MultiScaleGenerator(nn.Module):
    """Patch grid -> one feature map per scale factor (the paper's multi-scale feature pyramid)."""

    def __init__(self, width: int, scales: tuple[float, ...]):
        super().__init__()
        self.scales = tuple(scales)
        self.branches = nn.ModuleList(scale_branch(s, width) for s in self.scales)

    def forward(self, patches: torch.Tensor) -> list[torch.Tensor]:
        """patches (N, C, G, G) -> [(N, C, g_s, g_s) for each scale s]."""
        return [branch(patches) for branch in self.branches]
