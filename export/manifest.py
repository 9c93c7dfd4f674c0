"""The export manifest: everything a deployment needs to feed the encoders without muse_infer."""

from __future__ import annotations

from torch import nn

from .scan_onnx import OPSET
from .verify import ExportedFile

MANIFEST_FORMAT = "muse-infer-export"
MANIFEST_VERSION = 1
SOT_TOKEN_ID, EOT_TOKEN_ID = 49406, 49407


def build_manifest(
    model: nn.Module, identity: dict, source: dict | None, files: list[ExportedFile], errors: dict[str, float]
) -> dict:
    """The manifest dict (JSON-ready) for an export of ``model`` made of ``files``."""
    import muse_infer

    config = model.config
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "model": identity,
        "model_source": source,
        "embed_dim": config.embed_dim,
        "logit_scale": float(model.logit_scale.detach().float()),
        "onnx_opset": OPSET,
        "encoders": {
            "video": _video_signature(config, files, errors),
            "text": _text_signature(config, files, errors),
        },
        "tokenizer": _tokenizer(config),
        "preprocessing": _preprocessing(config),
        "torchscript_loading": TORCHSCRIPT_LOADING,
        "pt2_loading": PT2_LOADING,
        "created_with": _versions(muse_infer.__version__),
    }


TORCHSCRIPT_LOADING = {
    "video_encoder.pt": (
        "register muse::selective_scan before torch.jit.load: in Python "
        "`torch.ops.load_library(<site-packages>/muse_infer/_C.so)` (CPU kernel) or `import muse_infer.ops.op` "
        '(CPU and CUDA kernels); in a libtorch C++ program dlopen("_C.so", RTLD_LAZY | RTLD_GLOBAL) '
        "before torch::jit::load (RTLD_NOW fails: the file also holds a Python module init)"
    ),
    "video_encoder.portable.pt": "torch.jit.load only",
    "text_encoder.pt": "torch.jit.load only",
}
PT2_LOADING = {
    "video_encoder.pt2": (
        "register muse::selective_scan before torch.export.load(path).module(): "
        "`torch.ops.load_library(<site-packages>/muse_infer/_C.so)` (CPU kernel) or `import muse_infer.ops.op` "
        "(CPU and CUDA kernels); exported on the CPU, move to a GPU with torch.export.passes.move_to_device_pass"
    ),
    "text_encoder.pt2": "torch.export.load(path).module() only",
}


def _video_signature(config, files: list[ExportedFile], errors: dict[str, float]) -> dict:
    frames, size = config.max_frames, config.image_size
    return {
        "inputs": [
            {"name": "frames", "shape": ["batch", frames, 3, size, size], "dtype": "float32"},
            {"name": "mask", "shape": ["batch", frames], "dtype": "float32"},
        ],
        "outputs": [{"name": "embeddings", "shape": ["batch", config.embed_dim], "dtype": "float32"}],
        "files": _files_of("video", files, errors),
    }


def _text_signature(config, files: list[ExportedFile], errors: dict[str, float]) -> dict:
    return {
        "inputs": [{"name": "ids", "shape": ["batch", config.max_words], "dtype": "int64"}],
        "outputs": [{"name": "embeddings", "shape": ["batch", config.embed_dim], "dtype": "float32"}],
        "files": _files_of("text", files, errors),
    }


def _files_of(encoder: str, files: list[ExportedFile], errors: dict[str, float]) -> dict:
    variants = {}
    for file in files:
        if file.encoder != encoder:
            continue
        variant = file.runtime + ("_portable" if file.path.name.endswith(".portable.pt") else "")
        variants[variant] = {
            "file": file.path.name,
            "needs_op_library": file.needs_op_library,
            "max_abs_error": errors.get(file.path.name),
        }
    return variants


def _tokenizer(config) -> dict:
    return {
        "kind": "CLIP BPE (open_clip SimpleTokenizer, lower-cased, cleaned)",
        "max_words": config.max_words,
        "layout": "[sot] + BPE tokens cut to max_words - 2 + [eot], zero-padded to max_words",
        "sot_token_id": SOT_TOKEN_ID,
        "eot_token_id": EOT_TOKEN_ID,
        "pad_token_id": 0,
    }


def _preprocessing(config) -> dict:
    from muse_infer.video import CLIP_MEAN, CLIP_STD

    return {
        "image_size": config.image_size,
        "max_frames": config.max_frames,
        "framerate": config.framerate,
        "slice_mode": config.slice_mode,
        "resize": "short side to image_size (bicubic), center crop image_size x image_size, RGB",
        "scale": "pixel / 255",
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "padding": "fewer than max_frames: zero frames after the real ones, mask 0 there",
        "layout": "frames (batch, max_frames, 3, H, W) float32; mask (batch, max_frames) float32, 1 = real frame",
    }


def _versions(muse_version: str) -> dict:
    import onnx
    import onnxruntime
    import torch

    return {
        "muse_infer": muse_version,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
