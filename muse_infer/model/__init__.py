"""MUSE as nn.Modules: CLIP backbone, multi-scale pyramid, BiMamba blocks, and the full model."""

from .muse import MuseModel

__all__ = ["MuseModel"]
