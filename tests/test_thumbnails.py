"""Thumbnails: the right keyframes (checked against decoding every frame), small upright JPEGs, a store
keyed by content, and the encode job keeping one set per row (made, kept, removed with the row)."""

from __future__ import annotations

import io
import logging
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from video_factory import make_video, read_index  # noqa: E402

from muse_infer.index import IndexFiles  # noqa: E402
from muse_infer.video.reader import _upright  # noqa: E402
from muse_infer.video.thumbnails import (  # noqa: E402
    MAX_SIDE,
    ThumbnailSource,
    ThumbnailStore,
    fit_size,
    keyframe_times,
    read_keyframes,
    sync_thumbnails,
)


def decoded_frames(path: str) -> list[tuple[Fraction, int, bool]]:
    """Every frame of a video, decoded in order (no seeking): (seconds from the first, index painted on
    it, key frame?). The reference the thumbnails are checked against."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [(frame.pts * stream.time_base, frame) for frame in container.decode(stream)]
    origin = frames[0][0]
    return [(pts - origin, read_index(_upright(frame)), frame.key_frame) for pts, frame in frames]


def by_the_rule(path: str, start: float, end: float) -> list[int]:
    """The rule computed on a full decode: for each time the last key frame at or before it, when it is
    inside the range and not taken yet, else the exact frame (for codecs that decode key frames alone)."""
    frames = decoded_frames(path)
    taken, result = set(), []
    for seconds in keyframe_times(start, end, 3):
        target = Fraction(seconds).limit_denominator(1_000_000)
        shown = [(s, i, key) for s, i, key in frames if s <= target] or frames[:1]
        key_seconds, key = next((s, i) for s, i, k in reversed(shown) if k)
        usable = key_seconds >= Fraction(start).limit_denominator(1_000_000) and key not in taken
        taken.add(key)
        result.append(key if usable else shown[-1][1])
    return result


def check_keyframe_rule(path: str, got: list[int], start: float, end: float) -> None:
    """The thumbnails' rule, checked on a full decode: each image is the frame shown at its time, or
    a key frame at or before that frame and inside the range; no key frame twice."""
    frames = decoded_frames(path)
    inside = [
        index for seconds, index, _ in frames if seconds >= Fraction(start).limit_denominator(1_000_000)
    ]
    keys = {index for _, index, key in frames if key}
    for number, (seconds, index) in enumerate(zip(keyframe_times(start, end, 3), got, strict=True)):
        target = Fraction(seconds).limit_denominator(1_000_000)
        exact = [i for s, i, _ in frames if s <= target][-1] if frames[0][0] <= target else frames[0][1]
        if index == exact:
            continue
        assert index in keys and index < exact, (path, number, index, exact)
        assert inside and index >= inside[0], (path, number, index, "before the range")
        assert index not in got[:number], (path, got)


def test_keyframe_times_and_fit_size():
    assert keyframe_times(0.0, 6.0, 3) == [1.0, 3.0, 5.0]
    assert keyframe_times(2.0, 2.0, 2) == [2.0, 2.0]
    assert fit_size(640, 480, 192) == (192, 144)
    assert fit_size(48, 64, 192) == (48, 64)  # never enlarged
    assert fit_size(3840, 10, 192) == (192, 2)  # even, at least 2
    with pytest.raises(ValueError):
        keyframe_times(0, 1, 0)


def test_keyframes_match_decoding_every_frame_on_awkward_videos(tmp_path):
    rng = np.random.default_rng(12)
    cases = [
        (".mp4", dict(pix_fmt="yuv444p")),
        (".webm", {}),
        (".mkv", dict(pix_fmt="yuv444p")),
        (".avi", {}),
        (".mp4", dict(pix_fmt="yuv444p", rotation=90)),
        (".mp4", dict(pix_fmt="yuv444p", rotation=270, hflip=True)),
    ]
    for number, (extension, options) in enumerate(cases):
        frames, fps = int(rng.integers(2, 50)), float(rng.choice([1.0, 2.5, 7.0, 12.0]))
        size = (int(rng.integers(20, 60)) | 1, int(rng.integers(20, 60)) | 1)  # odd sizes
        path = make_video(
            tmp_path / f"v{number}{extension}",
            frames,
            fps,
            size=size,
            keyframe_interval=int(rng.integers(1, 9)),
            **options,
        )
        duration = frames / fps
        start = float(rng.uniform(0, duration * 0.6))
        end = float(rng.uniform(start, duration))
        got = [read_index(image) for image in read_keyframes(path, 3, start, end)]
        check_keyframe_rule(path, got, start, end)


def test_key_frames_are_used_when_inside_and_distinct(tmp_path):
    # 31 frames at 3 fps (10.33 s): the times 1.72, 5.17, 8.61 s show frames 5, 15 and 25; x264 puts
    # key frames every GOP frames and at its scene cuts (this video cuts at every frame).
    for gop in (3, 100):
        path = make_video(tmp_path / f"gop_{gop}.mp4", 31, 3.0, size=(48, 64), keyframe_interval=gop)
        whole = [read_index(image) for image in read_keyframes(path)]
        assert whole == by_the_rule(path, 0.0, 31 / 3) and whole != [5, 15, 25], (gop, whole)
        for start, end in ((6.0, 9.0), (2.2, 2.9), (0.5, 10.0)):
            got = [read_index(image) for image in read_keyframes(path, 3, start, end)]
            assert got == by_the_rule(path, start, end), (gop, start, end, got)
    for extension in (".webm", ".mkv"):
        path = make_video(tmp_path / f"whole{extension}", 31, 3.0, size=(48, 64), keyframe_interval=3)
        images = read_keyframes(path)
        check_keyframe_rule(path, [read_index(image) for image in images], 0.0, 31 / 3)
        assert all(image.shape == (48, 64, 3) and image.dtype == np.uint8 for image in images)


def test_keyframes_are_small_and_upright(tmp_path):
    path = make_video(tmp_path / "big.mp4", 6, 2.0, size=(480, 640))
    assert {image.shape for image in read_keyframes(path)} == {(MAX_SIDE * 3 // 4, MAX_SIDE, 3)}
    portrait = make_video(tmp_path / "phone.mp4", 6, 2.0, size=(320, 180), rotation=90)
    images = read_keyframes(portrait)
    assert images[0].shape == (MAX_SIDE, 108, 3)  # stored 180x320 landscape, shown portrait
    check_keyframe_rule(portrait, [read_index(image) for image in images], 0.0, 3.0)


def test_store_keys_files_and_prune(tmp_path):
    video = make_video(tmp_path / "a.mp4", 8, 4.0, size=(48, 64))
    source = ThumbnailSource("a.mp4", 100, 5)
    assert source.key != ThumbnailSource("a.mp4", 100, 6).key  # the file changed
    assert source.key != ThumbnailSource("a.mp4", 100, 5, 0.0, 1.0).key  # a moment of it
    assert source.key == ThumbnailSource("a.mp4", 100, 5).key and len(source.key) == 40
    store = ThumbnailStore(IndexFiles.of(tmp_path / "emb.npy").thumbs)
    assert store.folder == tmp_path / "emb.thumbs" and not store.has(source)
    files = store.make(video, source)
    assert store.has(source) and files == store.files(source) and len(files) == 3
    for file in files:
        with Image.open(io.BytesIO(file.read_bytes())) as image:
            assert image.format == "JPEG" and image.size == (64, 48)
    moment = ThumbnailSource("a.mp4", 100, 5, 1.0, 2.0)
    store.make(video, moment)
    leftover = store.folder / f".{source.key}-0.jpg.abc123.tmp"  # a killed atomic write
    foreign = [store.folder / "notes.txt", store.folder / "holiday.jpg"]
    for path in [leftover, *foreign]:
        path.write_text("x")
    assert store.prune([moment]) == 4  # source's 3 files and the leftover
    assert not store.has(source) and store.has(moment) and all(path.exists() for path in foreign)


def test_store_ensure_never_raises_for_a_bad_video(tmp_path, caplog):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    store = ThumbnailStore(tmp_path / "thumbs")
    with caplog.at_level(logging.WARNING):
        assert store.ensure(bad, ThumbnailSource("bad.mp4")) == []
    assert "bad.mp4" in caplog.text
    summary = sync_thumbnails(store, tmp_path, [ThumbnailSource("bad.mp4")])
    assert (summary.made, summary.failed) == (0, 1)


@pytest.fixture(scope="module")
def tiny_encoder():
    from muse_infer import VideoEncoder

    return VideoEncoder("tiny", device="cpu", max_frames=4)


def thumbnail_files(out: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in IndexFiles.of(out).thumbs.glob("*.jpg")}


def test_encode_keeps_one_set_of_thumbnails_per_row(tmp_path, tiny_encoder):
    from muse_infer.jobs.encode import encode_folder

    root, out = tmp_path / "videos", tmp_path / "emb.npy"
    (root / "sub").mkdir(parents=True)
    for name in ("a.mp4", "b.webm", "sub/c.mkv"):
        make_video(root / name, 9, 3.0, size=(48, 64))
    (root / "broken.mp4").write_text("not a video")  # no row, so no thumbnails
    summary = encode_folder(root, out, tiny_encoder, batch_size=2, workers=0, progress=False)
    assert summary.thumbnails.made == 3 and "thumbnails: 3 made" in summary.line()
    first = thumbnail_files(out)
    assert len(first) == 9
    (root / "b.webm").unlink()
    make_video(root / "d.mp4", 9, 3.0, size=(48, 64))
    summary = encode_folder(root, out, tiny_encoder, batch_size=2, workers=0, progress=False)
    second = thumbnail_files(out)
    assert (summary.thumbnails.made, summary.thumbnails.already, summary.thumbnails.removed) == (1, 2, 3)
    kept = ThumbnailStore(IndexFiles.of(out).thumbs).files(ThumbnailSource("a.mp4", *_stats(root / "a.mp4")))
    assert all(second[path.name] == first[path.name] for path in kept)  # not rewritten
    gone = ThumbnailStore(IndexFiles.of(out).thumbs).files(ThumbnailSource("b.webm", -1, -1))
    assert len(second) == 9 and not any(path.name in second for path in gone)


def _stats(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def test_no_thumbnails_option_and_failures_never_cost_the_index(tmp_path, tiny_encoder, monkeypatch, caplog):
    from click.testing import CliRunner

    import muse_infer.jobs.assemble as assemble
    import muse_infer.jobs.encode as job
    from muse_infer.cli import main

    root = tmp_path / "videos"
    root.mkdir()
    make_video(root / "a.mp4", 6, 3.0, size=(48, 64))
    options = ["--model", "tiny", "--device", "cpu", "--frames", "4", "--workers", "0", "-q"]
    result = CliRunner().invoke(
        main, ["encode-videos", str(root), "--out", str(tmp_path / "x.npy"), *options, "--no-thumbnails"]
    )
    assert result.exit_code == 0, result.output
    assert not IndexFiles.of(tmp_path / "x.npy").thumbs.exists()

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(assemble, "sync_thumbnails", broken)
    with caplog.at_level(logging.WARNING):
        summary = job.encode_folder(root, tmp_path / "y.npy", tiny_encoder, workers=0, progress=False)
    assert summary.exit_code == 0 and summary.thumbnails is None and (tmp_path / "y.json").is_file()
    assert "thumbnails not made (disk on fire)" in caplog.text


def test_containers_without_exact_seeking_get_exact_frames(tmp_path):
    # MPEG-PS timestamps are not exact after a seek (see the reader): every image is the exact frame.
    path = make_video(tmp_path / "program.mpg", 60, 25.0, size=(48, 64), codec="mpeg2video")
    got = [read_index(image) for image in read_keyframes(path, 3, 0.5, 2.0)]
    assert got == [18, 31, 43]  # shown at 0.75, 1.25 and 1.75 s at 25 fps: frames 18.75, 31.25, 43.75
