"""Export MUSE's text and video encoders to ONNX, TorchScript and torch.export, verified against the model.

    from export import export_checkpoint, load_pt2, load_torchscript
    export_checkpoint("model.safetensors", "exported/", formats=("onnx", "torchscript", "pt2"))

This package imports muse_infer; muse_infer never imports it (its ONNX and TorchScript backends only
read the files written here).
"""

import importlib

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

# Loaded on first use, so that `muse-infer --help` (which lists the `export` command from export.cli)
# does not import torch, onnx and onnxscript.
_LAZY = {
    "ExportError": "modules",
    "TextEncoderModule": "modules",
    "VideoEncoderModule": "modules",
    "op_library_path": "modules",
    "DEFAULT_FORMATS": "package",
    "FORMATS": "package",
    "ExportResult": "package",
    "export_checkpoint": "package",
    "export_model": "package",
    "load_pt2": "pt2_export",
    "load_torchscript": "torchscript_export",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
