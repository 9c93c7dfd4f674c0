"""Ordering class tokens and multi-scale tokens into the one sequence the Mamba blocks read."""

from __future__ import annotations

import torch


def aggregate(cls_tokens: torch.Tensor, scale_tokens: list[torch.Tensor], mode: str) -> torch.Tensor:
    """Build the sequence (B, S, C).

    cls_tokens: (B, T, C); scale_tokens: one (B, T, g*g, C) per scale, coarse to fine.
    - scale_wise: [cls of frames 1..T], then per scale: frame 1's tokens, frame 2's, ...
      S = T + T * sum(g*g)   (3060 for T=12 and grids 3, 7, 14)
    - frame_wise: per frame: its class token, then its tokens of every scale. Same S.
    - spatial_wise: [cls of frames 1..T], then per scale its tokens averaged over time. S = T + sum(g*g).
    """
    batch, frames, width = cls_tokens.shape
    if mode == "scale_wise":
        return torch.cat([cls_tokens] + [t.reshape(batch, -1, width) for t in scale_tokens], dim=1)
    if mode == "frame_wise":
        per_frame = torch.cat([cls_tokens.unsqueeze(2)] + list(scale_tokens), dim=2)  # (B, T, 1+sum, C)
        return per_frame.reshape(batch, -1, width)
    if mode == "spatial_wise":
        return torch.cat([cls_tokens] + [t.mean(dim=1) for t in scale_tokens], dim=1)
    raise ValueError(f"unknown aggregation mode {mode!r}")


def class_token_positions(mode: str, frames: int, tokens_per_frame: int) -> list[int]:
    """Where the T class tokens sit in the aggregated sequence.

    tokens_per_frame: sum of g*g over scales (the multi-scale tokens of one frame).
    """
    if mode == "frame_wise":
        return [t * (1 + tokens_per_frame) for t in range(frames)]
    return list(range(frames))


def sequence_length(mode: str, frames: int, tokens_per_frame: int) -> int:
    """S for ``aggregate``'s output."""
    if mode == "spatial_wise":
        return frames + tokens_per_frame
    return frames * (1 + tokens_per_frame)


def class_token_slice(mode: str, frames: int, tokens_per_frame: int) -> slice:
    """``class_token_positions`` as a slice of the sequence axis (they are evenly spaced from 0).

    Why a slice: indexing a GPU tensor with a Python list copies the list to the device first, and that
    blocking copy waits for every kernel queued before it, which stalls a pipelined encoder.
    """
    positions = class_token_positions(mode, frames, tokens_per_frame)
    step = positions[1] - positions[0] if len(positions) > 1 else 1
    return slice(0, positions[-1] + 1, step)
