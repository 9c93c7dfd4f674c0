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
import subprocess
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
        (13.0, 6.0, 6.0, [(0, 6), (6, 13)]),  # (7, 13) would start 1 s after (6, 12): stretched instead
        (6.5, 6.0, 3.0, [(0, 6.5)]),  # (0.5, 6.5) would start 0.5 s after (0, 6): one row
        (7.5, 6.0, 3.0, [(0, 6), (1.5, 7.5)]),  # half a stride apart: two rows
        (4.004, 4.0, 2.0, [(0, 4.004)]),  # issue 19: was (0, 4) and (0.004, 4.004), near-identical rows
        (16.2, 6.0, 3.0, [(0, 6), (3, 9), (6, 12), (9, 16.2)]),
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
        assert all(math.isclose(end - start, window, abs_tol=2e-6) for start, end in plan[:-1])
        last = plan[-1][1] - plan[-1][0]  # the window aligned to the end, or the one before stretched
        assert window - 2e-6 <= last <= window + stride / 2 + 2e-6
        gaps = np.diff(starts)
        assert np.all(gaps <= stride + 2e-6), "a part of the video in no window"
        assert np.all(gaps >= stride / 2 - 2e-6), "two windows start less than half a stride apart"
        assert np.allclose(gaps[:-1], stride, atol=2e-6)
        if duration < window + stride / 2 - 1e-6:
            assert plan == [(0.0, duration)]


def test_window_settings_defaults_come_from_the_model():
    assert default_window(FrameSettings(max_frames=12, framerate=1.0)) == 12.0
    assert window_settings(FrameSettings(max_frames=12), None, None) == WindowSettings(12.0, 6.0)
    assert window_settings(FrameSettings(max_frames=4, framerate=2.0), None, 1.0) == WindowSettings(2.0, 1.0)
    with pytest.raises(ValueError, match="stride 13 s is longer than the window 12 s"):
        window_settings(FrameSettings(max_frames=12), None, 13)
    with pytest.raises(ValueError, match="positive"):
        WindowSettings(0, 1)
    with pytest.raises(ValueError, match="at least 0.1 s"):
        WindowSettings(6, 0.01)


def test_shot_windows_split_long_shots_and_merge_short_ones():
    # shots [0, 4), [4, 4.5) (short: joins the shot before), [4.5, 20) (split), cuts outside ignored
    windows = shot_windows(20.0, [4.0, 4.5, -1.0, 25.0], window=6.0, stride=3.0)
    assert windows == [
        (0.0, 4.5),
        (4.5, 10.5),
        (7.5, 13.5),
        (10.5, 16.5),
        (13.5, 20.0),
    ]  # (14, 20): too close
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
    """1 and 5 minutes at 2 fps: the same frames held whatever the length (60 minutes: the next test and
    benchmarks/bench_moments.py, which also measures the RSS)."""
    settings, windows = FrameSettings(max_frames=12, size=32), WindowSettings(12.0, 6.0)
    peaks = []
    for minutes in (1, 5):
        path = make_video(tmp_path / f"{minutes}.mp4", minutes * 120, 2, size=(48, 64), keyframe_interval=20)
        stats = DecodeStats()
        count = sum(1 for _ in read_windows(path, settings, windows, stats))
        assert count == len(plan_windows(minutes * 60.0, 12.0, 6.0))
        total = packet_count(path)
        # One pass: no seek, no packet sent to the decoder twice; the planned cursor sends only what the
        # sampled frames need (from the keyframe before each) and marks the others' non-reference frames.
        assert stats.seeks == stats.fallbacks == 0 and stats.packets_decoded <= total
        assert stats.frames_decoded <= stats.packets_decoded
        assert stats.probe_packets <= 20 + 2  # the end probe demuxes the last keyframe interval only
        peaks.append(stats.peak_frames_held)
    assert peaks[0] == peaks[1] <= 12 * (math.ceil(12 / 6) + 1)  # frames held: the window's, not the video's


def test_reading_windows_leaves_no_reference_cycles_per_frame(tmp_path):
    """PyAV 18 ties a frame and its side data in a cycle: reading it per sampled frame kept every frame's
    buffers until a garbage collection (RSS grew with the video); the display matrix is read once."""
    import gc

    path = make_video(tmp_path / "v.mp4", 600, 2, size=(48, 64))
    gc.collect()
    gc.disable()
    try:
        count = sum(1 for _ in read_windows(path, SMALL, WindowSettings(12.0, 6.0)))
        cycles = gc.collect()
    finally:
        gc.enable()
    assert count == 49 and cycles < 50, cycles  # 300 sampled frames: the bug left >= 600 objects


def test_a_60_minute_video_is_decoded_once(tmp_path):
    """The must-show: an hour at 2 fps, 64x48 (2 s here: generating it is quick)."""
    from muse_infer.data.writer import write_video

    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    path = tmp_path / "hour.mp4"
    write_video(path, np.repeat(frames, 2 * 3600 // 2, axis=0), 2, options={"preset": "fast"})
    stats = DecodeStats()
    count = sum(1 for _ in read_windows(path, FrameSettings(size=32), WindowSettings(12.0, 6.0), stats))
    total = packet_count(path)
    assert count == len(plan_windows(3600.0, 12.0, 6.0))
    assert stats.seeks == stats.fallbacks == 0 and stats.packets_decoded <= total  # one pass, none twice
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


def test_moment_batches_give_the_same_rows_however_they_are_formed(tmp_path):
    """Windows batched across videos (any batch size; ahead=1 is how a GPU backend runs) give each video
    the rows of its windows encoded one by one, failures in place."""
    from muse_infer import VideoEncoder
    from muse_infer.encoders import _MomentBatcher
    from muse_infer.video.pool import decode_inline

    encoder = VideoEncoder("tiny", device="cpu", clip_weights="random", max_frames=3)
    paths = [
        make_video(tmp_path / "a.mp4", 23, 2),
        str(tmp_path / "gone.mp4"),
        make_video(tmp_path / "b.mp4", 5, 2),
    ]
    paths.append(make_video(tmp_path / "c.mp4", 31, 3))
    windows = WindowSettings(3.0, 2.0)
    clips = [d for d in decode_inline(paths, encoder.frame_settings, windows) if not d.final]
    alone = [encoder.submit([clip.pixels]).result()[0] for clip in clips]  # every window on its own
    for batch_size, ahead in [(1, 0), (3, 1), (7, 0), (64, 1)]:
        groups = list(
            _MomentBatcher(encoder, batch_size, ahead).run(
                decode_inline(paths, encoder.frame_settings, windows)
            )
        )
        results = [r for group in groups for r in group]
        assert [r.index for r in results] == [0, 1, 2, 3] and results[1].error == "file not found"
        got = np.concatenate([r.embedding for r in results if r.error is None])
        np.testing.assert_allclose(got, np.stack(alone), atol=1e-5)
        spans = [span for r in results if r.error is None for span in r.spans]
        assert spans == [clip.span for clip in clips]


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


# --- search: moments grouped per video -----------------------------------------------------------------


def moments_index(tmp_path, seed: int, videos: int = 40, dim: int = 16, name: str = "m.npy", full=False):
    """An index of moments: each video a random walk of windows (neighbours alike), spans planned."""
    from muse_infer.index import write_index

    rng = np.random.default_rng(seed)
    rows, paths, starts, ends = [], [], [], []
    for number in range(videos):
        plan = plan_windows(float(rng.uniform(2, 90)), 6.0, 3.0)
        walk = rng.normal(size=dim) + np.cumsum(rng.normal(scale=0.3, size=(len(plan), dim)), axis=0)
        rows.append(walk)
        paths += [f"{Path(name).stem}/v{number:03d}.mp4"] * len(plan)
        starts += [s for s, _ in plan]
        ends += [e for _, e in plan]
    embeddings = np.concatenate(rows).astype(np.float32)
    written = write_index(tmp_path / name, embeddings, paths, start_s=starts, end_s=ends)
    return (written, embeddings, (paths, starts, ends)) if full else (written, embeddings)


def reference_moments(index, vector: np.ndarray, top_k: int, per_video: int):
    """The grouping over every row, scored exactly: what search must return."""
    from muse_infer.index.moments import group_moments
    from muse_infer.index.search import row_scores

    scores = row_scores(np.asarray(index.embeddings), vector)
    order = np.lexsort((np.arange(len(scores)), -scores))
    moments = group_moments(order, scores[order], index.paths.__getitem__, index.span, top_k, per_video)
    return [(m.path, m.start_s, m.end_s, m.row) for m in moments]


def test_group_moments_merges_overlapping_windows_that_score_alike():
    from muse_infer.index.moments import group_moments

    spans = {0: (0, 6), 1: (3, 9), 2: (6, 12), 3: (30, 36), 4: (0, 6), 5: (9, 15), 6: (33, 39)}
    paths = {0: "a", 1: "a", 2: "a", 3: "a", 4: "b", 5: "a", 6: "a"}
    rows = np.array([1, 0, 4, 3, 2, 5, 6])
    scores = np.array([0.9, 0.89, 0.8, 0.7, 0.6, 0.5, 0.69], np.float32)  # search order
    moments = group_moments(rows, scores, paths.__getitem__, spans.__getitem__, top_k=5, per_video=2)
    found = [(m.path, m.start_s, m.end_s, m.row, sorted(m.rows)) for m in moments]
    # 0 joins 1 (overlaps, 0.01 below); 2 overlaps the moment but scores far below: dropped; 5 overlaps
    # nothing of "a" once 2 is dropped... but "a" already has 2 moments; 6 overlaps 3's moment and joins it.
    assert found == [
        ("a", 0, 9, 1, [0, 1]),
        ("b", 0, 6, 4, [4]),
        ("a", 30, 39, 3, [3, 6]),
    ]
    one = group_moments(rows, scores, paths.__getitem__, spans.__getitem__, top_k=1, per_video=1)
    assert [(m.path, m.start_s, m.end_s) for m in one] == [("a", 0, 9)]


@pytest.mark.parametrize("per_video, top_k", [(1, 5), (1, 40), (2, 3), (3, 7)])
def test_search_moments_equals_grouping_every_row(tmp_path, per_video, top_k):
    from muse_infer.index import EmbeddingIndex

    path, embeddings = moments_index(tmp_path, seed=per_video * 100 + top_k)
    index = EmbeddingIndex.load(path)
    rng = np.random.default_rng(5)
    for _ in range(12):
        vector = embeddings[rng.integers(len(embeddings))] + rng.normal(scale=0.5, size=embeddings.shape[1])
        vector = (vector / np.linalg.norm(vector)).astype(np.float32)
        results = index.search(vector, top_k=top_k, per_video=per_video, exact=True)
        got = [(r.path, r.start_s, r.end_s, r.row) for r in results]
        assert got == reference_moments(index, vector, top_k, per_video)
        assert [r.rank for r in results] == list(range(1, len(results) + 1))
        assert len({r.path for r in results}) == min(top_k, 40)
        assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_search_moments_with_an_ann_index_over_fetches_distinct_videos(tmp_path):
    from muse_infer.index import EmbeddingIndex, build_ann

    path, embeddings = moments_index(tmp_path, seed=9, videos=60)
    build_ann(path, kind="hnsw")
    index = EmbeddingIndex.load(path)
    assert index.search_method == "hnsw"
    rng = np.random.default_rng(6)
    agree = 0
    for _ in range(10):
        vector = embeddings[rng.integers(len(embeddings))].copy()
        vector /= np.linalg.norm(vector)
        results = index.search(vector, top_k=10)
        assert len({r.path for r in results}) == 10 == len(results)  # ten videos despite their many windows
        agree += [(r.path, r.start_s, r.end_s) for r in results] == [
            m[:3] for m in reference_moments(index, vector, 10, 1)
        ]
    assert agree >= 8


def test_shards_of_moments_search_as_one_index(tmp_path):
    from muse_infer.index import EmbeddingIndex, ShardedIndex, write_index

    parts = [moments_index(tmp_path, seed, videos=15, name=f"p{seed}.npy", full=True) for seed in (1, 2)]
    shards = ShardedIndex.load([path for path, _, _ in parts])
    columns = [sum((list(p[2][i]) for p in parts), []) for i in range(3)]
    rows = np.concatenate([p[1] for p in parts])
    whole = EmbeddingIndex.load(
        write_index(tmp_path / "all.npy", rows, columns[0], start_s=columns[1], end_s=columns[2])
    )
    rng = np.random.default_rng(2)
    for _ in range(8):
        vector = rows[rng.integers(len(rows))] + rng.normal(scale=0.5, size=rows.shape[1])
        vector = (vector / np.linalg.norm(vector)).astype(np.float32)
        for per_video in (None, 2):
            got = shards.search(vector, top_k=6, per_video=per_video)
            expected = whole.search(vector, top_k=6, per_video=per_video, exact=True)
            assert [(r.path, r.start_s, r.end_s, r.row, r.rank) for r in got] == [
                (r.path, r.start_s, r.end_s, r.row, r.rank) for r in expected
            ]


def test_results_page_records_show_the_merged_range(tmp_path):
    """The web's hit records (search --html, serve) take a moment's range from the result, not its best row."""
    from muse_infer.index import EmbeddingIndex, write_index
    from muse_infer.web.page import media_fragment
    from muse_infer.web.rows import IndexRows, hits_for

    rows = np.array([[1, 0], [1, 0.01], [0, 1]], np.float32)  # two alike windows, overlapping
    path = write_index(tmp_path / "m.npy", rows, ["a.mp4"] * 3, start_s=[0, 3, 20], end_s=[6, 9, 26])
    index = EmbeddingIndex.load(path)
    results = index.search(np.array([1, 0], np.float32), top_k=5)
    assert [(r.start_s, r.end_s) for r in results] == [(0.0, 9.0)]
    hit = hits_for(results, IndexRows(index))[0]
    assert (hit.start_s, hit.end_s, hit.row) == (0.0, 9.0, 0)
    assert media_fragment(hit.start_s, hit.end_s) == "#t=0,9"


def test_a_whole_video_index_searches_as_before(tmp_path):
    from muse_infer.index import EmbeddingIndex, write_index

    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(30, 8)).astype(np.float32)
    paths = [f"v{i % 10}.mp4" for i in range(30)]  # repeated paths: not grouped without moments
    index = EmbeddingIndex.load(write_index(tmp_path / "w.npy", embeddings, paths))
    assert not index.has_moments
    vector = embeddings[4] / np.linalg.norm(embeddings[4])
    results = index.search(vector, top_k=7)
    assert results == index.search(vector, top_k=7, per_video=0)
    assert len(results) == 7 and all(r.start_s is None and r.end_s is None for r in results)
    assert all("start_s" not in r.to_dict() and "end_s" not in r.to_dict() for r in results)
    grouped = index.search(vector, top_k=3, per_video=1)
    assert len({r.path for r in grouped}) == 3 == len(grouped)


# --- the encode job and the command line -----------------------------------------------------------------

CLI_WINDOWS = ["--window", "3", "--stride", "2"]
TINY = ["--model", "tiny", "--clip-weights", "random", "--device", "cpu", "--frames", "3", "-q"]
TINY += ["--batch-size", "3", "--workers", "1", "--no-thumbnails"]


def invoke(*args, check_rc=None):
    from click.testing import CliRunner

    from muse_infer.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    if check_rc is not None:
        assert result.exit_code == check_rc, f"rc {result.exit_code}\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def row_records(npy: Path) -> list[tuple]:
    import pyarrow.parquet as pq

    table = pq.read_table(npy.with_suffix(".rows.parquet"))
    columns = [table.column(c).to_pylist() for c in ("path", "start_s", "end_s", "mtime_ns")]
    return list(zip(*columns, strict=True))


def expected_rows(root: Path, durations: dict[str, float]) -> list[tuple]:
    """The rows of videos of these durations (seconds), in this order: a row a planned window."""
    rows = []
    for name, duration in durations.items():
        mtime = (root / name).stat().st_mtime_ns
        rows += [(name, s, e, mtime) for s, e in plan_windows(duration, 3.0, 2.0)]
    return rows


def test_encode_moments_grow_change_delete_and_refuse_other_windows(tmp_path):
    root, out = tmp_path / "videos", tmp_path / "m.npy"
    root.mkdir()
    make_video(root / "a.mp4", 20, 2)  # 10 s: 5 windows
    make_video(root / "b.mkv", 5, 2)  # 2.5 s: one row
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    result = invoke("encode-videos", root, "--out", out, *TINY, *CLI_WINDOWS, check_rc=1)
    assert "encoded 2 of 3 videos" in result.output and "6 moments" in result.output
    assert row_records(out) == expected_rows(root, {"a.mp4": 10.0, "b.mkv": 2.5})
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["windows"] == {"window": 3.0, "stride": 2.0, "cuts": "fixed"}
    first = np.load(out)

    # grow: a new file, a changed one (longer: re-windowed), a deleted one; the unchanged rows stay
    make_video(root / "c.mp4", 9, 3)
    make_video(root / "b.mkv", 14, 2, codec="libx264")  # 7 s now
    os.remove(root / "broken.mp4")
    grown = invoke("encode-videos", root, "--out", out, *TINY, *CLI_WINDOWS, "--json", check_rc=0)
    assert row_records(out) == expected_rows(root, {"a.mp4": 10.0, "b.mkv": 7.0, "c.mp4": 3.0})
    summary = json.loads(grown.stdout)
    assert summary["moments"] == 5 + 3 + 1
    assert summary["dropped"] == [{"path": "b.mkv", "why": "changed (encoded again)"}]
    np.testing.assert_array_equal(np.load(out)[:5], first[:5])  # a.mp4's windows kept as they were

    # other window settings: refused, the index untouched; --overwrite starts again
    before = out.read_bytes()
    refused = invoke("encode-videos", root, "--out", out, *TINY, "--window", "4", check_rc=2)
    assert "different windows (--window 3 --stride 2 vs --window 4 --stride 2)" in refused.output
    whole = invoke("encode-videos", root, "--out", out, *TINY, check_rc=2)
    assert "vs a row a video" in whole.output
    assert out.read_bytes() == before
    invoke("encode-videos", root, "--out", out, *TINY, "--overwrite", check_rc=0)
    assert [r[1] for r in row_records(out)] == [None, None, None]


def test_encode_moments_resumes_from_the_work_chunks(tmp_path):
    """A run stopped after some chunks (as by a kill) resumes and gives the rows of a clean run."""
    from muse_infer import VideoEncoder
    from muse_infer.jobs.encode import ChunkStore, encode_folder, open_job, parts_dir

    root = tmp_path / "videos"
    root.mkdir()
    for number, frames in enumerate([20, 7, 13, 30]):
        make_video(root / f"{number}.mp4", frames, 2)
    encoder = VideoEncoder("tiny", device="cpu", clip_weights="random", max_frames=3)
    windows = WindowSettings(3.0, 2.0)
    options = dict(batch_size=2, workers=0, progress=False, thumbnails=False, windows=windows)
    clean = tmp_path / "clean.npy"
    encode_folder(root, clean, encoder, **options)
    out = tmp_path / "resumed.npy"
    with open_job(root, out, encoder, windows=windows) as job:  # a run that saved two videos, then died
        groups = encoder.encode_moment_groups([str(root / e.path) for e in job.todo[:2]], windows, 2, 0)
        job.store.write([r for group in groups for r in group], job.todo, encoder.backend.precision)
    assert len(ChunkStore(parts_dir(out)).chunks()) == 1
    summary = encode_folder(root, out, encoder, **options)
    assert (summary.reused, summary.encoded_now) == (2, 2)
    assert row_records(out) == row_records(clean)
    np.testing.assert_allclose(np.load(out), np.load(clean), atol=1e-6)


def test_a_video_a_hair_longer_than_the_window_is_one_row(tmp_path):
    """Issue 19: a 4.004 s video (120 frames at 29.97 fps) with --window 4 gave two near-identical rows,
    0-4.000 and 0.004-4.004; no two windows now start less than half a stride apart."""
    root, out = tmp_path / "videos", tmp_path / "m.npy"
    root.mkdir()
    make_video(root / "ntsc.mp4", 120, 30000 / 1001)
    summary = json.loads(invoke("encode-videos", root, "--out", out, *TINY, "--window", "4", "--json").stdout)
    assert summary["moments"] == 1
    [(_, start, end, _)] = row_records(out)
    assert start == 0.0 and end == pytest.approx(4.004, abs=1e-5)  # rows keep float32 times


def test_one_count_of_moments_in_the_progress_line_the_summary_and_json(tmp_path, capsys):
    """Issue 19: the progress line said "87 windows read" where the summary said "79 moments": it counted
    every decoded item, a video's closing item and failed videos' included. Now both count the rows."""
    from muse_infer import VideoEncoder
    from muse_infer.jobs.encode import encode_folder

    root = tmp_path / "videos"
    root.mkdir()
    for number, frames in enumerate([20, 7, 13]):
        make_video(root / f"{number}.mp4", frames, 2)
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    encoder = VideoEncoder("tiny", device="cpu", clip_weights="random", max_frames=3)
    options = dict(batch_size=2, workers=1, progress=True, thumbnails=False, windows=WindowSettings(3.0, 2.0))
    expected = sum(len(plan_windows(frames / 2, 3.0, 2.0)) for frames in [20, 7, 13])
    out = tmp_path / "m.npy"
    first = encode_folder(root, out, encoder, **options)
    assert first.moments == expected == len(row_records(out))
    assert f", {expected} moments" in first.line() and first.to_dict()["moments"] == expected
    progress = capsys.readouterr().err.splitlines()
    assert progress[-1].startswith("encoding: 4/4 videos") and f", {expected} moments" in progress[-1], (
        progress
    )

    make_video(root / "3.mp4", 9, 3)  # grow: the count goes on from the rows kept
    grown = encode_folder(root, out, encoder, **options)
    total = expected + len(plan_windows(3.0, 3.0, 2.0))
    assert grown.moments == total == len(row_records(out)) == grown.to_dict()["moments"]
    progress = capsys.readouterr().err.splitlines()
    assert f", {total} moments" in progress[-1] and "already done" in progress[-1], progress


def test_moment_count_drops_the_windows_of_a_video_that_fails_midway():
    from muse_infer.encoders import _MomentCount
    from muse_infer.video.pool import Decoded

    changes = []
    count = _MomentCount(changes.append)
    items = [Decoded(0, "a", span=(0, 3), final=False), Decoded(0, "a", span=(2, 5), final=False)]
    items += [
        Decoded(0, "a"),
        Decoded(1, "b", span=(0, 3), final=False),
        Decoded(1, "b", span=(2, 5), final=False),
    ]
    items += [Decoded(1, "b", error="truncated"), Decoded(2, "c", error="not a video")]
    for item in items:
        count(item)
    assert changes == [1, 1, 0, 1, 1, -2, 0] and sum(changes) == 2


def test_encode_moments_killed_hard_then_resumed_equals_a_clean_run(tmp_path):
    from test_encode_search import CLI, kill_hard, start_cli, wait_for_chunks

    from muse_infer import VideoEncoder
    from muse_infer.jobs.encode import encode_folder

    root = tmp_path / "videos"
    root.mkdir()
    for number in range(8):
        make_video(root / f"{number}.mp4", 12 + 5 * number, 2)
    options = [*TINY, *CLI_WINDOWS, "--chunk-size", "1", "--batch-size", "2"]
    out = tmp_path / "killed.npy"
    process = start_cli("encode-videos", root, "--out", out, *options)
    wait_for_chunks(Path(str(out) + ".parts"), 2, process)
    kill_hard(process)  # kill -9 once two chunks are saved
    assert not out.exists()
    done = subprocess.run(
        [*CLI, "encode-videos", root, "--out", out, *map(str, options)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "already done" in done.stderr and "0 already done" not in done.stderr
    clean = tmp_path / "clean.npy"
    encoder = VideoEncoder("tiny", device="cpu", clip_weights="random", max_frames=3)
    encode_folder(
        root,
        clean,
        encoder,
        batch_size=2,
        workers=0,
        progress=False,
        thumbnails=False,
        windows=WindowSettings(3.0, 2.0),
    )
    assert row_records(out) == row_records(clean)
    np.testing.assert_allclose(np.load(out), np.load(clean), atol=1e-6)


def test_moment_options_usage_errors(tmp_path, monkeypatch):
    root = tmp_path / "videos"
    root.mkdir()
    out = tmp_path / "m.npy"
    result = invoke("encode-videos", root, "--out", out, "--window", "4", "--engine", "ray", check_rc=2)
    assert "local engine only" in result.output
    result = invoke("encode-videos", root, "--out", out, "--window", "4", "--stride", "5", check_rc=2)
    assert "--stride 5 is longer than --window 4" in result.output
    monkeypatch.setitem(sys.modules, "scenedetect", None)  # the scenes extra not installed
    result = invoke("encode-videos", root, "--out", out, "--cuts", "shots", check_rc=2)
    assert "pip install 'muse-infer[scenes]'" in result.output and "Traceback" not in result.output


def test_must_show_a_scene_is_found_as_a_moment_of_the_long_video(tmp_path):
    """The demo model, windows of 6 s every 3 s: each scene's caption finds the long video, its range
    overlapping that scene; --json and the SDK carry the ranges."""
    from muse_infer import EmbeddingIndex, TextEncoder
    from muse_infer.data.scenes import overlap_s, write_scene_reel
    from muse_infer.data.synthetic import demo_samples

    samples = [spec for spec, _ in demo_samples(seed=0, n=7)]
    root, out = tmp_path / "videos", tmp_path / "moments.npy"
    root.mkdir()
    scenes = write_scene_reel(root / "long.mp4", samples[:4], scene_s=12.0)
    write_scene_reel(root / "other.mp4", samples[4:6], scene_s=6.0)
    write_scene_reel(root / "short.mp4", samples[6:], scene_s=6.0)
    options = [
        "--model",
        "demo",
        "--device",
        "cpu",
        "--window",
        "6",
        "--stride",
        "3",
        "-q",
        "--no-thumbnails",
    ]
    invoke("encode-videos", root, "--out", out, *options, check_rc=0)
    captions = [scene.caption for scene in scenes]
    result = invoke("search", *captions, "--index", out, "--top-k", "3", "--json", check_rc=0)
    listed = json.loads(result.stdout)
    index = EmbeddingIndex.load(out)
    sdk = index.search_batch(captions, 3, text_encoder=TextEncoder.for_index(index))
    for scene, hits in zip(scenes, sdk, strict=True):
        best = [hit for hit in listed if hit["query"] == scene.caption and hit["rank"] == 1][0]
        assert best["path"] == "long.mp4", (scene, best)
        assert overlap_s((best["start_s"], best["end_s"]), (scene.start_s, scene.end_s)) > 0, (scene, best)
        assert (hits[0].path, hits[0].start_s, hits[0].end_s) == (
            best["path"],
            best["start_s"],
            best["end_s"],
        )
        assert len({hit.path for hit in hits}) == len(hits)  # one moment a video by default
    text = invoke("search", captions[0], "--index", out, check_rc=0).output
    assert "long.mp4  [00:" in text


def test_moments_fail_every_bad_file_as_whole_videos_do(tmp_path):
    """The bad-input corpus of test_encode_search: the same files fail for the same reasons, per video."""
    from test_encode_search import CLI_ENV, build_corpus, read_failures

    from muse_infer import VideoEncoder
    from muse_infer.jobs.encode import encode_folder

    root = tmp_path / "videos"
    root.mkdir()
    good, bad = build_corpus(root)
    encoder = VideoEncoder("tiny", device="cpu", clip_weights="random", max_frames=3)
    options = dict(batch_size=4, workers=1, timeout=4, progress=False, thumbnails=False)
    old = {key: os.environ.get(key) for key in CLI_ENV}
    os.environ.update(CLI_ENV)  # the hang file hangs in the decode workers
    try:
        whole = encode_folder(root, tmp_path / "whole.npy", encoder, **options)
        moments = encode_folder(
            root, tmp_path / "m.npy", encoder, windows=WindowSettings(3.0, 2.0), **options
        )
    finally:
        for key, value in old.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    assert whole.exit_code == moments.exit_code == 1
    failures = read_failures(tmp_path / "m.npy")
    assert set(failures) == set(bad) == set(read_failures(tmp_path / "whole.npy"))
    for path, fragment in bad.items():
        assert fragment in failures[path], (path, failures[path])
    assert sorted({r[0] for r in row_records(tmp_path / "m.npy")}) == sorted(good)
    g70 = [r for r in row_records(tmp_path / "m.npy") if r[0] == "g_70s.mp4"]
    assert [(s, e) for _, s, e, _ in g70] == plan_windows(70.0, 3.0, 2.0)


def test_cuts_shots_start_windows_at_the_hard_cuts(tmp_path):
    pytest.importorskip("scenedetect", reason="needs the scenes extra (installed by dev)")
    from muse_infer.data.scenes import write_scene_reel
    from muse_infer.data.synthetic import demo_samples

    root, out = tmp_path / "videos", tmp_path / "shots.npy"
    root.mkdir()
    write_scene_reel(root / "reel.mp4", [spec for spec, _ in demo_samples(seed=0, n=3)], scene_s=6.0)
    invoke("encode-videos", root, "--out", out, *TINY, "--cuts", "shots", "--window", "4", check_rc=0)
    spans = [(s, e) for _, s, e, _ in row_records(out)]
    assert spans == [(0, 4), (2, 6), (6, 10), (8, 12), (12, 16), (14, 18)]
    assert json.loads(out.with_suffix(".json").read_text())["windows"]["cuts"] == "shots"
