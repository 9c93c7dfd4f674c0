"""Runtimes: what runs the model under the SDK's encoders (numpy in, numpy out).

Every backend offers the same small interface (``Backend`` below), so ``VideoEncoder`` and
``TextEncoder`` do not care whether PyTorch, ONNX Runtime, TorchScript or torch.export computes the
numbers.

- ``torch_backend``: ``TorchBackend`` runs a ``MuseModel``;
- ``exported``: the ONNX, TorchScript and torch.export ("pt2") backends, which run an export directory;
- ``manifest``: the export manifest format (written by ``export/``, read here);
- ``devices``: device names ("auto", "cpu", "cuda:1") and batch sizes for a device;
- ``precision``: precision names ("auto", "fp32", "bf16", "fp16") and what "auto" means on a device.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from ..errors import BackendError
from .devices import resolve_device
from .precision import PRECISION_CHOICES, resolve_precision

__all__ = [
    "BACKENDS",
    "PRECISION_CHOICES",
    "Backend",
    "BackendError",
    "load_backend",
    "resolve_device",
    "resolve_precision",
]

BACKENDS = ("torch", "onnx", "torchscript", "pt2")


class Backend(Protocol):
    """The interface every backend implements."""

    name: str  # "torch", "onnx", ...
    identity: dict  # muse_infer.loading.identity.model_identity: which weights, not which backend
    source: dict  # load_backend arguments that load it again: {"model": name or absolute path, "clip_weights": ...}
    max_frames: int  # the model config's default number of frames a video
    framerate: float  # frames sampled a second of video
    slice_mode: str  # "uniform" | "head" | "tail": which samples to keep when there are too many
    image_size: int  # frames are (3, image_size, image_size)
    max_words: int  # text token length
    embed_dim: int  # C
    logit_scale: float  # similarity = exp(logit_scale) * cosine
    precision: str  # "fp32" | "bf16" | "fp16": what the model computes in (embeddings are float32)

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
    precision: str = "auto",
    compile_backbone: str = "off",
) -> Backend:
    """A backend running ``model`` (anything ``muse_infer.load_model`` accepts) on ``device``.

    precision: "fp32", "bf16", "fp16" or "auto" (torch: bf16 on a GPU, fp32 on the CPU; an export
    directory: the precision it was exported in, and any other is refused). compile_backbone: torch
    only, see ``TorchBackend``.
    """
    if backend not in BACKENDS:
        raise BackendError(f"backend {backend!r} is not one of {BACKENDS}")
    from .manifest import export_model_source, is_export_directory

    if backend != "torch":
        from .exported import load_export_backend

        return load_export_backend(model, backend, device, precision)  # an export directory
    if is_export_directory(model):  # torch runs the model an export was made from
        source = export_model_source(model)
        model, clip_weights = source["model"], source.get("clip_weights")
    from .torch_backend import TorchBackend

    return TorchBackend.load(model, device, clip_weights, precision, compile_backbone)
