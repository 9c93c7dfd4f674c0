"""The export manifest, owned here: what ``export/`` writes and the exported backends read.

``manifest.json`` in an export directory holds everything a deployment needs to feed the encoders
without muse_infer: the model identity, the inputs and outputs of each encoder file, the tokenizer and
the frame preprocessing, how to load each file, and each file's measured error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import BackendError
from ..loading.reference import EXPORT_MANIFEST

MANIFEST = EXPORT_MANIFEST
MANIFEST_FORMAT = "muse-infer-export"
MANIFEST_VERSION = 1
SOT_TOKEN_ID, EOT_TOKEN_ID = 49406, 49407


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of an export directory, checked; BackendError naming the file otherwise."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise BackendError(
            f"{directory}: not an export directory (no {MANIFEST}); the ONNX, TorchScript and pt2 backends "
            f"run the folder written by `muse-infer export --checkpoint MODEL --out {directory}`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BackendError(f"{path}: unreadable manifest ({error}); export again") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or manifest.get("format_version") != MANIFEST_VERSION
    ):
        raise BackendError(f"{path}: not a muse-infer export manifest (format version {MANIFEST_VERSION})")
    return manifest


def export_model_source(directory: str | os.PathLike) -> dict:
    """How to load the exported model with torch: the manifest's {"model": ..., "clip_weights": ...}."""
    source = read_manifest(directory).get("model_source")
    if not source or not source.get("model"):
        raise BackendError(f"{directory}: the manifest does not say which model was exported; pass --model")
    return source


def build_manifest(
    model,
    identity: dict,
    source: dict | None,
    files: list,
    errors: dict[str, float],
    onnx_opset: int,
    precision: str = "fp32",
) -> dict:
    """The manifest dict (JSON-ready) for an export of ``model`` (a MuseModel) made of ``files``.

    ``files``: the written files (each with ``encoder``, ``runtime``, ``path``, ``needs_op_library``);
    ``errors``: each file's max abs error against the fp32 eager model, by file name; ``precision``:
    what the files compute in (their inputs and outputs are float32 whatever it is).
    """
    import muse_infer

    config = model.config
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "model": identity,
        "model_source": source,
        "embed_dim": config.embed_dim,
        "precision": precision,
        "logit_scale": float(model.logit_scale.detach().float()),
        "onnx_opset": onnx_opset,
        "encoders": {
            "video": _video_signature(config, files, errors),
            "text": _text_signature(config, files, errors),
        },
        "tokenizer": _tokenizer(model),
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


def _video_signature(config, files: list, errors: dict[str, float]) -> dict:
    frames, size = config.max_frames, config.image_size
    return {
        "inputs": [
            {"name": "frames", "shape": ["batch", frames, 3, size, size], "dtype": "float32"},
            {"name": "mask", "shape": ["batch", frames], "dtype": "float32"},
        ],
        "outputs": [{"name": "embeddings", "shape": ["batch", config.embed_dim], "dtype": "float32"}],
        "files": _files_of("video", files, errors),
    }


def _text_signature(config, files: list, errors: dict[str, float]) -> dict:
    return {
        "inputs": [{"name": "ids", "shape": ["batch", config.max_words], "dtype": "int64"}],
        "outputs": [{"name": "embeddings", "shape": ["batch", config.embed_dim], "dtype": "float32"}],
        "files": _files_of("text", files, errors),
    }


def _files_of(encoder: str, files: list, errors: dict[str, float]) -> dict:
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


TOKENIZER_FOLDER = "tokenizer"  # an export's copy of a Hugging Face tokenizer's files


def _tokenizer(model) -> dict:
    config = model.config
    if config.tokenizer is None:
        return {
            "kind": "CLIP BPE (open_clip SimpleTokenizer, lower-cased, cleaned)",
            "max_words": config.max_words,
            "layout": "[sot] + BPE tokens cut to max_words - 2 + [eot], zero-padded to max_words",
            "sot_token_id": SOT_TOKEN_ID,
            "eot_token_id": EOT_TOKEN_ID,
            "pad_token_id": 0,
        }
    described = model.tokenizer.describe()
    return described | {
        "hf": dict(config.tokenizer),
        "folder": TOKENIZER_FOLDER,
        "files": f"{TOKENIZER_FOLDER}/ holds the tokenizer's files (read with the `tokenizers` package)",
    }


def _preprocessing(config) -> dict:
    preprocess = config.frame_preprocess
    resize = (
        "resize to image_size x image_size ({interpolation}), RGB"
        if preprocess["resize_mode"] == "squash"
        else "short side to image_size ({interpolation}), center crop image_size x image_size, RGB"
    )
    return {
        "image_size": config.image_size,
        "max_frames": config.max_frames,
        "framerate": config.framerate,
        "slice_mode": config.slice_mode,
        "resize": resize.format(**preprocess),
        "resize_mode": preprocess["resize_mode"],
        "interpolation": preprocess["interpolation"],
        "scale": "pixel / 255",
        "mean": list(preprocess["mean"]),
        "std": list(preprocess["std"]),
        "padding": "fewer than max_frames: zero frames after the real ones, mask 0 there",
        "layout": "frames (batch, max_frames, 3, H, W) float32; mask (batch, max_frames) float32, 1 = real frame",
    }


def manifest_preprocess(manifest: dict) -> dict:
    """The frames' mean, std, resize_mode and interpolation a manifest records (older manifests, made
    before the last two were recorded, resized CLIP's way: shortest side, bicubic)."""
    preprocessing = manifest["preprocessing"]
    return {
        "mean": tuple(float(v) for v in preprocessing["mean"]),
        "std": tuple(float(v) for v in preprocessing["std"]),
        "resize_mode": preprocessing.get("resize_mode", "shortest"),
        "interpolation": preprocessing.get("interpolation", "bicubic"),
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
