"""Write the text and video encoders as traced TorchScript files.

Two video files:
- ``video_encoder.pt`` keeps each block's two selective scans as one ``muse::selective_scan_bidirectional``
  call. Before ``torch.jit.load`` the op must be registered: ``torch.ops.load_library(<muse_infer/_C.so>)`` (the C++
  CPU kernel, which a libtorch C++ program can load too) or ``import muse_infer.ops.op`` (also the CUDA
  kernel). ``load_torchscript`` below does the latter.
- ``video_encoder.portable.pt`` embeds the scan as a scripted TorchScript loop and loads with bare torch.
The text encoder has no scan: ``text_encoder.pt`` loads with bare torch.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .modules import (
    TextEncoderModule,
    VideoEncoderModule,
    example_text_inputs,
    example_video_inputs,
    scan_as_op,
    scan_as_script,
)

logger = logging.getLogger(__name__)
TRACE_BATCH = 2


def export_video_torchscript(model: nn.Module, path: str | Path, portable: bool = False) -> Path:
    """Trace the video encoder: frames (batch, T, 3, H, W) float32, mask (batch, T) float32 -> (batch, C).

    portable=False keeps ``muse::selective_scan_bidirectional`` calls; True embeds the scan as TorchScript
    code (``muse_infer.ops.torchscript_scan``).
    Traced on the model's device: a trace made on CPU creates its intermediate tensors on CPU.
    """
    device = next(model.parameters()).device
    frames, mask = (t.to(device) for t in example_video_inputs(model.config, TRACE_BATCH))
    routing = scan_as_script(model) if portable else scan_as_op(model)
    with routing:
        return _trace_and_save(VideoEncoderModule(model), (frames, mask), Path(path))


def export_text_torchscript(model: nn.Module, path: str | Path) -> Path:
    """Trace the text encoder: ids (batch, max_words) int64 -> (batch, C). Needs nothing but torch."""
    (ids,) = example_text_inputs(model.config, TRACE_BATCH, vocab_size=model.backbone.text_vocab_size)
    with torch.no_grad():
        return _trace_and_save(TextEncoderModule(model), (ids,), Path(path))


def _trace_and_save(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on Python ints from shapes: checked by verify
        traced = torch.jit.trace(module.eval(), args, check_trace=False)
    traced.save(str(path))
    logger.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def load_torchscript(path: str | Path, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` after registering the ``muse::`` scan ops (the documented loading step).

    Equivalent to ``import muse_infer.ops.op; torch.jit.load(path)``; the portable files and the text
    encoder need only ``torch.jit.load``.
    """
    import muse_infer.ops.op  # noqa: F401  (registers the muse:: ops: C++ CPU kernel, CUDA kernel)

    return torch.jit.load(str(path), map_location=map_location)
