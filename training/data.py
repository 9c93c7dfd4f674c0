"""Training and validation data: pairs -> cached frames + token ids, in a seeded, resumable order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from muse_infer.datasets import Pair, RetrievalSet, group_by_video
from muse_infer.video import FrameSettings

from .frames import fill_cache, normalise


@dataclass
class Batch:
    """frames (B, T, 3, S, S) float32, mask (B, T) int64, tokens (B, max_words) int64."""

    frames: torch.Tensor
    mask: torch.Tensor
    tokens: torch.Tensor


class PairData:
    """(video, caption) pairs whose videos are decoded once into the frame cache.

    Videos are read from their cache entries at each batch (memory-mapped ``.npy``) and normalised
    with the model's mean and std (``sampling``); captions are tokenised once by ``tokenizer`` (the
    model's: ``MuseModel.tokenizer``, texts -> (N, max_words) long). progress: a bar on stderr while
    missing frames are decoded.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        sampling: FrameSettings,
        cache_dir,
        tokenizer,
        workers: int | None = None,
        progress: bool = False,
    ):
        self.pairs, self.sampling = list(pairs), sampling
        self.entries = fill_cache([p.video for p in self.pairs], cache_dir, sampling, workers, progress)
        self.tokens = tokenizer([p.caption for p in self.pairs])  # (N, max_words)

    def __len__(self) -> int:
        return len(self.pairs)

    def videos_batch(self, videos: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, 3, S, S), mask (B, T) of the given videos (each must be in the cache)."""
        entries = [np.load(self.entries[v], mmap_mode="r") for v in videos]
        sampling = self.sampling
        frames, mask = normalise(entries, sampling.max_frames, sampling.mean, sampling.std)
        return torch.from_numpy(frames), torch.from_numpy(mask)

    def batch(self, indices: Sequence[int]) -> Batch:
        frames, mask = self.videos_batch([self.pairs[i].video for i in indices])
        return Batch(frames, mask, self.tokens[list(indices)])

    def retrieval_set(self) -> RetrievalSet:
        return group_by_video(self.pairs)


def epoch_order(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    """The example order of ``epoch``: a permutation that depends only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=generator)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full global batches in an epoch (the last partial batch is dropped, as CLIP4Clip's loader does)."""
    return num_examples // batch_size


def epoch_batches(
    num_examples: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> Iterator[list[int]]:
    """Indices of this rank's share of each global batch of ``epoch``: global batch b is
    order[b * batch_size : (b + 1) * batch_size], split into ``world_size`` equal contiguous parts."""
    order = epoch_order(num_examples, seed, epoch).tolist()
    local = batch_size // world_size
    for step in range(steps_per_epoch(num_examples, batch_size)):
        start = step * batch_size + rank * local
        yield order[start : start + local]
