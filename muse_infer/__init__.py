"""muse-infer: text-video retrieval with MUSE (multi-scale Mamba over CLIP features)."""

__version__ = "0.1.0"
