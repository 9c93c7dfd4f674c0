"""The offline demo: `muse-infer demo` exits 0 with every query's own video first, quickly, offline;
the packaged demo model is small and never a default."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import muse_infer
from muse_infer.loading.checkpoint import read_checkpoint

DEMO_WEIGHTS = Path(muse_infer.__file__).parent / "weights" / "demo.safetensors"
needs_weights = pytest.mark.skipif(
    not DEMO_WEIGHTS.is_file(), reason="muse_infer/weights/demo.safetensors absent"
)


@needs_weights
@pytest.mark.parametrize("sampling", ["exact", "keyframes"])
def test_demo_command_hits_every_query_offline_and_fast(sampling):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "no_proxy": "*",
        "http_proxy": "http://127.0.0.1:9",
    }
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "muse_infer.cli", "demo", "--sampling", sampling],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    seconds = time.perf_counter() - began
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("[HIT ]") == 6 and "[MISS]" not in done.stdout, done.stdout
    assert "6/6 queries ranked their own video first" in done.stdout
    assert f"{sampling} sampling" in done.stdout
    assert seconds < 60, f"demo took {seconds:.1f} s"


@needs_weights
def test_demo_model_is_small_and_labelled():
    assert DEMO_WEIGHTS.stat().st_size < 5 * 2**20
    config, tensors, metadata = read_checkpoint(DEMO_WEIGHTS)
    assert "synthetic" in metadata["intended_use"]
    assert config.num_blocks > 0  # a MUSE model, not the meanP baseline
    from muse_infer.loading import available_models

    assert "demo" in available_models()


def test_demo_is_not_the_default_model():
    from muse_infer.cli import main

    for name, command in main.commands.items():
        for param in command.params:
            if param.name == "model" and name != "demo":
                assert param.default != "demo", f"`muse-infer {name}` defaults to the demo model"


def test_a_missed_query_exits_non_zero(monkeypatch):
    from click.testing import CliRunner

    from muse_infer import demo
    from muse_infer.cli.evaluate import demo_command

    def fake_run(model, seed, count, device, keep=None, sampling="exact"):
        return [
            demo.QueryResult("a red circle", "demo_0.mp4", [("demo_0.mp4", 0.9), ("demo_1.mp4", 0.1)]),
            demo.QueryResult("a blue square", "demo_1.mp4", [("demo_0.mp4", 0.8), ("demo_1.mp4", 0.7)]),
        ]

    monkeypatch.setattr(demo, "run_demo", fake_run)
    result = CliRunner().invoke(demo_command, [])
    assert result.exit_code == 1
    assert "[MISS] 'a blue square'" in result.output and "1/2 queries" in result.output


def test_tie_for_first_is_not_a_hit():
    from muse_infer.demo import QueryResult

    assert not QueryResult("q", "a.mp4", [("a.mp4", 0.5), ("b.mp4", 0.5)]).hit
    assert QueryResult("q", "a.mp4", [("a.mp4", 0.5), ("b.mp4", 0.4)]).hit
