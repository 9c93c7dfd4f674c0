"""Runtimes: what runs the model under the SDK's encoders (numpy in, numpy out).

Every backend offers the same small interface (``Backend`` below), so ``VideoEncoder`` and
``TextEncoder`` do not care whether PyTorch, ONNX Runtime, TorchScript or torch.export computes the
numbers.

- ``torch_backend``: ``TorchBackend`` runs a ``MuseModel``;
- ``exported``: the ONNX, TorchScript and torch.export ("pt2") backends, which run an export directory;
- ``spec``: ``ModelSpec``, which encoder to build (model, CLIP weights, backend, device, precision,
  frames, batch size), resolved once; ``backend``: the ``Backend`` base class;
- ``manifest``: the export manifest format (written by ``export/``, read here);
- ``devices``: device names ("auto", "cpu", "cuda:1") and batch sizes for a device;
- ``precision``: precision names ("auto", "fp32", "bf16", "fp16") and what "auto" means on a device.
"""

from __future__ import annotations

import importlib
import os

from .choices import BACKENDS, PRECISION_CHOICES

__all__ = [
    "BACKENDS",
    "PRECISION_CHOICES",
    "Backend",
    "BackendError",
    "ModelFacts",
    "ModelSpec",
    "ReadyEmbeddings",
    "load_backend",
    "resolve_device",
    "resolve_precision",
]

# Loaded on first use: the CLI reads the choices above without numpy or torch.
_LAZY = {
    "Backend": "backend",
    "ReadyEmbeddings": "backend",
    "ModelFacts": "spec",
    "ModelSpec": "spec",
    "resolve_device": "devices",
    "resolve_precision": "precision",
}


def __getattr__(name: str):
    if name == "BackendError":
        from ..errors import BackendError

        return BackendError
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_backend(
    model,
    backend: str = "torch",
    device: str = "cpu",
    clip_weights: str | os.PathLike | None = None,
    precision: str = "auto",
    compile_backbone: str = "off",
):
    """A ``Backend`` running ``model`` on ``device``: a ``ModelSpec`` (then the other choices are its
    own), or anything ``muse_infer.load_model`` accepts, resolved into one here.

    precision: "fp32", "bf16", "fp16" or "auto" (torch: bf16 on a GPU and on a CPU with native bf16,
    fp32 elsewhere; an export directory: the precision it was exported in, and any other is refused).
    compile_backbone: torch only, see ``TorchBackend``.
    """
    from .spec import ModelSpec

    if not isinstance(model, ModelSpec):
        model = ModelSpec.resolve(
            model, clip_weights=clip_weights, backend=backend, device=device, precision=precision
        )
    return model.load(compile_backbone)
