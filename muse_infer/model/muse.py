"""The MUSE model: CLIP tokens -> multi-scale pyramid -> ResMamba blocks -> pooled video embedding.

With ``num_blocks == 0`` the same model is CLIP4Clip's meanP baseline (the frames' class tokens,
normalised and mean-pooled): one code path, two configurations.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import MuseConfig
from ..ops import default_scan
from ..ops.dispatch import check_scan_choice, graph_being_recorded
from ..tokenizer import text_tokenizer
from .aggregation import aggregate, class_token_slice
from .backbone import ClipBackbone, build_clip
from .bimamba import ResMambaBlock, set_scan
from .pyramid import MultiScaleGenerator, scaled_grid


class MuseModel(nn.Module):
    """Video and text towers of MUSE. State-dict keys: ``backbone.clip.*`` (OpenAI CLIP layout),
    ``pyramid.branches.{s}.{j}.*``, ``blocks.{i}.*``.

    ``scan``: the blocks' selective-scan implementation, one of ``muse_infer.ops.SCAN_CHOICES``
    (None: ``ops.default_scan()``, i.e. "auto" unless MUSE_SCAN overrode it); see ``set_scan``.
    ``text_files``: the folder of the text tower's Hugging Face files (its tokenizer, and for a Hugging
    Face text tower its config.json; ``muse_infer.tokenizer``), None: the Hugging Face cache, if needed.
    """

    def __init__(
        self,
        config: MuseConfig,
        clip: nn.Module | None = None,
        scan: str | None = None,
        text_files: str | None = None,
    ):
        super().__init__()
        self.config = config
        self.text_files = text_files
        self._scan = default_scan() if scan is None else check_scan_choice(scan)
        clip = clip if clip is not None else build_clip(config.clip, text_files)
        self.backbone = ClipBackbone(clip, need_tokens=not config.is_mean_pooling)
        width = config.embed_dim
        self.pyramid = None if config.is_mean_pooling else MultiScaleGenerator(width, config.scales)
        drop_rates = np.linspace(0, config.max_drop_rate, config.num_blocks) if config.num_blocks else []
        self.blocks = nn.ModuleList(
            ResMambaBlock(width, float(rate), config.d_state, config.d_conv, config.expand, self._scan)
            for rate in drop_rates
        )

    @property
    def scan_impl(self) -> str:
        """The blocks' scan choice ("auto", "op", "ref", "chunked" or "script")."""
        return self._scan

    def set_scan(self, choice: str) -> str:
        """Run every block's selective scans through ``choice`` (``ops.SCAN_CHOICES``); returns the
        previous choice, so that ``model.set_scan(previous)`` restores it.

        "auto": the fused C++/Triton op when a kernel exists for the device and dtype and no gradient
        is needed, the chunked scan when gradients are, else the reference. "op", "ref", "chunked",
        "script" force one (muse_infer/ops/dispatch.py).
        """
        choice = check_scan_choice(choice)
        previous, self._scan = self._scan, choice
        set_scan(self, choice)
        return previous

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.backbone.clip.logit_scale

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the video tower computes in: its image tower's weights' dtype."""
        return self.backbone.compute_dtype

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, T, 3, H, W) -> per-frame features (B, T, C) at the frame-token positions (the
        image tower's pooled embedding: ``model.backbone``).

        On the CPU outside a tracer, one video a call (``videos_per_call``), its frames through the
        image tower in chunks of at most ``frames_per_image_call``; elsewhere the whole batch at once.
        """
        per_call = videos_per_call(frames)
        if per_call >= frames.shape[0]:
            return self._video_features(frames)
        return torch.cat([self._video_features(part) for part in frames.split(per_call)])

    def _video_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``frame_features`` of one group of videos: (B, T, 3, H, W) -> (B, T, C)."""
        batch, length = frames.shape[:2]
        images = frames.flatten(0, 1)  # (B*T, 3, H, W)
        if self.pyramid is None:  # meanP: each frame's encode_image
            return self._image_tower(self.backbone.image_features, images).unflatten(0, (batch, length))
        tokens = self._image_tower(self.backbone.image_tokens, images)  # (B*T, 1 + G*G, C)
        return self.head_features(tokens.unflatten(0, (batch, length)))  # reads (B, T, 1 + G*G, C)

    def _image_tower(self, tower, images: torch.Tensor) -> torch.Tensor:
        """``tower`` (the backbone's ``image_features`` or ``image_tokens``) over images (N, 3, H, W),
        in chunks of ``frames_per_image_call`` frames; the results concatenated along N."""
        step = frames_per_image_call(images, self.backbone.grid_size)
        if step >= images.shape[0]:
            return tower(images)
        return torch.cat([tower(chunk) for chunk in images.split(step)])

    def head_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The MUSE head: tokens (B, T, 1 + G*G, C) -> features (B, T, C) at the class-token positions
        of the last block's output (pyramid, aggregation, blocks)."""
        batch, length, _, width = tokens.shape
        grid = self.backbone.grid_size
        patches = tokens[:, :, 1:].reshape(batch * length, grid, grid, width)  # (B*T, G, G, C)
        # Token layout throughout: the pyramid reads and writes (N, g, g, C) grids, so each scale's
        # tokens are a view, and the sequence below is the blocks' (B, S, C) with one copy (the cat).
        scale_tokens = [
            m.reshape(batch, length, -1, width)  # (B, T, g*g, C)
            for m in self.pyramid.forward_tokens(patches)
        ]
        sequence = aggregate(tokens[:, :, 0], scale_tokens, self.config.aggregation)  # (B, S, C)
        per_frame = sum(scaled_grid(grid, s) ** 2 for s in self.config.scales)
        class_tokens = class_token_slice(self.config.aggregation, length, per_frame)
        if not self.blocks:
            return sequence[:, class_tokens]
        for block in self.blocks[:-1]:
            sequence = block(sequence)
        # Only the class tokens of the last block's output are read: it computes those rows alone.
        return self.blocks[-1].forward_rows(sequence, class_tokens)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames (B, T, 3, H, W) preprocessed, padded frames zero; mask (B, T), 1 = real frame.

        Returns L2-normalised video embeddings (B, C) float32. As the authors do, padded frames run
        through the head unmasked; only the final pooling ignores them. Frames of any float dtype are
        cast to the weights' dtype (``compute_dtype``: bf16 after ``model.precision.cast_for_inference``);
        the pooling and both normalisations are computed in float32 whatever that dtype.
        """
        features = self.frame_features(frames.to(self.compute_dtype))
        return masked_mean_pool(features.float(), mask)

    def encode_text_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids (N, L) long -> L2-normalised text embeddings (N, C) float32 (normalised in float32)."""
        return F.normalize(self.backbone.text_features(token_ids).float(), dim=-1)

    def encode_text(self, texts: list[str] | str) -> torch.Tensor:
        """texts -> L2-normalised text embeddings (N, C), tokenised by the model's tokenizer (CLIP's BPE
        as CLIP4Clip does, or the tower's Hugging Face tokenizer: ``muse_infer.tokenizer``)."""
        device = self.logit_scale.device
        return self.encode_text_tokens(self.tokenizer(texts).to(device))

    @property
    def tokenizer(self):
        """The text tokenizer of this model (``tokenizer.text_tokenizer``), made on first use."""
        if getattr(self, "_tokenizer", None) is None:
            self._tokenizer = text_tokenizer(self.config, self.text_files)
        return self._tokenizer

    def similarity(self, text_embeddings: torch.Tensor, video_embeddings: torch.Tensor) -> torch.Tensor:
        """(N, C), (M, C) normalised -> logits (N, M) = logit_scale.exp() * cosine."""
        return self.logit_scale.exp() * text_embeddings @ video_embeddings.t()


def videos_per_call(frames: torch.Tensor) -> int:
    """How many videos of ``frames`` (B, ...) the video tower takes in one call: all of them, except on
    the CPU outside a tracer or compiler, where it takes one at a time (image tower and head).

    Why one on the CPU: each video is independent, and a whole batch's activations are hundreds of MB
    (batch 8: 50 MB a (B, S, C) tensor in the head, a dozen a block; 29 MB for one MLP activation of
    CLIP's 96 frames in bf16). Allocations that large bypass the C allocator's reusable heap, and every
    fresh one page-faults its memory in again: measured here, a copy of 50 MB took 38 ms against 8 x
    0.6 ms for 6 MB pieces; and they leave the caches. One video's tensors are reused from call to
    call. ViT-B-32, batch 8, against the image tower over the whole batch's frames
    (docs/benchmarks.md): 1.21x the throughput in bf16 and 0.98-1.09x in fp32 on one thread (meanP:
    1.35x and 1.14x), 1.16x and 1.10x on two; ViT-B-16 bf16 1.22x.
    Accelerators keep the batch (their allocators cache; they need the parallel work). Traced or
    exported graphs keep the batch dimension dynamic, so they see no loop.
    """
    if frames.device.type != "cpu" or graph_being_recorded():
        return frames.shape[0]
    return 1


# The most tokens (frames x tokens a frame) the image tower takes in one call on the CPU: past that its
# activations leave the caches. Per frame, one thread, ms by frames a call (benchmarks/bench_image_chunks.py,
# docs/results/image_chunks_2026-12-08_*.json): ViT-B-32 (50 tokens a frame) bf16 6: 20.0, 12: 17.1,
# 24: 17.8, 48: 24.0, 96: 23.6; fp32 6: 69.2, 12: 70.1, 24: 69.5, 48: 67.7, 96: 77.1; ViT-B-16 (197)
# bf16 6: 72.1, 12: 71.2, 24: 93.8, 48: 129.6. 1200 tokens: 24 frames of ViT-B-32, 6 of ViT-B-16.
IMAGE_TOKENS_PER_CPU_CALL = 1200


def frames_per_image_call(images: torch.Tensor, grid_size: int) -> int:
    """How many of ``images`` (N, 3, H, W) the image tower takes in one call: on the CPU outside a
    tracer or compiler, as many as fit ``IMAGE_TOKENS_PER_CPU_CALL`` (at least one; ViT-B-32: 24,
    ViT-B-16: 6), else all of them."""
    if images.device.type != "cpu" or graph_being_recorded():
        return images.shape[0]
    return max(1, IMAGE_TOKENS_PER_CPU_CALL // (grid_size * grid_size + 1))


def masked_mean_pool(frame_features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C), mask (B, T) -> (B, C): normalise frames, average the real ones, normalise again."""
    features = F.normalize(frame_features, dim=-1)
    weights = mask.to(features.dtype).unsqueeze(-1)  # (B, T, 1)
    count = weights.sum(dim=1).clamp(min=1.0)  # a video with no real frame keeps a zero sum
    return F.normalize((features * weights).sum(dim=1) / count, dim=-1)
