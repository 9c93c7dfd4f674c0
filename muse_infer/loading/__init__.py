"""Models from files and names: references, checkpoints, the authors' checkpoints, model identity.

- ``reference``: what a model reference names (the one place that decides);
- ``models``: ``load_model``, ``build_model`` and CLIP weights (imports torch);
- ``checkpoint``: muse-infer ``.safetensors`` files, checked key by key (imports torch);
- ``convert``: the authors' CLIP4Clip/MUSE state dicts -> a model (imports torch);
- ``identity``: which weights made an embedding (light: the index reads it without torch).

Importing this package imports nothing heavy; the names below load their module on first use.
"""

from __future__ import annotations

import importlib

__all__ = [
    "load_model",
    "available_models",
    "build_model",
    "load_clip_weights",
    "resolve_clip_weights",
    "resolve_model",
    "ModelRef",
    "PretrainedWeightsError",
]

_LAZY = {
    "load_model": "models",
    "build_model": "models",
    "load_clip_weights": "models",
    "resolve_clip_weights": "models",
    "available_models": "reference",
    "resolve_model": "reference",
    "ModelRef": "reference",
}


def __getattr__(name: str):
    if name == "PretrainedWeightsError":
        from ..errors import PretrainedWeightsError

        return PretrainedWeightsError
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
