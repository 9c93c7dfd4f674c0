"""Moments: window planning, the single-pass window reader, decode workers sending windows, the
encode job writing a row a window (resume, grow, failures, refusals), and search grouping moments.

The must-show check: a long video of several synthetic scenes, encoded with the packaged demo model
through the command line (``--window 6 --stride 3``), found by each scene's caption with a time range
overlapping that scene.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from muse_infer.video.frames import FrameSettings
from muse_infer.video.reader import DecodeStats, read_clip, read_window_clip
from muse_infer.video.window_reader import read_windows
from muse_infer.video.windows import (
    WindowSettings,
    default_window,
    plan_windows,
    sample_times,
    shot_windows,
    window_settings,
)

sys.path.insert(0, str(Path(__file__).parent))
from conftest import hang_env  # noqa: E402
from video_factory import make_video, read_index  # noqa: E402

SMALL = FrameSettings(max_frames=4, framerate=1.0, slice_mode="uniform", size=32)


# --- planning ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration, window, stride, expected",
    [
        (20.0, 6.0, 3.0, [(0, 6), (3, 9), (6, 12), (9, 15), (12, 18), (14, 20)]),
        (12.0, 6.0, 3.0, [(0, 6), (3, 9), (6, 12)]),  # the last window ends with the video exactly
        (6.0, 6.0, 3.0, [(0, 6)]),  # no longer than the window: one row
        (2.5, 6.0, 3.0, [(0, 2.5)]),
        (0.0, 6.0, 3.0, [(0, 0)]),  # a one-frame video whose duration nobody records
        (13.0, 6.0, 6.0, [(0, 6), (6, 12), (7, 13)]),
        (6.5, 6.0, 3.0, [(0, 6), (0.5, 6.5)]),
    ],
)
def test_plan_windows(duration, window, stride, expected):
    assert plan_windows(duration, window, stride) == [(float(a), float(b)) for a, b in expected]


def test_plan_windows_covers_awkward_durations():
    rng = random.Random(11)
    for _ in range(300):
        window = rng.uniform(0.5, 20)
        stride = rng.uniform(0.1, 1) * window
        duration = rng.choice([rng.uniform(0, 3 * window), rng.uniform(0, 400), window, 2 * window])
        plan = plan_windows(duration, window, stride)
        if duration <= window:
            assert plan == [(0.0, duration)]
            continue
        starts = [start for start, _ in plan]
        assert plan[0][0] == 0 and plan[-1][1] == duration  # from the start to the end exactly
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        assert all(math.isclose(end - start, window, abs_tol=2e-6) for start, end in plan)
        gaps = np.diff(starts)
        assert np.all(gaps <= stride + 2e-6), "a part of the video in no window"
        assert np.allclose(gaps[:-1], stride, atol=2e-6)


def test_window_settings_defaults_come_from_the_model():
    assert default_window(FrameSettings(max_frames=12, framerate=1.0)) == 12.0
    assert window_settings(FrameSettings(max_frames=12), None, None) == WindowSettings(12.0, 6.0)
    assert window_settings(FrameSettings(max_frames=4, framerate=2.0), None, 1.0) == WindowSettings(2.0, 1.0)
    with pytest.raises(ValueError, match="stride 13 s is longer than the window 12 s"):
        window_settings(FrameSettings(max_frames=12), None, 13)
    with pytest.raises(ValueError, match="positive"):
        WindowSettings(0, 1)


def test_shot_windows_split_long_shots_and_merge_short_ones():
    # shots [0, 4), [4, 4.5) (short: joins the shot before), [4.5, 20) (split), cuts outside ignored
    windows = shot_windows(20.0, [4.0, 4.5, -1.0, 25.0], window=6.0, stride=3.0)
    assert windows == [(0.0, 4.5), (4.5, 10.5), (7.5, 13.5), (10.5, 16.5), (13.5, 19.5), (14.0, 20.0)]
    assert shot_windows(10.0, [], 6.0, 3.0) == plan_windows(10.0, 6.0, 3.0)
    assert shot_windows(10.0, [0.5], 6.0, 3.0)[0] == (0.0, 6.0)  # a short first shot joins the next


def test_sample_times_follow_the_whole_video_rule_on_the_window():
    settings = FrameSettings(max_frames=4, framerate=1.0)
    assert sample_times(10.0, 13.0, settings) == [10.0, 11.0, 12.0]
    assert sample_times(10.0, 22.0, settings) == [10.0, 13.0, 17.0, 21.0]  # linspace(0, 11, 4) floored
    assert sample_times(5.0, 5.0, settings) == [5.0]


# --- the single-pass reader -------------------------------------------------------------------------


def packet_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)


@pytest.mark.parametrize(
    "frames, fps, gop, window, stride, ext",
    [
        (93, 5, 7, 6.0, 3.0, ".mp4"),
        (50, 2.5, None, 7.3, 2.1, ".mkv"),
        (10, 5, None, 6.0, 3.0, ".mp4"),
        (121, 10, 30, 4.0, 4.0, ".webm"),
        (64, 3, 5, 2.9, 1.3, ".mp4"),
    ],
)
def test_read_windows_equals_reading_each_window_on_its_own(tmp_path, frames, fps, gop, window, stride, ext):
    path = make_video(tmp_path / f"v{ext}", frames, fps, keyframe_interval=gop)
    stats = DecodeStats()
    clips = list(read_windows(path, SMALL, WindowSettings(window, stride), stats))
    duration = frames / fps
    assert [(c.start_s, c.end_s) for c in clips] == plan_windows(duration, window, stride)
    for clip in clips:  # the reference opens the file and seeks to each window
        np.testing.assert_array_equal(clip.pixels, read_window_clip(path, SMALL, clip.start_s, clip.end_s))
        shown = [read_index(frame) for frame in clip.pixels]
        expected = [math.floor(t * fps + 1e-9) for t in sample_times(clip.start_s, clip.end_s, SMALL)]
        assert shown == expected
    if len(clips) == 1:
        np.testing.assert_array_equal(clips[0].pixels, read_clip(path, SMALL))
    assert stats.seeks == 0 and stats.packets_decoded <= packet_count(path)


def test_a_long_video_is_decoded_once_with_memory_bounded_by_the_window(tmp_path):
    """5 minutes at 2 fps (the 60-minute run is in benchmarks/bench_moments.py and the slow test)."""
    settings, windows = FrameSettings(max_frames=12, size=32), WindowSettings(12.0, 6.0)
    peaks = []
    for minutes in (1, 5):
        path = make_video(tmp_path / f"{minutes}.mp4", minutes * 120, 2, size=(48, 64), keyframe_interval=20)
        stats = DecodeStats()
        count = sum(1 for _ in read_windows(path, settings, windows, stats))
        assert count == len(plan_windows(minutes * 60.0, 12.0, 6.0))
        total = packet_count(path)
        # Every packet decoded once, in one pass: no seek, none twice; only the frames after the last
        # sample time (less than a second here) are left undecoded.
        assert stats.seeks == 0 and total - 2 <= stats.packets_decoded <= total
        assert stats.frames_decoded == stats.packets_decoded
        assert stats.probe_packets <= 20 + 2  # the end probe demuxes the last keyframe interval only
        peaks.append(stats.peak_frames_held)
    assert peaks[0] == peaks[1] <= 12 * (math.ceil(12 / 6) + 1)  # frames held: the window's, not the video's


@pytest.mark.slow
def test_a_60_minute_video_is_decoded_once(tmp_path):
    from muse_infer.data.writer import write_video

    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    path = tmp_path / "hour.mp4"
    write_video(path, np.repeat(frames, 2 * 3600 // 2, axis=0), 2, options={"preset": "fast"})
    stats = DecodeStats()
    count = sum(1 for _ in read_windows(path, FrameSettings(size=32), WindowSettings(12.0, 6.0), stats))
    total = packet_count(path)
    assert count == len(plan_windows(3600.0, 12.0, 6.0))
    assert stats.seeks == 0 and total - 2 <= stats.packets_decoded <= total
    assert stats.peak_frames_held <= 12 * 3


# --- decode workers --------------------------------------------------------------------------------


def test_decode_workers_send_each_videos_windows(tmp_path):
    from muse_infer.video.pool import DecodePool, decode_inline

    paths = [make_video(tmp_path / "a.mp4", 93, 5), str(tmp_path / "missing.mp4")]
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    paths += [str(tmp_path / "bad.mp4"), make_video(tmp_path / "b.mkv", 12, 4)]
    windows = WindowSettings(6.0, 3.0)

    def summary(items):
        return [
            (d.index, d.span, d.final, d.error, None if d.pixels is None else d.pixels.tobytes())
            for d in items
        ]

    inline = summary(decode_inline(paths, SMALL, windows))
    assert summary(DecodePool(SMALL, 2, windows=windows).imap(paths)) == inline
    finals = [(index, error is None) for index, _, final, error, _ in inline if final]
    assert [f[0] for f in finals] == [0, 1, 2, 3] and [f[1] for f in finals] == [True, False, False, True]
    assert sum(1 for item in inline if item[0] == 0 and not item[2]) == len(plan_windows(93 / 5, 6, 3))


def test_the_timeout_counts_from_the_last_window(tmp_path, monkeypatch):
    """A long video whose windows keep coming is not cut off; one that stops producing them is."""
    from muse_infer.video.pool import DecodePool

    for key, value in hang_env("hang.mp4=60").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MUSE_TEST_SLOW_WINDOWS", "slow.mp4=1.2")
    slow = make_video(tmp_path / "slow.mp4", 40, 2)  # 6 windows, 1.2 s each: 7 s > the 3 s timeout
    hang = make_video(tmp_path / "hang.mp4", 8, 2)
    items = list(DecodePool(SMALL, 2, timeout=3.0, windows=WindowSettings(6.0, 3.0)).imap([slow, hang]))
    finals = {item.index: item.error for item in items if item.final}
    assert finals[0] is None and sum(not item.final for item in items if item.index == 0) == 6
    assert "timed out after 3 s" in finals[1]
