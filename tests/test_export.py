"""Export round trips: every format written, loaded in a fresh process and compared with the eager model.

The tiny model gets random (non-zero) gates so the Mamba blocks, and so the exported scans, change the
output. Exports are made once per module (they take tens of seconds on 2 cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import muse_infer
import muse_infer.ops.op  # noqa: F401  (registers muse::selective_scan for the scan-only module)
from export import ExportError, export_checkpoint, op_library_path
from export.cli import export_command
from export.modules import example_text_inputs, example_video_inputs
from export.verify import ExportedFile, verify_files
from muse_infer.loading.checkpoint import save_checkpoint
from muse_infer.ops.reference import selective_scan_ref
from muse_infer.ops.torchscript_scan import scripted_scan
from muse_infer.runtime import load_backend

TOLERANCE = 1e-4
VIDEO_FILES = ("video_encoder.onnx", "video_encoder.pt", "video_encoder.portable.pt", "video_encoder.pt2")
TEXT_FILES = ("text_encoder.onnx", "text_encoder.pt", "text_encoder.pt2")


def open_gates(model, seed: int, scale: float = 0.05):
    """Random temporal_fc weights: a fresh block is the identity, which would hide the scan."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            for p in (block.temporal_fc.weight, block.temporal_fc.bias):
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_gated.safetensors"
    save_checkpoint(open_gates(muse_infer.load_model("tiny"), seed=1), path)
    return path


@pytest.fixture(scope="module")
def tiny_export(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny"
    return export_checkpoint(tiny_checkpoint, out, ("onnx", "torchscript", "pt2"))


@pytest.fixture(scope="module")
def eager(tiny_checkpoint):
    return muse_infer.load_model(tiny_checkpoint)


def test_export_writes_every_file_and_verifies_it(tiny_export):
    names = {p.name for p in tiny_export.directory.iterdir()}
    assert names == {"manifest.json", *VIDEO_FILES, *TEXT_FILES}
    assert not list(tiny_export.directory.parent.glob(".tiny.*"))  # no staging folder left behind
    assert set(tiny_export.errors) == set(VIDEO_FILES + TEXT_FILES)
    assert max(tiny_export.errors.values()) <= TOLERANCE
    manifest = json.loads((tiny_export.directory / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "checkpoint" and manifest["embed_dim"] == 64
    video = manifest["encoders"]["video"]
    assert [i["name"] for i in video["inputs"]] == ["frames", "mask"]
    assert video["inputs"][0]["shape"] == ["batch", 12, 3, 224, 224]
    assert manifest["encoders"]["text"]["inputs"][0] == {
        "name": "ids",
        "shape": ["batch", 32],
        "dtype": "int64",
    }
    assert manifest["tokenizer"]["max_words"] == 32 and manifest["preprocessing"]["mean"][0] == pytest.approx(
        0.48145466
    )
    assert (
        video["files"]["torchscript"]["needs_op_library"]
        and not video["files"]["torchscript_portable"]["needs_op_library"]
    )
    assert video["files"]["pt2"]["needs_op_library"]
    assert not manifest["encoders"]["text"]["files"]["pt2"]["needs_op_library"]
    assert set(manifest["pt2_loading"]) == {"video_encoder.pt2", "text_encoder.pt2"}


def test_onnx_files_are_standard_and_pass_the_full_checker(tiny_export):
    for name in ("video_encoder.onnx", "text_encoder.onnx"):
        path = tiny_export.directory / name
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    ops = [node.op_type for node in onnx.load(str(tiny_export.directory / "video_encoder.onnx")).graph.node]
    assert ops.count("Scan") == 2  # 2 blocks, both directions in one Scan each, no Loop/Concat growth
    assert "Loop" not in ops


def test_op_files_call_the_fused_scan_once_per_block(tiny_export):
    """video_encoder.pt and .pt2 carry one muse::selective_scan_bidirectional per block and no
    single-direction scan; the portable file carries no muse:: op at all."""
    folder = tiny_export.directory
    traced = str(torch.jit.load(str(folder / "video_encoder.pt")).inlined_graph)
    program = str(torch.export.load(str(folder / "video_encoder.pt2")).graph)
    portable = str(torch.jit.load(str(folder / "video_encoder.portable.pt")).inlined_graph)
    for text, name in ((traced, "muse::selective_scan"), (program, "muse.selective_scan")):
        assert text.count(name + "_bidirectional") == 2  # the tiny model's 2 blocks
        assert text.count(name) == 2  # ... and no other scan call
    assert "muse::" not in portable


ONNX_ONLY = textwrap.dedent(
    """
    import sys
    import numpy as np
    import onnxruntime as ort
    folder, inputs, output = sys.argv[1:4]
    feeds = np.load(inputs)
    video = ort.InferenceSession(folder + "/video_encoder.onnx", providers=["CPUExecutionProvider"])
    text = ort.InferenceSession(folder + "/text_encoder.onnx", providers=["CPUExecutionProvider"])
    v = video.run(None, {"frames": feeds["frames"], "mask": feeds["mask"]})[0]
    t = text.run(None, {"ids": feeds["ids"]})[0]
    assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "muse_infer", "export")], "imported torch"
    np.savez(output, video=v, text=t)
    """
)

TORCHSCRIPT_DOCUMENTED = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    folder, inputs, output, library = sys.argv[1:5]
    feeds = {k: torch.from_numpy(v) for k, v in np.load(inputs).items()}
    with torch.no_grad():
        portable = torch.jit.load(folder + "/video_encoder.portable.pt")(feeds["frames"], feeds["mask"])
        text = torch.jit.load(folder + "/text_encoder.pt")(feeds["ids"])
        torch.ops.load_library(library)  # the documented loading step for video_encoder.pt
        video = torch.jit.load(folder + "/video_encoder.pt")(feeds["frames"], feeds["mask"])
    assert not [m for m in sys.modules if m.split(".")[0] in ("muse_infer", "export")]
    np.savez(output, video=video.numpy(), portable=portable.numpy(), text=text.numpy())
    """
)


PT2_DOCUMENTED = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    folder, inputs, output, library = sys.argv[1:5]
    feeds = {k: torch.from_numpy(v) for k, v in np.load(inputs).items()}
    with torch.no_grad():
        text = torch.export.load(folder + "/text_encoder.pt2").module()(feeds["ids"])
        torch.ops.load_library(library)  # the documented loading step for video_encoder.pt2
        video = torch.export.load(folder + "/video_encoder.pt2").module()(feeds["frames"], feeds["mask"])
    assert not [m for m in sys.modules if m.split(".")[0] in ("muse_infer", "export")]
    np.savez(output, video=video.numpy(), text=text.numpy())
    """
)


@pytest.fixture(scope="module")
def fresh_inputs(eager, tmp_path_factory):
    """Batch sizes 1 and 4 (the export traced batch 2): the batch dimension must be dynamic."""
    frames, mask = example_video_inputs(eager.config, 1, seed=7, real_frames=[3])
    (ids,) = example_text_inputs(eager.config, 4, seed=7)
    path = tmp_path_factory.mktemp("inputs") / "inputs.npz"
    np.savez(path, frames=frames.numpy(), mask=mask.numpy(), ids=ids.numpy())
    with torch.no_grad():
        expected = {
            "video": eager.encode_video(frames, mask).numpy(),
            "text": eager.encode_text_tokens(ids).numpy(),
        }
    return path, expected


def run_fresh(script: str, *args: str) -> dict[str, np.ndarray]:
    output = Path(args[1]).with_suffix(".out.npz")
    subprocess.run([sys.executable, "-c", script, args[0], args[1], str(output), *args[2:]], check=True)
    return dict(np.load(output))


def test_onnx_in_a_process_with_only_onnxruntime_and_numpy(tiny_export, fresh_inputs):
    inputs, expected = fresh_inputs
    got = run_fresh(ONNX_ONLY, str(tiny_export.directory), str(inputs))
    assert np.abs(got["video"] - expected["video"]).max() <= TOLERANCE
    assert np.abs(got["text"] - expected["text"]).max() <= TOLERANCE


def test_torchscript_in_a_fresh_process_after_the_documented_step(tiny_export, fresh_inputs):
    inputs, expected = fresh_inputs
    got = run_fresh(TORCHSCRIPT_DOCUMENTED, str(tiny_export.directory), str(inputs), op_library_path())
    for key in ("video", "portable"):
        assert np.abs(got[key] - expected["video"]).max() <= TOLERANCE
    assert np.abs(got["text"] - expected["text"]).max() <= TOLERANCE


def test_pt2_in_a_fresh_process_after_the_documented_step(tiny_export, fresh_inputs):
    inputs, expected = fresh_inputs
    got = run_fresh(PT2_DOCUMENTED, str(tiny_export.directory), str(inputs), op_library_path())
    assert np.abs(got["video"] - expected["video"]).max() <= TOLERANCE
    assert np.abs(got["text"] - expected["text"]).max() <= TOLERANCE


def test_backends_run_the_export_like_torch(tiny_export, tiny_checkpoint, fresh_inputs):
    inputs = np.load(fresh_inputs[0])
    torch_backend = load_backend(tiny_checkpoint, "torch", precision="fp32")  # as the export computes
    want_video = torch_backend.encode_video(inputs["frames"], inputs["mask"].astype(np.int64))
    want_text = torch_backend.encode_text_tokens(inputs["ids"])
    for name in ("onnx", "torchscript", "pt2", "torch"):
        backend = load_backend(tiny_export.directory, name, precision="fp32" if name == "torch" else "auto")
        assert backend.identity == torch_backend.identity
        assert backend.max_frames == 12 and backend.embed_dim == 64
        assert np.abs(backend.encode_video(inputs["frames"], inputs["mask"]) - want_video).max() <= TOLERANCE
        assert np.abs(backend.encode_text_tokens(inputs["ids"]) - want_text).max() <= TOLERANCE


def test_export_backends_give_clear_errors(tiny_export, tiny_checkpoint):
    from muse_infer.runtime import BackendError

    with pytest.raises(BackendError, match="muse-infer export --checkpoint"):
        load_backend(tiny_checkpoint, "onnx")
    backend = load_backend(tiny_export.directory, "onnx")
    with pytest.raises(BackendError, match="exported for 12 frames"):
        backend.encode_video(np.zeros((1, 4, 3, 224, 224), np.float32), np.ones((1, 4)))


def test_verification_catches_a_model_that_differs(tiny_export, tiny_checkpoint):
    other = open_gates(muse_infer.load_model(tiny_checkpoint), seed=2)
    files = [ExportedFile(tiny_export.directory / "video_encoder.onnx", "video", "onnx")]
    with pytest.raises(ExportError, match=r"video_encoder.onnx: \d"):
        verify_files(other, files)


def test_cli_exports_meanp_and_prints_errors(tmp_path):
    out = tmp_path / "meanp"
    runner = CliRunner()
    result = runner.invoke(
        export_command, ["--checkpoint", "tiny-meanP", "--out", str(out), "--format", "onnx"]
    )
    assert result.exit_code == 0, result.output
    assert "video_encoder.onnx: max abs error" in result.output and "text_encoder.onnx" in result.output
    assert {p.name for p in out.iterdir()} == {"manifest.json", "video_encoder.onnx", "text_encoder.onnx"}
    from muse_infer.runtime import BackendError

    with pytest.raises(BackendError, match="no pt2 text encoder in this export.*--format pt2"):
        load_backend(out, "pt2").encode_text_tokens(np.zeros((1, 32), np.int64))
    again = runner.invoke(
        export_command, ["--checkpoint", "tiny-meanP", "--out", str(out), "--format", "onnx"]
    )
    assert again.exit_code == 2 and "--overwrite" in again.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--checkpoint", "tiny", "--format", "onnx,tflite"], "tflite"),
        (["--checkpoint", "no_such_model.safetensors"], "no_such_model.safetensors"),
    ],
)
def test_cli_rejects_bad_arguments(tmp_path, arguments, message):
    result = CliRunner().invoke(export_command, [*arguments, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


class ScanOnly(torch.nn.Module):
    """One muse::selective_scan call; ``parts`` says which optional arguments it passes."""

    def __init__(self, d_inner: int, d_state: int, parts: frozenset[str]):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A = torch.nn.Parameter(-torch.rand(d_inner, d_state, generator=g) * 4)
        self.D = torch.nn.Parameter(torch.randn(d_inner, generator=g))
        self.bias = torch.nn.Parameter(torch.randn(d_inner, generator=g) * 0.5)
        self.parts = parts

    def forward(self, u, delta, B, C, z):
        p = self.parts
        return torch.ops.muse.selective_scan(
            u,
            delta if "softplus" in p else delta.abs(),
            self.A,
            B,
            C,
            self.D if "D" in p else None,
            z if "z" in p else None,
            self.bias if "bias" in p else None,
            "softplus" in p,
        )


@pytest.mark.parametrize("parts", [{"D", "z", "bias", "softplus"}, {"z"}, set(), {"D", "softplus"}])
def test_scan_translation_matches_the_reference(tmp_path, parts):
    import onnxruntime as ort

    from muse_infer.ops.onnx_scan import selective_scan_onnx

    module = ScanOnly(17, 5, frozenset(parts)).eval()
    g = torch.Generator().manual_seed(1)
    make = lambda batch: (  # noqa: E731
        *(torch.randn(batch, 17, 41, generator=g) for _ in range(2)),
        *(torch.randn(batch, 5, 41, generator=g) for _ in range(2)),
        torch.randn(batch, 17, 41, generator=g),
    )
    names = ["u", "delta", "B", "C", "z"]
    batch = torch.export.Dim("batch")
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            make(2),
            dynamo=True,
            input_names=names,
            dynamic_shapes=({0: batch},) * 5,
            opset_version=18,
            custom_translation_table={torch.ops.muse.selective_scan.default: selective_scan_onnx},
            verbose=False,
        )
        program.save(str(tmp_path / "scan.onnx"))
        onnx.checker.check_model(str(tmp_path / "scan.onnx"), full_check=True)
        args = make(3)
        ref = selective_scan_ref(
            args[0],
            args[1] if "softplus" in parts else args[1].abs(),
            module.A,
            args[2],
            args[3],
            module.D if "D" in parts else None,
            args[4] if "z" in parts else None,
            module.bias if "bias" in parts else None,
            "softplus" in parts,
        )
    session = ort.InferenceSession(str(tmp_path / "scan.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})[0]
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-4, atol=1e-5)


def test_scripted_scan_matches_the_reference():
    g = torch.Generator().manual_seed(3)
    u, delta, z = (torch.randn(2, 19, 37, generator=g) for _ in range(3))
    A = -torch.rand(19, 6, generator=g) * 4
    B, C = (torch.randn(2, 6, 37, generator=g) for _ in range(2))
    D, bias = torch.randn(19, generator=g), torch.randn(19, generator=g)
    scan = scripted_scan()
    torch.testing.assert_close(
        scan(u, delta, A, B, C, D, z, bias, True), selective_scan_ref(u, delta, A, B, C, D, z, bias, True)
    )
    torch.testing.assert_close(scan(u, delta.abs(), A, B, C), selective_scan_ref(u, delta.abs(), A, B, C))


def test_encode_videos_with_onnx_matches_torch_and_searches_across(tiny_export, tiny_checkpoint, tmp_path):
    import pyarrow.parquet as pq

    from muse_infer.cli import main

    sys.path.insert(0, str(Path(__file__).parent))
    from video_factory import make_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for i, (frames, fps) in enumerate([(30, 10.0), (8, 2.0), (50, 5.0)]):
        make_video(videos / f"v{i}.mp4", frames, fps, size=(48, 64))
    runner = CliRunner()
    common = ["--device", "cpu", "--workers", "0", "--batch-size", "2", "-q"]
    indexes = {}
    for backend, model in (("torch", tiny_checkpoint), ("onnx", tiny_export.directory)):
        out = tmp_path / f"{backend}.npy"
        result = runner.invoke(
            main,
            [
                "encode-videos",
                str(videos),
                "--out",
                str(out),
                "--model",
                str(model),
                "--backend",
                backend,
                *common,
            ],
        )
        assert result.exit_code == 0, result.output
        meta = json.loads(out.with_suffix(".json").read_text())
        meta["paths"] = pq.read_table(out.with_suffix(".rows.parquet")).column("path").to_pylist()
        indexes[backend] = (np.load(out), meta)
    (torch_rows, torch_meta), (onnx_rows, onnx_meta) = indexes["torch"], indexes["onnx"]
    assert torch_meta["paths"] == onnx_meta["paths"] and torch_meta["model"] == onnx_meta["model"]
    cosine = (
        (torch_rows * onnx_rows).sum(1)
        / np.linalg.norm(torch_rows, axis=1)
        / np.linalg.norm(onnx_rows, axis=1)
    )
    assert cosine.min() >= 0.9999
    for index, backend, extra in (
        ("onnx", "torch", []),  # the onnx index names the export folder: torch runs the model it came from
        ("torch", "onnx", ["--model", str(tiny_export.directory)]),
        ("torch", "torchscript", ["--model", str(tiny_export.directory)]),
        ("torch", "pt2", ["--model", str(tiny_export.directory)]),
    ):
        result = runner.invoke(
            main,
            [
                "search",
                "a cat",
                "--index",
                str(tmp_path / f"{index}.npy"),
                "--backend",
                backend,
                "--json",
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)) == 3
