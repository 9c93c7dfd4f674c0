"""Keyframe sampling end to end: the encoder's settings, the CLI option, the index's record of it, a
resume with the other sampling refused, moments, the decode workers and the Ray engine's decode task.

The frames themselves are checked against the reference reader in tests/test_decode_parity.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from muse_infer.video.frames import FrameSettings
from muse_infer.video.reader import read_clip

sys.path.insert(0, os.path.dirname(__file__))
from video_factory import make_video, read_index  # noqa: E402

TINY = ["--model", "tiny", "--clip-weights", "random", "--device", "cpu", "--frames", "4", "-q"]
TINY += ["--batch-size", "2", "--workers", "1", "--no-thumbnails"]


def invoke(*args, check_rc=None):
    from click.testing import CliRunner

    from muse_infer.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    if check_rc is not None:
        assert result.exit_code == check_rc, f"rc {result.exit_code}\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Two 12 s videos at 5 fps, a keyframe every 2 s (10 frames; no extra ones at "scene cuts")."""
    root = tmp_path_factory.mktemp("videos")
    every_2_s = dict(keyframe_interval=10, options={"x264-params": "scenecut=0"})
    make_video(root / "a.mp4", 60, 5, **every_2_s)
    make_video(root / "b.mkv", 60, 5, codec="libx264", **every_2_s)
    return root


def test_the_cli_offers_the_samplings_the_reader_knows():
    from muse_infer.runtime.choices import SAMPLING_CHOICES
    from muse_infer.video.frames import SAMPLINGS

    assert SAMPLING_CHOICES == SAMPLINGS


def test_frame_settings_record_keyframe_sampling_only():
    assert "sampling" not in FrameSettings().to_dict()  # the indexes made before it stay comparable
    assert FrameSettings(sampling="keyframes").to_dict()["sampling"] == "keyframes"
    with pytest.raises(ValueError, match="sampling must be one of"):
        FrameSettings(sampling="nearest")


def test_keyframe_clips_show_keyframes(videos):
    clip = read_clip(videos / "a.mp4", FrameSettings(max_frames=4, size=64, sampling="keyframes"))
    # samples at 0, 3, 7, 11 s (linspace(0, 11, 4)); keyframes every 2 s: 0, 2 (3: 2 and 4 tie), 6, 10
    assert [read_index(frame) for frame in clip] == [0, 10, 30, 50]


def test_encode_videos_sampling_keyframes_is_part_of_the_index(videos, tmp_path):
    out = tmp_path / "k.npy"
    invoke("encode-videos", videos, "--out", out, *TINY, "--sampling", "keyframes", check_rc=0)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["settings"]["sampling"] == "keyframes"
    rows = np.load(out)
    assert rows.shape[0] == 2 and np.all(np.isfinite(rows))

    before = out.read_bytes()
    refused = invoke("encode-videos", videos, "--out", out, *TINY, check_rc=2)  # exact now: refused
    assert "different settings" in refused.output and "'sampling': 'keyframes'" in refused.output
    assert out.read_bytes() == before
    invoke("encode-videos", videos, "--out", out, *TINY, "--overwrite", check_rc=0)
    assert "sampling" not in json.loads(out.with_suffix(".json").read_text())["settings"]


def test_moments_with_keyframe_sampling(videos, tmp_path):
    out = tmp_path / "m.npy"
    result = invoke(
        "encode-videos", videos, "--out", out, *TINY, "--sampling", "keyframes", "--window", "6", "--json"
    )
    summary = json.loads(result.stdout)
    assert summary["exit_code"] == 0 and summary["moments"] == 2 * 3  # 12 s: (0, 6), (3, 9), (6, 12)
    assert json.loads(out.with_suffix(".json").read_text())["settings"]["sampling"] == "keyframes"


def test_sdk_sampling_and_the_decode_workers(videos):
    from muse_infer import VideoEncoder
    from muse_infer.video.pool import DecodePool

    encoder = VideoEncoder("tiny", device="cpu", clip_weights="random", max_frames=4, sampling="keyframes")
    assert encoder.settings["sampling"] == "keyframes" and encoder.frame_settings.sampling == "keyframes"
    paths = [str(videos / "a.mp4"), str(videos / "b.mkv")]
    items = list(DecodePool(encoder.frame_settings, workers=1).imap(paths))  # workers get the sampling
    expected = read_clip(paths[0], encoder.frame_settings)
    np.testing.assert_array_equal(items[0].pixels, expected)
    assert [read_index(frame) for frame in items[1].pixels] == [0, 10, 30, 50]
    with pytest.raises(ValueError, match="sampling .fast. is not one of"):
        VideoEncoder("tiny", device="cpu", clip_weights="random", sampling="fast")


def test_ray_decode_task_follows_the_recorded_sampling(videos):
    from muse_infer.jobs.ray_engine import decode_shard

    settings = FrameSettings(max_frames=4, size=32, sampling="keyframes")
    row = {"shard": 0, "paths": json.dumps(["a.mp4"])}
    result = decode_shard(row, str(videos), settings.to_dict(), timeout=30.0, inline=True)
    np.testing.assert_array_equal(result["clips"], read_clip(videos / "a.mp4", settings))
