"""Export MUSE's text and video encoders to ONNX and TorchScript, verified against the eager model.

    from export import export_checkpoint, load_torchscript
    export_checkpoint("model.safetensors", "exported/", formats=("onnx", "torchscript"))

This package imports muse_infer; muse_infer never imports it (its ONNX and TorchScript backends only
read the files written here).
"""

from .modules import ExportError, TextEncoderModule, VideoEncoderModule, op_library_path
from .package import FORMATS, ExportResult, export_checkpoint, export_model
from .torchscript_export import load_torchscript

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportResult",
    "TextEncoderModule",
    "VideoEncoderModule",
    "export_checkpoint",
    "export_model",
    "load_torchscript",
    "op_library_path",
]
