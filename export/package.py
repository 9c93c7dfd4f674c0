"""``export_model``: an export directory with both encoders in each format, a manifest, verified.

Layout of DIR (every file written into a temporary sibling folder, renamed onto DIR only when all
files are written and verified, so DIR is never half-written)::

    manifest.json                 identity, inputs, tokenizer, preprocessing, files, measured errors
    text_encoder.onnx             ids (batch, L) int64 -> embeddings (batch, C)
    video_encoder.onnx            frames (batch, T, 3, H, W) float32, mask (batch, T) float32 -> (batch, C)
    text_encoder.pt               TorchScript, bare torch
    video_encoder.pt              TorchScript with muse::selective_scan_bidirectional calls (load the op library first)
    video_encoder.portable.pt     TorchScript, scan as TorchScript code, bare torch
    text_encoder.pt2              torch.export program, bare torch
    video_encoder.pt2             torch.export program with muse::selective_scan_bidirectional nodes (register the op first)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from muse_infer.atomic import replace_folder
from muse_infer.ops.onnx_scan import OPSET
from muse_infer.runtime.manifest import MANIFEST, build_manifest
from muse_infer.runtime.spec import ModelSpec

from .modules import ExportError, op_library_path
from .verify import ExportedFile, default_tolerance, verify_files

logger = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript", "pt2")
DEFAULT_FORMATS = ("onnx", "torchscript")
PRECISIONS = ("fp32", "bf16", "fp16")
# Formats that cannot run a precision where exports are verified (onnxruntime's CPU provider), so are
# refused rather than written unverified: ONNX's Conv takes no bfloat16 (opset 18) and onnxruntime
# 1.32's CPU provider has no bfloat16 Gemm, Add or Sqrt (measured: docs/benchmarks.md, "Precision").
UNVERIFIABLE = {("onnx", "bf16")}


@dataclasses.dataclass
class ExportResult:
    """What ``export_model`` wrote: the directory, its manifest, and each file's max abs error."""

    directory: Path
    manifest: dict
    errors: dict[str, float]


def export_checkpoint(
    checkpoint: str | os.PathLike | ModelSpec,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    clip_weights: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    **options,
) -> ExportResult:
    """Load ``checkpoint`` (a ``ModelSpec``, or anything ``muse_infer.load_model`` accepts, resolved
    into one with ``clip_weights`` and ``tokenizer``, the folder of the text tower's Hugging Face
    tokenizer files) and ``export_model`` it with the spec's identity and source."""
    from muse_infer.loading.models import load_model

    spec = (
        checkpoint
        if isinstance(checkpoint, ModelSpec)
        else ModelSpec.resolve(checkpoint, clip_weights=clip_weights, tokenizer=tokenizer)
    )
    if spec.backend != "torch":
        raise ExportError(f"{spec.name}: export a checkpoint or a named model run by torch, not an export")
    model = load_model(spec.ref, clip_weights=spec.clip_weights, tokenizer=spec.tokenizer)
    return export_model(model, out_dir, formats, identity=spec.identity, source=spec.source, **options)


def export_model(
    model: nn.Module,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    identity: dict | None = None,
    source: dict | None = None,
    verify: bool = True,
    overwrite: bool = False,
    tolerance: float | None = None,
    log: Callable[[str], None] = logger.info,
    precision: str = "fp32",
) -> ExportResult:
    """Write a MuseModel's text and video encoders in each of ``formats`` ("onnx", "torchscript", "pt2").

    identity: the model's ``muse_infer.loading.identity.model_identity`` (default: a hash of its weights);
    source: how to load it again with torch ({"model": ..., "clip_weights": ...}), kept in the manifest.
    precision: "fp32", "bf16" or "fp16": the files compute in it (``muse_infer.model.precision``), with
    float32 inputs and outputs whatever it is. verify: run each file in a fresh process against the fp32
    eager model; ExportError above ``tolerance`` (max abs error; None: ``default_tolerance(precision)``).
    """
    formats = _check_formats(formats)
    _check_precision(formats, precision)
    tolerance = default_tolerance(precision) if tolerance is None else tolerance
    out_dir = Path(out_dir)
    _check_destination(out_dir, overwrite)
    model = model.float().eval().to("cpu")
    identity = identity or weights_identity(model)
    written = _in_precision(model, precision)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        files = _write_files(written, staging, formats, log)
        _copy_tokenizer(model, staging)
        errors = {}
        if verify:
            errors = verify_files(model, files, op_library_path(), tolerance)
            for name, error in errors.items():
                log(
                    f"verified {name}: max abs error {error:.2e} vs the fp32 eager model "
                    f"(limit {tolerance:g}, {precision})"
                )
        manifest = build_manifest(written, identity, source, files, errors, OPSET, precision)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out_dir, manifest, errors)


def _write_files(model: nn.Module, directory: Path, formats: tuple[str, ...], log) -> list[ExportedFile]:
    from .onnx_export import export_text_onnx, export_video_onnx
    from .pt2_export import export_text_pt2, export_video_pt2
    from .torchscript_export import export_text_torchscript, export_video_torchscript

    files = []
    if "onnx" in formats:
        log("exporting text_encoder.onnx")
        files.append(ExportedFile(export_text_onnx(model, directory / "text_encoder.onnx"), "text", "onnx"))
        log("exporting video_encoder.onnx")
        files.append(
            ExportedFile(export_video_onnx(model, directory / "video_encoder.onnx"), "video", "onnx")
        )
    if "torchscript" in formats:
        log("exporting text_encoder.pt, video_encoder.pt, video_encoder.portable.pt")
        text = export_text_torchscript(model, directory / "text_encoder.pt")
        video = export_video_torchscript(model, directory / "video_encoder.pt")
        portable = export_video_torchscript(model, directory / "video_encoder.portable.pt", portable=True)
        files += [
            ExportedFile(text, "text", "torchscript"),
            ExportedFile(video, "video", "torchscript", needs_op_library=True),
            ExportedFile(portable, "video", "torchscript"),
        ]
    if "pt2" in formats:
        log("exporting text_encoder.pt2, video_encoder.pt2")
        files += [
            ExportedFile(export_text_pt2(model, directory / "text_encoder.pt2"), "text", "pt2"),
            ExportedFile(
                export_video_pt2(model, directory / "video_encoder.pt2"),
                "video",
                "pt2",
                needs_op_library=True,
            ),
        ]
    return files


def _copy_tokenizer(model: nn.Module, directory: Path) -> None:
    """A Hugging Face tokenizer's files into DIR/tokenizer/, so the export tokenises on its own."""
    if model.config.tokenizer is None:
        return
    from muse_infer.runtime.manifest import TOKENIZER_FOLDER
    from muse_infer.tokenizer import TOKENIZER_FILES

    folder = directory / TOKENIZER_FOLDER
    folder.mkdir()
    for name in TOKENIZER_FILES:
        if (model.tokenizer.folder / name).is_file():
            shutil.copyfile(model.tokenizer.folder / name, folder / name)


def weights_identity(model: nn.Module) -> dict:
    """An identity for an in-memory model: the SHA-256 of its weights and its config."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return json.loads(
        json.dumps({"kind": "weights", "sha256": digest.hexdigest(), "config": model.config.to_dict()})
    )


def _in_precision(model: nn.Module, precision: str) -> nn.Module:
    """``model`` itself for fp32, else a copy cast to ``precision`` (the fp32 one stays the reference)."""
    if precision == "fp32":
        return model
    from muse_infer.model.precision import cast_for_inference

    return cast_for_inference(copy.deepcopy(model), precision)


def _check_precision(formats: tuple[str, ...], precision: str) -> None:
    if precision not in PRECISIONS:
        raise ExportError(f"--precision {precision!r}: choose from {list(PRECISIONS)}")
    refused = [f for f in formats if (f, precision) in UNVERIFIABLE]
    if refused:
        raise ExportError(
            f"--format {','.join(refused)} cannot be exported in {precision}: ONNX's Conv takes no "
            f"{precision} and onnxruntime's CPU provider, where exports are verified, has no {precision} "
            "kernels for the encoders' ops, and an unverified file is not written. Export "
            f"{precision} as torchscript or pt2 (--format torchscript,pt2), or ONNX in fp16 or fp32"
        )


def _check_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"formats: {list(unknown) or 'none given'}; choose from {list(FORMATS)}")
    return tuple(dict.fromkeys(formats))


def _check_destination(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(
                f"--out {out_dir}: directory exists and is not empty (pass --overwrite to replace it)"
            )
        if not (out_dir / MANIFEST).is_file():
            raise ExportError(
                f"--out {out_dir}: not an export directory (no {MANIFEST}); refusing to replace it"
            )
