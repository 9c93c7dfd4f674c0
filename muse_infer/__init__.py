"""muse-infer: text-video retrieval with MUSE (multi-scale Mamba over CLIP features).

Light to import: torch loads only when a model is built or loaded, and open_clip only for a model
whose layout is not the plain CLIP (``model.plain_clip``).
"""

__version__ = "0.1.0"

__all__ = [
    "load_model",
    "available_models",
    "MuseConfig",
    "ModelSpec",
    "VideoEncoder",
    "TextEncoder",
    "EmbeddingIndex",
    "RowQuery",
    "SearchFilter",
]

_LAZY = {
    "load_model": ("muse_infer.loading.models", "load_model"),
    "available_models": ("muse_infer.loading.reference", "available_models"),
    "MuseConfig": ("muse_infer.config", "MuseConfig"),
    "ModelSpec": ("muse_infer.runtime.spec", "ModelSpec"),
    "VideoEncoder": ("muse_infer.encoders", "VideoEncoder"),
    "TextEncoder": ("muse_infer.encoders", "TextEncoder"),
    "EmbeddingIndex": ("muse_infer.index", "EmbeddingIndex"),
    "RowQuery": ("muse_infer.index.queries", "RowQuery"),
    "SearchFilter": ("muse_infer.index.filters", "SearchFilter"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'muse_infer' has no attribute {name!r}")
