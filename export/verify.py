"""Check exported encoders against the eager model, each file loaded in a fresh Python process.

The parent computes the eager model's embeddings on seeded random inputs and saves the inputs; a child
process per file loads only what a deployment would (ONNX: onnxruntime and numpy, and it asserts that
torch was never imported; TorchScript and torch.export: torch, plus the C++ library for files that call
the op), runs the file and saves its output; the parent reports the max abs error of the L2-normalised
embeddings.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .modules import ExportError, ExportVerificationError, example_text_inputs, example_video_inputs

TOLERANCE = 1e-4
# Largest max abs error of an export's L2-normalised embeddings against the fp32 eager model, by the
# precision the export computes in. bf16 keeps 8 bits of mantissa (fp16 11): elements of a unit
# vector of 512 are ~0.04, so an error of 1e-2 (bf16) / 2e-3 (fp16) is a cosine above 0.999 (measured
# errors on the tiny and demo models are a few times smaller: docs/benchmarks.md, "Precision").
TOLERANCES = {"fp32": TOLERANCE, "bf16": 1e-2, "fp16": 2e-3}
VERIFY_SEED = 1234
VERIFY_TIMEOUT_S = 900

# Each runner gets a JSON list of [model, inputs.npz, output.npy] jobs (and, for TorchScript, the op
# library to load first, or ""), runs them in order and saves each output.
_ONNX_RUNNER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import onnxruntime as ort
    for model, inputs, output in json.loads(sys.argv[1]):
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        np.save(output, session.run(None, dict(np.load(inputs)))[0])
    assert "torch" not in sys.modules and "muse_infer" not in sys.modules, "the ONNX check imported torch"
    """
)

# argv[3] says how a file is loaded: "torchscript" (torch.jit.load) or "pt2" (torch.export.load).
_TORCH_RUNNER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    if sys.argv[2]:
        torch.ops.load_library(sys.argv[2])
    for model, inputs, output in json.loads(sys.argv[1]):
        feeds = np.load(inputs)
        module = torch.jit.load(model) if sys.argv[3] == "torchscript" else torch.export.load(model).module()
        with torch.no_grad():
            result = module(*[torch.from_numpy(feeds[name]) for name in feeds.files])
        np.save(output, result.numpy())
    assert "muse_infer" not in sys.modules, "the TorchScript / torch.export check imported muse_infer"
    """
)


@dataclasses.dataclass(frozen=True)
class ExportedFile:
    """One exported encoder: ``encoder`` is "video" or "text"; ``runtime`` "onnx", "torchscript" or
    "pt2"; ``needs_op_library``: a TorchScript or torch.export file with ``muse::`` scan op calls."""

    path: Path
    encoder: str
    runtime: str
    needs_op_library: bool = False


def default_tolerance(precision: str) -> float:
    """``TOLERANCES[precision]``: the default limit of ``verify_files`` for files in that precision."""
    return TOLERANCES[precision]


def verification_inputs(config, encoder: str, vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs, in the encoder's input order, at batch sizes other than the export's (2);
    vocab_size: the text tower's (``example_text_inputs``)."""
    if encoder == "video":
        frames, mask = example_video_inputs(
            config, 3, seed=VERIFY_SEED, real_frames=[config.max_frames, max(1, config.max_frames // 2), 1]
        )
        return {"frames": frames.numpy(), "mask": mask.numpy()}
    (ids,) = example_text_inputs(config, 5, seed=VERIFY_SEED, vocab_size=vocab_size)
    return {"ids": ids.numpy()}


def eager_embeddings(model: nn.Module, encoder: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The eager model's L2-normalised embeddings (batch, C) for ``verification_inputs``."""
    tensors = [torch.from_numpy(v) for v in inputs.values()]
    with torch.no_grad():
        if encoder == "video":
            return model.encode_video(*tensors).numpy()
        return model.encode_text_tokens(*tensors).numpy()


def verify_files(
    model: nn.Module, files: list[ExportedFile], op_library: str | None = None, tolerance: float = TOLERANCE
) -> dict[str, float]:
    """Max abs error of each file's output against the eager model, each run in a fresh process.

    One process per kind of loading: ONNX files (onnxruntime + numpy only), TorchScript / torch.export
    files that need nothing but torch, and those that call the op (after ``torch.ops.load_library``).
    Raises ExportError naming the file when a run fails or its error exceeds ``tolerance``.
    """
    with tempfile.TemporaryDirectory(prefix="muse-verify-") as scratch_name:
        scratch = Path(scratch_name)
        expected, inputs_paths = {}, {}
        for encoder in sorted({f.encoder for f in files}):
            inputs = verification_inputs(model.config, encoder, model.backbone.text_vocab_size)
            expected[encoder] = eager_embeddings(model, encoder, inputs)
            inputs_paths[encoder] = scratch / f"{encoder}_inputs.npz"
            np.savez(inputs_paths[encoder], **inputs)
        outputs = {}
        for group in _loading_groups(files):
            outputs |= run_in_fresh_process(group, inputs_paths, scratch, op_library)
    errors = {f.path.name: _max_abs_error(f, outputs[f.path.name], expected[f.encoder]) for f in files}
    bad = {name: error for name, error in errors.items() if not error <= tolerance}
    if bad:
        detail = ", ".join(f"{name}: {error:.3g}" for name, error in bad.items())
        raise ExportVerificationError(
            f"exported encoders differ from the eager model by more than {tolerance:g}: {detail}"
        )
    return errors


def _loading_groups(files: list[ExportedFile]) -> list[list[ExportedFile]]:
    groups: dict[tuple[str, bool], list[ExportedFile]] = {}
    for file in files:
        groups.setdefault((file.runtime, file.needs_op_library), []).append(file)
    return list(groups.values())


def run_in_fresh_process(
    files: list[ExportedFile], inputs_paths: dict[str, Path], scratch: Path, op_library: str | None = None
) -> dict[str, np.ndarray]:
    """Run ``files`` (one runtime, one loading step) on the saved inputs in a new interpreter.

    Returns each file's output (batch, C) by file name.
    """
    jobs = [
        [str(f.path), str(inputs_paths[f.encoder]), str(scratch / f"{f.path.name}.out.npy")] for f in files
    ]
    names = ", ".join(f.path.name for f in files)
    if files[0].runtime == "onnx":
        command = [sys.executable, "-c", _ONNX_RUNNER, json.dumps(jobs)]
    else:
        library = (op_library or "") if files[0].needs_op_library else ""
        if files[0].needs_op_library and not library:
            raise ExportError(f"{names}: calls the muse:: scan ops but no op library was given")
        command = [sys.executable, "-c", _TORCH_RUNNER, json.dumps(jobs), library, files[0].runtime]
    result = subprocess.run(command, capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S)
    if result.returncode != 0:
        raise ExportError(f"{names}: failed to run in a fresh process:\n{result.stderr[-3000:]}")
    return {f.path.name: np.load(job[2]) for f, job in zip(files, jobs, strict=True)}


def _max_abs_error(file: ExportedFile, actual: np.ndarray, expected: np.ndarray) -> float:
    if actual.shape != expected.shape:
        raise ExportError(
            f"{file.path.name}: output shape {actual.shape}, eager model gives {expected.shape}"
        )
    return float(np.abs(actual.astype(np.float64) - expected).max())
