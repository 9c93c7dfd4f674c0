"""Export MUSE's text and video encoders to ONNX, TorchScript and torch.export, verified against the model.

    from export import export_checkpoint, load_pt2, load_torchscript
    export_checkpoint("model.safetensors", "exported/", formats=("onnx", "torchscript", "pt2"))

This package imports muse_infer; muse_infer never imports it (its ONNX and TorchScript backends only
read the files written here).
"""

from .modules import ExportError, TextEncoderModule, VideoEncoderModule, op_library_path
from .package import DEFAULT_FORMATS, FORMATS, ExportResult, export_checkpoint, export_model
from .pt2_export import load_pt2
from .torchscript_export import load_torchscript

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "ExportError",
    "ExportResult",
    "TextEncoderModule",
    "VideoEncoderModule",
    "export_checkpoint",
    "export_model",
    "load_pt2",
    "load_torchscript",
    "op_library_path",
]
