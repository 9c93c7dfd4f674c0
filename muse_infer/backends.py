"""Backends: what runs the model under the SDK's encoders (numpy in, numpy out).

Every backend offers the same small interface (``Backend`` below), so ``VideoEncoder`` and
``TextEncoder`` do not care whether PyTorch, ONNX Runtime or TorchScript computes the numbers.
``TorchBackend`` runs a ``MuseModel``; the ONNX, TorchScript and torch.export ("pt2") backends, which
run an export directory, plug into ``load_backend``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

BACKENDS = ("torch", "onnx", "torchscript", "pt2")


class BackendError(ValueError):
    """A backend or device that cannot be used; the message says what to do instead."""


class Backend(Protocol):
    """The interface every backend implements."""

    name: str  # "torch", "onnx", ...
    identity: dict  # muse_infer.identity.model_identity: which weights, not which backend
    source: dict  # load_backend arguments that load it again: {"model": name or absolute path, "clip_weights": ...}
    max_frames: int  # the model config's default number of frames a video
    framerate: float  # frames sampled a second of video
    slice_mode: str  # "uniform" | "head" | "tail": which samples to keep when there are too many
    image_size: int  # frames are (3, image_size, image_size)
    max_words: int  # text token length
    embed_dim: int  # C
    logit_scale: float  # similarity = exp(logit_scale) * cosine

    def encode_video(self, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """frames (B, T, 3, H, W) float32 CLIP-normalised, mask (B, T) int64 -> (B, C) float32, L2-normalised."""
        ...

    def encode_text_tokens(self, token_ids: np.ndarray) -> np.ndarray:
        """token_ids (N, max_words) int64 -> (N, C) float32, L2-normalised."""
        ...


def load_backend(
    model: str | os.PathLike,
    backend: str = "torch",
    device: str = "cpu",
    clip_weights: str | os.PathLike | None = None,
) -> Backend:
    """A backend running ``model`` (anything ``muse_infer.load_model`` accepts) on ``device``."""
    if backend not in BACKENDS:
        raise BackendError(f"backend {backend!r} is not one of {BACKENDS}")
    from .backends_export import export_model_source, is_export_directory, load_export_backend

    if backend != "torch":
        return load_export_backend(model, backend, device)  # an export directory (muse-infer export)
    if is_export_directory(model):  # torch runs the model an export was made from
        source = export_model_source(model)
        model, clip_weights = source["model"], source.get("clip_weights")
    return TorchBackend.load(model, device=device, clip_weights=clip_weights)


def resolve_device(device: str | None) -> str:
    """ "auto" -> "cuda" when a GPU is visible, else "cpu"; other names are checked, with clear errors."""
    import torch

    device = device or "auto"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise BackendError(
            f"device {device!r} is not a torch device name (e.g. cpu, cuda, cuda:1, auto)"
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} requested but no CUDA GPU is visible; use --device cpu")
    return str(parsed)


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
        from .checkpoint import CheckpointError
        from .config import ConfigError
        from .identity import model_identity
        from .loading import PretrainedWeightsError, load_model

        device = resolve_device(device)
        try:
            muse = load_model(model, device=device, clip_weights=clip_weights)
        except (CheckpointError, ConfigError, PretrainedWeightsError) as error:
            raise BackendError(f"cannot load model {str(model)!r}: {error}") from None
        source = {"model": _absolute_if_file(model), "clip_weights": None}
        if clip_weights is not None:
            source["clip_weights"] = _absolute_if_file(clip_weights)
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


def _absolute_if_file(name_or_path: str | os.PathLike) -> str:
    # Files are recorded by absolute path so that a command run from another folder finds them.
    return str(Path(name_or_path).resolve()) if Path(name_or_path).is_file() else str(name_or_path)
