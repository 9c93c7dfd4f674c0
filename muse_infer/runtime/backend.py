"""``Backend``: what runs the model under the SDK's encoders (numpy in, numpy out), with defaults.

Every backend (``torch_backend.TorchBackend``, the export backends of ``exported``) derives from it
and sets the model's facts; the encoders use only what is declared here, never probe for more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import DEFAULT_PREPROCESS


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
    # frames' mean, std, resize_mode, interpolation (the model's open_clip preprocessing; CLIP4Clip's here)
    preprocess: dict = dict(DEFAULT_PREPROCESS)
    text_only: bool = False  # loaded for queries: no video tower (``ModelSpec.load(text_only=True)``)

    @property
    def asynchronous(self) -> bool:
        """True when ``submit_clips`` returns before the model has run (a CUDA device): the encoders
        then queue the next batch before collecting this one."""
        return False

    def encode_video(self, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """frames (B, T, 3, H, W) float32 normalised (``preprocess``), mask (B, T) -> (B, C) float32, L2-normalised."""
        raise NotImplementedError

    def encode_text_tokens(self, token_ids: np.ndarray) -> np.ndarray:
        """token_ids (N, max_words) int64 -> (N, C) float32, L2-normalised."""
        raise NotImplementedError

    def tokenize(self, texts: list[str]) -> np.ndarray:
        """texts -> token ids (N, max_words) int64 as the model's tokenizer makes them (by default
        CLIP's BPE, CLIP4Clip's layout: ``muse_infer.tokenizer``)."""
        from ..tokenizer import tokenize

        return tokenize(texts, self.max_words).numpy()

    def submit_clips(self, clips: Sequence[np.ndarray], max_frames: int):
        """Start embedding uint8 clips, each (t_i, S, S, 3) with 1 <= t_i <= max_frames; returns an
        object whose ``result()`` is (B, C) float32. By default: normalised here, computed at once."""
        from ..video.frames import clip_inputs

        mean, std = self.preprocess["mean"], self.preprocess["std"]
        return ReadyEmbeddings(self.encode_video(*clip_inputs(list(clips), max_frames, mean, std)))


class ReadyEmbeddings:
    """Embeddings already computed, with the ``result()`` of a pending computation."""

    def __init__(self, embeddings: np.ndarray):
        self.embeddings = embeddings

    def result(self) -> np.ndarray:
        return self.embeddings
