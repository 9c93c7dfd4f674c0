"""``TorchBackend``: a ``MuseModel`` run with PyTorch, behind the ``Backend`` interface."""

from __future__ import annotations

import os

import numpy as np

from ..errors import BackendError, CheckpointError, ConfigError, PretrainedWeightsError
from .devices import resolve_device


class TorchBackend:
    """A ``MuseModel`` run with PyTorch in inference mode."""

    name = "torch"

    def __init__(self, model, identity: dict, source: dict, device: str = "cpu"):
        config = model.config
        self.model, self.identity, self.source, self.device = model, identity, source, device
        self.max_frames, self.framerate, self.slice_mode = (
            config.max_frames,
            config.framerate,
            config.slice_mode,
        )
        self.image_size, self.max_words, self.embed_dim = (
            config.image_size,
            config.max_words,
            config.embed_dim,
        )
        self.logit_scale = float(model.logit_scale.detach().float().cpu())

    @classmethod
    def load(
        cls, model: str | os.PathLike, device: str = "cpu", clip_weights: str | os.PathLike | None = None
    ) -> TorchBackend:
        """Load ``model`` with ``muse_infer.load_model``; errors name the model and what to do."""
        from ..loading.identity import model_identity
        from ..loading.models import load_model
        from ..loading.reference import model_source

        device = resolve_device(device)
        try:
            muse = load_model(model, device=device, clip_weights=clip_weights)
        except (CheckpointError, ConfigError, PretrainedWeightsError) as error:
            raise BackendError(f"cannot load model {str(model)!r}: {error}") from None
        source = model_source(model, clip_weights)
        identity = model_identity(model, muse.config, clip_weights)
        return cls(muse, identity, source, device)

    def encode_video(self, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """frames (B, T, 3, H, W) float32, mask (B, T) -> (B, C) float32 L2-normalised."""
        import torch

        with torch.inference_mode():
            frames_t = torch.as_tensor(frames, dtype=torch.float32).to(self.device)
            mask_t = torch.as_tensor(mask, dtype=torch.long).to(self.device)
            return self.model.encode_video(frames_t, mask_t).float().cpu().numpy()

    def encode_text_tokens(self, token_ids: np.ndarray) -> np.ndarray:
        """token_ids (N, L) int64 -> (N, C) float32 L2-normalised."""
        import torch

        with torch.inference_mode():
            ids = torch.as_tensor(token_ids, dtype=torch.long).to(self.device)
            return self.model.encode_text_tokens(ids).float().cpu().numpy()
