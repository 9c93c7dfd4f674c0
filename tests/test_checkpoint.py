"""Checkpoints: round trip, clear errors, no pickle executed, and the CLIP4Clip converter."""

import json
import pickle
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import save_file

from muse_infer import load_model
from muse_infer.loading.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_torch_state_dict,
    save_checkpoint,
)
from muse_infer.loading.convert import ConversionError, convert_clip4clip, to_authors_state_dict


@pytest.fixture(scope="module")
def tiny():
    model = load_model("tiny")
    with torch.no_grad():
        model.blocks[0].temporal_fc.weight.normal_(0, 0.05)  # make the blocks matter
    return model


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    return save_checkpoint(tiny, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def video(frames=3):
    return torch.randn(1, frames, 3, 224, 224, generator=torch.Generator().manual_seed(0)), torch.ones(
        1, frames
    )


def test_round_trip_keeps_weights_and_config(tiny, saved):
    loaded = load_model(saved)
    assert loaded.config == tiny.config
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(*video()), tiny.encode_video(*video()), rtol=0, atol=0)


def test_saved_file_gets_the_usual_mode_not_the_temporary_files(tiny, tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = save_checkpoint(tiny, tmp_path / "model.safetensors")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_truncated_file_gives_a_clear_error(saved, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="broken.safetensors.*truncated"):
        load_checkpoint(broken)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nothing.safetensors"):
        load_model(tmp_path / "nothing.safetensors")


def _rewrite(saved, path, edit):
    from safetensors import safe_open

    with safe_open(str(saved), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = handle.metadata()
    edit(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_wrong_shape_names_the_key(saved, tmp_path):
    def shrink(tensors, _):
        tensors["blocks.0.temporal_fc.weight"] = torch.zeros(3, 3)

    with pytest.raises(CheckpointError, match=r"'blocks.0.temporal_fc.weight' has shape \(3, 3\)"):
        load_checkpoint(_rewrite(saved, tmp_path / "shape.safetensors", shrink))


def test_missing_key_names_it(saved, tmp_path):
    def drop(tensors, _):
        del tensors["pyramid.branches.1.0.weight"]

    with pytest.raises(CheckpointError, match="missing key 'pyramid.branches.1.0.weight'"):
        load_checkpoint(_rewrite(saved, tmp_path / "missing.safetensors", drop))


def test_unexpected_key_and_foreign_file(saved, tmp_path):
    def add(tensors, _):
        tensors["surprise"] = torch.zeros(1)

    with pytest.raises(CheckpointError, match="unexpected key 'surprise'"):
        load_checkpoint(_rewrite(saved, tmp_path / "extra.safetensors", add))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="no muse-infer config.*muse-infer convert"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_pickle_is_never_executed(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "evil.bin"
    with open(path, "wb") as handle:
        pickle.dump({"clip.x": Exploit()}, handle)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's own warnings must not reach the user
        with pytest.raises(CheckpointError, match="pickled Python objects") as refused:
            read_torch_state_dict(path)
    assert "weights_only=False" not in str(refused.value)  # never suggest the unsafe way
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, bytes(range(256)) * 8])
def test_a_damaged_weights_file_is_named_as_such(tmp_path, content):
    path = tmp_path / "weights.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a PyTorch weights file or a damaged one"):
        read_torch_state_dict(path)


def test_converter_round_trips_the_authors_layout(tiny, tmp_path):
    state = {"module." + k: v for k, v in to_authors_state_dict(tiny).items()}
    state["module.similarity_dense.weight"] = torch.zeros(1, 64)  # a key MUSE does not use
    path = tmp_path / "pytorch_model.bin.4"
    torch.save(state, path)
    converted, report = convert_clip4clip(read_torch_state_dict(path))
    assert report.unused_keys == ["similarity_dense.weight"]
    assert (
        converted.config.num_blocks == tiny.config.num_blocks
        and converted.config.embed_dim == tiny.config.embed_dim
    )
    assert converted.state_dict().keys() == tiny.state_dict().keys()
    for key, value in tiny.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key


def test_converter_refuses_missing_pyramid_unless_asked(tiny):
    state = {k: v for k, v in to_authors_state_dict(tiny).items() if not k.startswith("mamba_stages.")}
    with pytest.raises(ConversionError, match="--init-pyramid"):
        convert_clip4clip(state)
    model, report = convert_clip4clip(state, init_missing_pyramid=True)
    assert report.pyramid_initialised
    again, _ = convert_clip4clip(state, init_missing_pyramid=True)
    assert torch.equal(model.pyramid.branches[0][1].weight, again.pyramid.branches[0][1].weight)  # seeded


def test_meanp_state_dict_converts_to_the_baseline(tiny):
    clip_only = {k: v for k, v in to_authors_state_dict(tiny).items() if k.startswith("clip.")}
    model, _ = convert_clip4clip(clip_only)
    assert model.config.is_mean_pooling and len(model.blocks) == 0 and model.pyramid is None


def test_convert_cli(tiny, tmp_path):
    path = tmp_path / "pytorch_model.bin.1"
    torch.save(
        {k: v for k, v in to_authors_state_dict(tiny).items() if not k.startswith("mamba_stages.")}, path
    )
    out = tmp_path / "converted.safetensors"
    command = [
        sys.executable,
        "-m",
        "muse_infer.cli",
        "convert",
        "--from",
        "clip4clip",
        str(path),
        "--out",
        str(out),
    ]
    refused = subprocess.run(command, capture_output=True, text=True)
    assert (
        refused.returncode == 2 and "--init-pyramid" in refused.stderr and "Traceback" not in refused.stderr
    )
    done = subprocess.run(command + ["--init-pyramid"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "freshly initialised" in done.stdout
    assert json.loads(json.dumps(load_checkpoint(out).config.to_dict()))["num_blocks"] == 2
