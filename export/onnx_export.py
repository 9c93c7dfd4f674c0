"""Write the text and video encoders as ONNX files that a stock onnxruntime runs.

The model's selective scans are exported as ``muse::selective_scan_bidirectional`` nodes, one a block
(export/modules.py, ``scan_as_op``), and translated to standard ONNX ops (an ONNX ``Scan`` over time) by
muse_infer/ops/onnx_scan.py, so the files carry no custom domain. Every file passes ``onnx.checker.check_model(path, full_check=True)`` before it is accepted.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from muse_infer.ops.onnx_scan import OPSET, translation_table

from .modules import (
    EXPORT_BATCH,
    ExportError,
    TextEncoderModule,
    VideoEncoderModule,
    dynamic_batch,
    example_text_inputs,
    example_video_inputs,
    scan_as_op,
)

logger = logging.getLogger(__name__)


def export_video_onnx(model: nn.Module, path: str | Path) -> Path:
    """Video encoder -> ONNX: inputs frames (batch, T, 3, H, W) float32, mask (batch, T) float32;
    output embeddings (batch, C). T, H, W are fixed at the config's max_frames and image size."""
    frames, mask = example_video_inputs(model.config, EXPORT_BATCH)
    with scan_as_op(model):
        return _export(VideoEncoderModule(model), (frames, mask), ["frames", "mask"], Path(path))


def export_text_onnx(model: nn.Module, path: str | Path) -> Path:
    """Text encoder -> ONNX: input ids (batch, max_words) int64; output embeddings (batch, C)."""
    (ids,) = example_text_inputs(model.config, EXPORT_BATCH, vocab_size=model.backbone.text_vocab_size)
    with torch.no_grad():
        return _export(TextEncoderModule(model), (ids,), ["ids"], Path(path))


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], input_names: list[str], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress and deprecation chatter
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            opset_version=OPSET,
            input_names=input_names,
            output_names=["embeddings"],
            dynamic_shapes=dynamic_batch(args),
            custom_translation_table=translation_table(),
            optimize=True,
            verbose=False,
        )
    if program is None:
        raise ExportError(f"{path.name}: torch.onnx.export returned no program")
    # protobuf caps one file at 2 GB: larger encoders (ViT-H's image tower, 2.5 GB in fp32) keep their
    # weights in PATH.data beside it, which onnxruntime and onnx.checker read from the same folder.
    program.save(str(path), external_data=_weight_bytes(module) > EXTERNAL_DATA_BYTES)
    check_onnx(path)
    logger.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


EXTERNAL_DATA_BYTES = 1_500_000_000  # below protobuf's 2 GB, with room for the graph itself


def _weight_bytes(module: nn.Module) -> int:
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def check_onnx(path: str | Path) -> None:
    """``onnx.checker`` with full checks (shape inference included); ExportError naming the file."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{path}: fails onnx.checker (full_check): {error}") from None
    domains = {node.domain for node in onnx.load(str(path), load_external_data=False).graph.node}
    custom = sorted(d for d in domains if d not in ("", "ai.onnx"))
    if custom:
        raise ExportError(f"{path}: the portable graph must use standard ops only, found domains {custom}")
