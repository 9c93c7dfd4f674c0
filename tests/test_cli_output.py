"""What the commands write on stderr when nobody asked for more: `index build` logs its steps only with
-v; `train` shows its progress as plain lines when stderr is a file (a bar only on a terminal), keeps
its decoded frames in --cache-dir, and says nothing with -q. Each runs the real command in a fresh
process, as a person or a job scheduler would, with stderr going to a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from muse_infer.config import load_config
from muse_infer.progress import LineProgress

CLI = [sys.executable, "-c", "from muse_infer.cli import main; main()"]


def run_to_files(args, folder: Path, env: dict | None = None) -> tuple[int, str, str]:
    """Run the CLI with stdout and stderr going to files (not a terminal, not a pipe); (rc, out, err)."""
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        rc = subprocess.run(
            [*CLI, *map(str, args)], stdout=stdout, stderr=stderr, env=env, timeout=600
        ).returncode
    return rc, out.read_text(), err.read_text()


def test_index_build_logs_its_steps_only_with_v(tmp_path):
    from muse_infer.index import write_index

    rng = np.random.default_rng(0)
    index = tmp_path / "emb.npy"
    write_index(index, rng.standard_normal((40, 16)).astype(np.float32), [f"v{n}.mp4" for n in range(40)])

    rc, out, err = run_to_files(["index", "build", index], tmp_path)
    assert rc == 0 and out.startswith("flat (exact search) for 40 rows"), (out, err)
    assert err == ""  # no INFO lines without -v

    rc, out, err = run_to_files(["index", "build", index, "-v"], tmp_path)
    assert (
        rc == 0 and err.startswith("INFO muse_infer.index.build: ") and "building flat for 40 rows" in err
    ), err


def test_line_progress_repeats_no_line_at_close():
    lines = []

    class Stream:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    bar = LineProgress(2, "epoch 1/1", "step", Stream(), every=0.0)  # a line at every update
    bar.update(1, loss="2.5")
    bar.update(1, loss="2.4")
    bar.close()
    bar.close()
    said = [line for line in lines if line != "\n"]
    assert [line.split(", ")[:2] for line in said] == [
        ["epoch 1/1: 1/2 steps", "2.5 loss"],
        ["epoch 1/1: 2/2 steps", "2.4 loss"],
    ]


def small_tiny_clip() -> dict:
    """The tiny model's CLIP at 64 px (a 2x2 patch grid): a training step takes well under a second."""
    clip = load_config("tiny").clip
    return {**clip, "vision_cfg": {**clip["vision_cfg"], "image_size": 64}}


def test_train_progress_in_a_log_file_and_its_cache_dir(tmp_path):
    from muse_infer.data.synthetic import generate_synthetic_benchmark

    data = tmp_path / "data"
    generate_synthetic_benchmark(data, seed=3, sizes={"train": 16, "val": 8}, workers=1)
    home = tmp_path / "home"  # the default cache would be under it: it must stay unused
    env = {**os.environ, "HOME": str(home)}
    env.pop("MUSE_FRAME_CACHE", None)
    cache = tmp_path / "frames"
    common = [
        "train", "--model", "tiny", "--clip-weights", "random", "--layout", "jsonl",
        "--train", data / "train.jsonl", "--val", data / "val.jsonl", "--epochs", "1", "--batch-size", "8",
        "--threads", "1", "--cache-dir", cache, "--set", "max_frames=4", "--set", "decode_workers=1",
        "--set", "model_overrides=" + json.dumps({"clip": small_tiny_clip()}),
    ]  # fmt: skip
    rc, out, err = run_to_files([*common, "--out-dir", tmp_path / "run"], tmp_path, env)
    assert rc == 0, err
    assert json.loads(out)["steps"] == 2
    lines = err.splitlines()
    assert "\r" not in err and "Traceback" not in err
    assert lines[0] == "building model tiny on cpu"
    assert f"training data: 16 captions of 16 videos; frames cached in {cache}" in lines
    assert any(line.startswith("decoding frames: 16/16 videos") for line in lines), lines
    assert any(line.startswith("decoding frames: 8/8 videos") for line in lines), lines
    assert [line for line in lines if line.startswith("epoch 1/1: 2/2 steps, ")], lines
    assert any(line.startswith("validating: 8/8 videos") for line in lines), lines
    assert lines[-1].startswith("epoch 1/1: train loss ") and "saved" in lines[-1], lines
    assert len(list(cache.rglob("*.npy"))) == 24 and not home.exists()  # the frames went to --cache-dir

    from click.testing import CliRunner

    from training.cli import train_command

    quiet = CliRunner().invoke(train_command, [*map(str, common[1:]), "--out-dir", tmp_path / "quiet", "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.output  # -q: no progress, only the summary
    assert json.loads(quiet.stdout)["steps"] == 2
