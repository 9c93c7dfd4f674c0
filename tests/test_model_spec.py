"""``ModelSpec``: one description of the encoder, resolved once; what it knows without loading weights;
the commands that must not load the model (a nothing-to-do rerun, a run refused by the lock); search
reusing an index's recorded CLIP weights and saying in one sentence which model an index needs."""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from video_factory import make_video  # noqa: E402

import muse_infer  # noqa: E402
from muse_infer import ModelSpec  # noqa: E402
from muse_infer.errors import BackendError, CheckpointError, ConfigError  # noqa: E402

CLI = [sys.executable, "-c", "from muse_infer.cli import main; main()"]
TINY = ["--model", "tiny", "--clip-weights", "random", "--device", "cpu", "--frames", "2", "--workers", "0"]


def run(*args, check_rc=None, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)
    if check_rc is not None:
        assert result.returncode == check_rc, f"rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spec") / "videos"
    root.mkdir()
    for i in range(3):
        make_video(root / f"clip_{i}.mp4", 5 + i, 4)
    return root


# --- the spec itself ------------------------------------------------------------------------------


def test_a_spec_knows_its_model_without_torch_or_weights():
    """Identity, sizes, frame settings and source of named, packaged and checkpoint models, in a
    process that never imports torch."""
    code = (
        "import sys, json; from muse_infer import ModelSpec\n"
        "out = {}\n"
        "for name, weights in (('tiny', 'random'), ('demo', None), ('ViT-B-32', 'random')):\n"
        "    spec = ModelSpec.resolve(name, clip_weights=weights)\n"
        "    out[name] = [spec.identity, spec.embed_dim, spec.settings, spec.source]\n"
        "out['torch'] = 'torch' in sys.modules\n"
        "print(json.dumps(out))\n"
    )
    facts = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert facts.pop("torch") is False
    for name, (identity, dim, settings, source) in facts.items():
        model = muse_infer.VideoEncoder(name, clip_weights="random" if name != "demo" else None, device="cpu")
        assert identity == model.identity, name  # the loaded model's identity, known before loading
        assert dim == model.embed_dim and settings == model.settings, name
        assert source == model.backend.source, name


def test_resolve_checks_every_choice_and_names_it(tmp_path):
    with pytest.raises(BackendError, match="backend 'tensorrt'"):
        ModelSpec.resolve("tiny", backend="tensorrt")
    with pytest.raises(BackendError, match="precision 'int8'"):
        ModelSpec.resolve("tiny", precision="int8")
    with pytest.raises(ConfigError, match="max_frames must be a positive integer"):
        ModelSpec.resolve("tiny", max_frames=0)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        ModelSpec.resolve("tiny", batch_size=-3)
    with pytest.raises(ConfigError, match="neither a checkpoint/config file nor a known model"):
        ModelSpec.resolve("no-such-model")
    with pytest.raises(CheckpointError, match="CLIP weights file not found"):
        ModelSpec.resolve("tiny", clip_weights=str(tmp_path / "gone.safetensors"))
    with pytest.raises(ConfigError, match="holds its own weights"):
        ModelSpec.resolve("demo", clip_weights="random")
    with pytest.raises(BackendError, match="runs an export directory"):
        ModelSpec.resolve("tiny", backend="onnx")


def test_clip_weights_are_parsed_once_into_random_tag_or_absolute_file(tmp_path, monkeypatch):
    from muse_infer.loading.reference import ClipWeights, parse_clip_weights

    weights = tmp_path / "clip.bin"
    weights.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert parse_clip_weights("random") == ClipWeights("random", "random")
    assert parse_clip_weights("openai") == ClipWeights("tag", "openai")
    assert parse_clip_weights("clip.bin") == ClipWeights("file", str(weights))  # absolute
    assert parse_clip_weights(None) is None
    spec = ModelSpec.resolve("tiny", clip_weights="clip.bin")
    assert spec.source == {"model": "tiny", "clip_weights": str(weights)}


def test_a_spec_travels_and_is_resolved_again_where_it_runs(tmp_path):
    """Pickled (as Ray ships it), a spec means the same files from any folder; ``replace`` resolves it
    again (a worker computes its own facts); ``on_device`` decides device, precision and batch size."""
    spec = ModelSpec.resolve("tiny", clip_weights="random", batch_size=None)
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and again.identity == spec.identity
    on_cpu = spec.on_device("cpu")
    assert on_cpu.device == "cpu" and on_cpu.batch_size == 8 and on_cpu.precision in ("fp32", "bf16")
    assert spec.replace(batch_size=3).on_device("cpu").batch_size == 3
    with pytest.raises(BackendError, match="no CUDA GPU"):
        spec.on_device("cuda:7")


def test_an_export_directory_run_by_torch_is_the_model_it_was_made_from(tmp_path):
    from export import export_checkpoint

    out = tmp_path / "exported"
    export_checkpoint("tiny", out, ("onnx",), clip_weights="random", verify=False)
    onnx = ModelSpec.resolve(out, backend="onnx")
    torch_run = ModelSpec.resolve(out)  # backend torch: the exported model's own source
    assert torch_run.ref.kind == "named" and torch_run.source == {"model": "tiny", "clip_weights": "random"}
    assert onnx.identity == torch_run.identity
    with pytest.raises(BackendError, match="exported in fp32, not bf16"):
        ModelSpec.resolve(out, backend="onnx", precision="bf16").on_device("cpu")


def test_encoders_take_a_spec_and_refuse_choices_beside_it():
    spec = ModelSpec.resolve("tiny", clip_weights="random", device="cpu", precision="fp32", max_frames=3)
    encoder = muse_infer.VideoEncoder(spec)
    assert encoder.frame_settings.max_frames == 3 and encoder.backend.precision == "fp32"
    assert encoder.spec.device == "cpu" and encoder.spec.batch_size == 8
    with pytest.raises(ValueError, match="precision given with a ModelSpec"):
        muse_infer.TextEncoder(spec, precision="bf16")


# --- commands that must not load the model -------------------------------------------------------


def test_a_rerun_with_nothing_to_do_never_loads_the_model(videos, tmp_path):
    out = tmp_path / "emb.npy"
    first = run("encode-videos", videos, "--out", out, *TINY, check_rc=0)
    assert "loading model tiny" in first.stderr
    sidecar = (tmp_path / "emb.json").read_bytes()
    again = run("encode-videos", videos, "--out", out, *TINY, check_rc=0)
    assert "loading model" not in again.stderr and "3 already done" in again.stderr
    assert (tmp_path / "emb.json").read_bytes() == sidecar


def test_a_run_refused_by_the_lock_never_loads_the_model(videos, tmp_path):
    out = tmp_path / "emb.npy"
    parts = tmp_path / "emb.npy.parts"
    parts.mkdir()
    with open(parts / "lock", "a") as handle:  # as a run in progress holds it
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = run("encode-videos", videos, "--out", out, *TINY, check_rc=2)
    assert "another encode-videos run is writing" in refused.stderr
    assert "loading model" not in refused.stderr
    assert not out.exists()


def test_overwrite_keeps_the_index_when_the_model_fails_to_load(videos, tmp_path):
    """--overwrite with a model that cannot load (a truncated checkpoint): the earlier index is kept."""
    out = tmp_path / "emb.npy"
    run("encode-videos", videos, "--out", out, *TINY, check_rc=0)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    broken = tmp_path / "broken.safetensors"
    good = Path(muse_infer.__file__).parent / "weights" / "demo.safetensors"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # header intact, weights cut
    result = run(
        "encode-videos", videos, "--out", out, "--model", broken, "--workers", "0", "--overwrite", check_rc=2
    )
    assert "Error:" in result.stderr
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != broken.name}
    assert after == before and not (tmp_path / "emb.npy.parts").exists()


# --- search: the index's model, its weights, one sentence on a mismatch --------------------------


@pytest.fixture(scope="module")
def random_vit_index(tmp_path_factory) -> Path:
    """A 3-row index recorded as made by ViT-B-32 with random CLIP weights (written without loading it)."""
    from muse_infer.index import write_index

    out = tmp_path_factory.mktemp("vit") / "emb.npy"
    rows = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    spec = ModelSpec.resolve("ViT-B-32", clip_weights="random")
    write_index(out, rows, ["a.mp4", "b.mp4", "c.mp4"], model=spec, root=str(out.parent))
    return out


def test_search_with_the_index_model_named_reuses_its_recorded_clip_weights(random_vit_index):
    """`search --model ViT-B-32` on an index made with --clip-weights random searches with random
    weights, offline, instead of asking for the pretrained ones."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = run("search", "a cat", "--index", random_vit_index, "--model", "ViT-B-32", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 3


def test_another_model_gets_one_sentence_naming_the_index_model(random_vit_index):
    result = run("search", "a cat", "--index", random_vit_index, "--model", "demo", check_rc=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:")
    assert "--model ViT-B-32 --clip-weights random" in lines[0] and "config fields" not in lines[0]
    assert "loading model" not in result.stderr
