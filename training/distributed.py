"""Several processes (torchrun): process-group setup and the gradient-preserving all-gather.

As CLIP4Clip does, every rank gathers all ranks' text and video embeddings and computes the loss over
the global batch; ``AllGather``'s backward hands each rank the gradient of its own rows. Since every
rank computes the same loss of all the features, DDP's average of the parameter gradients then equals
the gradient of that one loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place: rank, world size, local rank (GPU index), and whether dist is initialised."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1 in the environment); else one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or dist.is_initialized():
        if dist.is_initialized():
            return DistInfo(
                dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True
            )
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)


class AllGather(torch.autograd.Function):
    """(b, C) on each rank -> (world * b, C) on every rank, rank order; backward returns this rank's rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        start = ctx.rank * ctx.rows
        return grad_output[start : start + ctx.rows]


def gather_features(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """All ranks' rows (with gradients to this rank's) when distributed, else ``tensor`` itself."""
    if not info.initialised:
        return tensor
    return AllGather.apply(tensor)
