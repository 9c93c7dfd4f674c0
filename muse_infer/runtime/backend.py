"""``Backend``: what runs the model under the SDK's encoders (numpy in, numpy out), with defaults.

Every backend (``torch_backend.TorchBackend``, the export backends of ``exported``) derives from it
and sets the model's facts; the encoders use only what is declared here, never probe for more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Backend:
    """The interface every backend implements, with defaults for what only some need."""

    name: str = "backend"  # "torch", "onnx", ...
    device: str = "cpu"  # where the model runs (a resolved name; "auto" for ONNX Runtime's choice)
    spec = None  # the runtime.spec.ModelSpec it was loaded from (None: built by hand)
    identity: dict  # muse_infer.loading.identity.model_identity: which weights, not which backend
    source: dict  # how to load it again: {"model": name or absolute path, "clip_weights": ...}
    max_frames: int  # the model config's default number of frames a video
    framerate: float  # frames sampled a second of video
    slice_mode: str  # "uniform" | "head" | "tail": which samples to keep when there are too many
    image_size: int  # frames are (3, image_size, image_size)
    max_words: int  # text token length
    embed_dim: int  # C
    logit_scale: float  # similarity = exp(logit_scale) * cosine
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16": what the model computes in (embeddings are float32)
    text_only: bool = False  # loaded for queries: no video tower (``ModelSpec.load(text_only=True)``)

    @property
    def asynchronous(self) -> bool:
        """True when ``submit_clips`` returns before the model has run (a CUDA device): the encoders
        then queue the next batch before collecting this one."""
        return False

    def encode_video(self, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """frames (B, T, 3, H, W) float32 CLIP-normalised, mask (B, T) -> (B, C) float32, L2-normalised."""
        raise NotImplementedError

    def encode_text_tokens(self, token_ids: np.ndarray) -> np.ndarray:
        """token_ids (N, max_words) int64 -> (N, C) float32, L2-normalised."""
        raise NotImplementedError

    def submit_clips(self, clips: Sequence[np.ndarray], max_frames: int):
        """Start embedding uint8 clips, each (t_i, S, S, 3) with 1 <= t_i <= max_frames; returns an
        object whose ``result()`` is (B, C) float32. By default: normalised here, computed at once."""
        from ..video.frames import clip_inputs

        return ReadyEmbeddings(self.encode_video(*clip_inputs(list(clips), max_frames)))


class ReadyEmbeddings:
    """Embeddings already computed, with the ``result()`` of a pending computation."""

    def __init__(self, embeddings: np.ndarray):
        self.embeddings = embeddings

    def result(self) -> np.ndarray:
        return self.embeddings
