"""Write the text and video encoders as ``torch.export`` programs (``.pt2``), TorchScript's successor.

- ``video_encoder.pt2`` keeps each block's two selective scans as one ``muse::selective_scan_bidirectional``
  node. Register the op
  before ``torch.export.load``: ``torch.ops.load_library(<muse_infer/_C.so>)`` (the C++ CPU kernel) or
  ``import muse_infer.ops.op`` (the CPU and CUDA kernels, and the fake kernel that re-tracing and
  ``torch.compile`` need). ``load_pt2`` below does the latter.
- ``text_encoder.pt2`` has no scan: ``torch.export.load`` only.

Both take a dynamic batch dimension; ``torch.export.load(path).module()`` is a callable nn.Module.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .modules import (
    EXPORT_BATCH,
    TextEncoderModule,
    VideoEncoderModule,
    dynamic_batch,
    example_text_inputs,
    example_video_inputs,
    scan_as_op,
)

logger = logging.getLogger(__name__)


def export_video_pt2(model: nn.Module, path: str | Path) -> Path:
    """Video encoder -> ``.pt2``: frames (batch, T, 3, H, W) float32, mask (batch, T) float32 -> (batch, C).

    T, H, W are fixed at the config's max_frames and image size; the batch is dynamic.
    """
    frames, mask = example_video_inputs(model.config, EXPORT_BATCH)
    with scan_as_op(model):
        return _export_and_save(VideoEncoderModule(model), (frames, mask), Path(path))


def export_text_pt2(model: nn.Module, path: str | Path) -> Path:
    """Text encoder -> ``.pt2``: ids (batch, max_words) int64 -> (batch, C). Needs nothing but torch."""
    (ids,) = example_text_inputs(model.config, EXPORT_BATCH, vocab_size=model.backbone.text_vocab_size)
    with torch.no_grad():
        return _export_and_save(TextEncoderModule(model), (ids,), Path(path))


def _export_and_save(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter; the result is verified
        program = torch.export.export(module.eval(), args, dynamic_shapes=dynamic_batch(args))
    torch.export.save(program, str(path))
    logger.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def load_pt2(path: str | Path, device: str = "cpu") -> nn.Module:
    """``torch.export.load(path).module()`` after registering the ``muse::`` scan ops, on ``device``
    (the programs are exported on the CPU and moved with ``move_to_device_pass``)."""
    import muse_infer.ops.op  # noqa: F401  (registers the muse:: ops: C++ CPU kernel, CUDA kernel)
    from muse_infer.runtime.exported import load_exported_program

    return load_exported_program(path, device)
