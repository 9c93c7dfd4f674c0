"""The planned readers against their reference twins on awkward videos, bit for bit.

- exact sampling: ``read_frames`` (``planned.PlannedCursor``) equals ``read_frames_reference`` (the reader
  as it was: every frame on the way decoded, decoder threads on), for several frame settings;
- moments: ``read_windows`` (one planned pass) equals ``read_window_clip`` (the reference, seeking);
- keyframe sampling: each frame is the keyframe nearest its sample time (found here independently,
  from the demuxed packets) as the reference reader shows it, and only keyframes are decoded.

Each well-formed video must be read by the planned cursor itself (``DecodeStats.fallbacks == 0``), or
the parity would hold vacuously; a file the plan does not cover (a raw stream without timestamps)
must fall back and still agree.
"""

from __future__ import annotations

import os
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from muse_infer.video import keyframes, reader
from muse_infer.video.frames import FrameSettings
from muse_infer.video.reader import (
    DecodeStats,
    read_clip,
    read_frames,
    read_frames_reference,
    read_window_clip,
)
from muse_infer.video.window_reader import read_windows
from muse_infer.video.windows import WindowSettings

sys.path.insert(0, os.path.dirname(__file__))
from video_factory import index_image, make_video  # noqa: E402

SMALL = (40, 56)  # (height, width): quick to encode and decode, big enough for the codecs
TWO_S = {"g": "50"}  # a keyframe every 2 s at 25 fps


def _raw_h264(path, frames: int):
    """An Annex B .h264 stream: no container, no timestamps."""
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = SMALL[1], SMALL[0], "yuv420p"
        for i in range(frames):
            image = av.VideoFrame.from_ndarray(index_image(i, *SMALL), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def _fragmented(path, out):
    """``path``'s packets remuxed into a fragmented mp4 (a fragment a keyframe, no sample table up front)."""
    with (
        av.open(str(path)) as source,
        av.open(str(out), "w", options={"movflags": "frag_keyframe+empty_moov"}) as sink,
    ):
        stream = source.streams.video[0]
        copy = sink.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.dts is not None:
                packet.stream = copy
                sink.mux(packet)
    return str(out)


def _damaged(path, out):
    """``path`` with one packet inside its third group of pictures overwritten with noise."""
    data = bytearray(open(path, "rb").read())
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    position, size = packets[len(packets) // 2 + 3]
    data[position : position + size] = np.random.default_rng(0).bytes(size)
    out.write_bytes(bytes(data))
    return str(out)


# name -> (builder(folder) -> path, whether it falls back to the reference: True, False, None: either)
CORPUS = {
    "b-frames, keyframe every 2 s": (
        lambda d: make_video(d / "gop2.mp4", 250, 25, SMALL, options=TWO_S),
        False,
    ),
    "keyframe every 10 s (x264's 250)": (lambda d: make_video(d / "gop10.mp4", 600, 25, SMALL), False),
    "variable frame rate mkv": (
        lambda d: make_video(
            d / "vfr.mkv", 9, 10, SMALL, timestamps=[0, 0.3, 1.5, 1.6, 3, 4.2, 7.9, 8.05, 9.5]
        ),
        False,
    ),
    "odd size, yuv444p": (lambda d: make_video(d / "odd.mp4", 60, 10, (41, 57), pix_fmt="yuv444p"), False),
    "vp9 webm, odd size": (
        lambda d: make_video(d / "odd.webm", 60, 10, (41, 57), keyframe_interval=20),
        False,
    ),
    "mkv without a frame count": (
        lambda d: make_video(d / "h264.mkv", 90, 15, SMALL, keyframe_interval=30),
        False,
    ),
    "one frame": (lambda d: make_video(d / "one.mp4", 1, 25, SMALL), False),
    "two frames": (lambda d: make_video(d / "two.mp4", 2, 25, SMALL), False),
    "half a second": (lambda d: make_video(d / "half.mp4", 12, 25, SMALL), False),
    "ntsc 29.97 fps": (
        lambda d: make_video(d / "ntsc.mp4", 200, Fraction(30000, 1001), SMALL, keyframe_interval=60),
        False,
    ),
    "negative timestamps (edit list)": (
        lambda d: make_video(
            d / "neg.mp4", 60, 10, SMALL, timestamps=[i / 10 - 1 for i in range(60)], keyframe_interval=10
        ),
        False,
    ),
    "starts at 1.5 s": (
        lambda d: make_video(
            d / "late.mp4", 60, 10, SMALL, timestamps=[1.5 + i / 10 for i in range(60)], keyframe_interval=10
        ),
        False,
    ),
    "mpeg-ts": (
        lambda d: make_video(d / "v.ts", 250, 25, SMALL, codec="libx264", options=TWO_S),
        False,
    ),
    "mpeg-2 in mpeg-ts": (
        lambda d: make_video(d / "m2.ts", 100, 25, SMALL, codec="mpeg2video", options={"g": "25", "bf": "2"}),
        False,
    ),
    "mpeg-4 avi with b-frames": (
        lambda d: make_video(d / "bf.avi", 100, 25, SMALL, options={"g": "25", "bf": "2"}),
        False,
    ),
    "open gop": (
        lambda d: make_video(
            d / "open.mkv", 150, 25, SMALL, options={"g": "25", "x264-params": "open-gop=1"}
        ),
        False,
    ),
    "b-pyramid strict, 5 b-frames, 4 refs": (
        lambda d: make_video(
            d / "pyr.mp4",
            150,
            25,
            SMALL,
            options={"g": "50", "x264-params": "b-pyramid=strict:bframes=5:ref=4"},
        ),
        False,
    ),
    "no b-frames": (
        lambda d: make_video(d / "nob.mp4", 120, 25, SMALL, options={"g": "50", "bf": "0"}),
        False,
    ),
    "rotated 90 degrees": (
        lambda d: make_video(d / "rot.mp4", 60, 10, SMALL, keyframe_interval=20, rotation=90),
        False,
    ),
    "flv": (lambda d: make_video(d / "v.flv", 100, 25, SMALL, codec="libx264", options=TWO_S), False),
    "mov": (lambda d: make_video(d / "v.mov", 100, 25, SMALL, options=TWO_S), False),
    "fragmented mp4": (
        lambda d: _fragmented(make_video(d / "whole2.mp4", 250, 25, SMALL, options=TWO_S), d / "frag.mp4"),
        False,
    ),
    "every frame a keyframe": (
        lambda d: make_video(d / "intra.mp4", 40, 10, SMALL, keyframe_interval=1),
        False,
    ),
    "raw h264 without timestamps": (lambda d: _raw_h264(d / "raw.h264", 60), True),
    "a damaged packet": (
        lambda d: _damaged(
            make_video(d / "whole.mp4", 100, 10, SMALL, keyframe_interval=10), d / "damaged.mp4"
        ),
        None,  # falls back if the damage makes the decoder fail; the frames agree either way
    ),
}
SETTINGS = [
    FrameSettings(max_frames=12),
    FrameSettings(max_frames=5, framerate=2.0, slice_mode="head"),
    FrameSettings(max_frames=30, framerate=0.5, slice_mode="tail"),
    FrameSettings(max_frames=7, framerate=3.0),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder, made = tmp_path_factory.mktemp("parity"), {}

    def get(name):
        if name not in made:
            made[name] = CORPUS[name][0](folder)
        return made[name]

    return get


def timeline_of(path, planned: bool) -> tuple:
    opened = reader.open_for_planned(path) if planned else reader._open(path)
    with opened as container:
        timeline = reader.open_timeline(path, container, seek=True, planned=planned)
        return (
            timeline.origin,
            timeline.end,
            timeline.stream.time_base,
            reader.nominal_frame_ticks(timeline.stream),
        )


@pytest.mark.parametrize("name", [n for n, (_, falls_back) in CORPUS.items() if falls_back is False])
def test_the_planned_reader_sees_the_reference_timeline(corpus, name):
    """Time 0, the end, the time base and a frame's nominal length, whichever way the file is opened
    (mp4 and mov files are opened without FFmpeg's decoding probe for the planned readers)."""
    assert timeline_of(corpus(name), planned=True) == timeline_of(corpus(name), planned=False)


@pytest.mark.parametrize("name", CORPUS)
def test_exact_sampling_equals_the_reference_reader(corpus, name):
    path, falls_back = corpus(name), CORPUS[name][1]
    for settings in SETTINGS:
        stats = DecodeStats()
        args = (settings.max_frames, settings.framerate, settings.slice_mode)
        planned, expected = read_frames(path, *args, stats=stats), read_frames_reference(path, *args)
        assert len(planned) == len(expected), settings
        for number, (got, want) in enumerate(zip(planned, expected, strict=True)):
            np.testing.assert_array_equal(got, want, err_msg=f"{name}, {settings}, frame {number}")
        assert falls_back is None or (stats.fallbacks == 1) == falls_back, stats


@pytest.mark.parametrize(
    "name",
    ["b-frames, keyframe every 2 s", "variable frame rate mkv", "mpeg-ts", "open gop"],
)
@pytest.mark.parametrize("sampling", ["exact", "keyframes"])
def test_windows_in_one_pass_equal_each_window_read_alone(corpus, name, sampling):
    path = corpus(name)
    settings = FrameSettings(max_frames=4, size=32, sampling=sampling)
    stats = DecodeStats()
    clips = list(read_windows(path, settings, WindowSettings(3.0, 1.5), stats))
    assert len(clips) >= 2 and stats.fallbacks == 0 and stats.seeks == 0
    for clip in clips:
        np.testing.assert_array_equal(clip.pixels, read_window_clip(path, settings, clip.start_s, clip.end_s))


def nearest_keyframe_frames(path, settings: FrameSettings) -> tuple[list[np.ndarray], int]:
    """The reference reader's frames at the keyframes nearest the sample times (the earlier of two
    equally near), and how many keyframes that is: keyframes found by demuxing every packet."""
    with av.open(str(path)) as container:
        keyframes = sorted(
            p.pts for p in container.demux(video=0) if p.size and p.is_keyframe and not p.is_discard
        )
    with reader._open(path) as container:
        timeline = reader.open_timeline(path, container, seek=True, planned=False)
        rate = Fraction(settings.framerate).limit_denominator(1_000_000)
        times = reader._sample_times(timeline, rate, settings.max_frames, settings.slice_mode)
        chosen = [min(keyframes, key=lambda k: (abs(k - timeline.target(t)), k)) for t in times]
        frames = [timeline.upright(timeline.cursor.frame_at(pts)) for pts in chosen]
    return frames, len(set(chosen))


def checked_keyframe_clip(path, settings: FrameSettings) -> tuple[DecodeStats, int]:
    """Read ``path``'s clip by keyframe sampling and check it is the nearest keyframes' frames, fitted
    (``nearest_keyframe_frames``); returns what the read cost and how many distinct keyframes it took."""
    stats = DecodeStats()
    clip = read_clip(path, settings, stats)
    frames, distinct = nearest_keyframe_frames(path, settings)
    expected = np.stack([reader.fit_frame(frame, settings.size) for frame in frames])
    np.testing.assert_array_equal(clip, expected, err_msg=f"{path}, {settings}")
    return stats, distinct


@pytest.mark.parametrize("name", [n for n, (_, falls_back) in CORPUS.items() if falls_back is False])
def test_keyframe_sampling_takes_the_nearest_keyframe_and_decodes_nothing_else(corpus, name):
    path = corpus(name)
    for settings in SETTINGS[:3]:
        settings = FrameSettings(
            settings.max_frames, settings.framerate, settings.slice_mode, 32, "keyframes"
        )
        stats, distinct = checked_keyframe_clip(path, settings)
        assert stats.fallbacks == 0, stats
        assert stats.frames_decoded <= distinct + 1, stats  # the keyframes taken (and the first frame)


@pytest.mark.parametrize("name", ["b-frames, keyframe every 2 s", "ntsc 29.97 fps", "mov"])
def test_keyframe_sampling_jumps_from_keyframe_to_keyframe_in_a_sample_table(corpus, name):
    """Where the sample table lists every frame (mp4/mov), the next keyframe is reached by a seek, not
    by demuxing the packets before it: a packet or two read a keyframe taken (the keyframe after a
    sample time is read to know which is nearer), the same frames."""
    path = corpus(name)
    stats, distinct = checked_keyframe_clip(path, FrameSettings(12, 4.0, size=32, sampling="keyframes"))
    with av.open(path) as container:
        packets = sum(1 for p in container.demux(video=0) if p.size)
    assert stats.fallbacks == 0 and stats.seeks >= 1, stats
    assert stats.packets_demuxed <= 2 * distinct + 2 < packets, (stats, distinct, packets)


@pytest.mark.parametrize("name", ["fragmented mp4", "mpeg-ts", "variable frame rate mkv"])
def test_keyframe_sampling_demuxes_where_there_is_no_sample_table(corpus, name):
    """A fragmented mp4 (no frame count declared) and containers without a sample table are read by
    demuxing, the same frames."""
    path = corpus(name)
    stats, _ = checked_keyframe_clip(path, FrameSettings(6, 2.0, size=32, sampling="keyframes"))
    with av.open(path) as container:
        assert not keyframes.lists_every_sample(container.streams.video[0])
    assert stats.fallbacks == 0 and stats.packets_demuxed > 6, stats


def test_a_jump_that_lands_elsewhere_is_read_by_demuxing(corpus, monkeypatch):
    """A seek that lands on another packet than the keyframe looked up (here: the table answer moved
    one entry on, to a frame that is no keyframe) stops the jumps; the cursor seeks back and demuxes,
    and the frames are those of the nearest keyframes still."""
    path = corpus("b-frames, keyframe every 2 s")
    looked_up = keyframes.next_keyframe_entry
    misses = []

    def one_entry_late(entries, dts):
        found = looked_up(entries, dts)
        if found is None or found is keyframes.UNUSABLE_TABLE:
            return found
        position, entry = found
        misses.append(entry.timestamp)
        return position + 1, entries[position + 1]

    monkeypatch.setattr(keyframes, "next_keyframe_entry", one_entry_late)
    stats, _ = checked_keyframe_clip(path, FrameSettings(12, 4.0, size=32, sampling="keyframes"))
    assert len(misses) == 1 and stats.fallbacks == 0, (misses, stats)


@pytest.mark.parametrize("name", CORPUS)
@pytest.mark.parametrize("sampling", ["exact", "keyframes"])
def test_a_clip_is_its_frames_fitted(corpus, name, sampling):
    """``read_clip`` fits each frame into the clip as it reads it: the same bytes as the frames read
    first and fitted after, falling back (the raw stream) or not."""
    path = corpus(name)
    settings = FrameSettings(max_frames=7, framerate=3.0, size=24, sampling=sampling)
    if sampling == "keyframes":
        frames = reader.read_keyframes(path, settings)
    else:
        frames = read_frames(path, settings.max_frames, settings.framerate, settings.slice_mode)
    clip = read_clip(path, settings)
    assert clip.dtype == np.uint8 and clip.flags.c_contiguous
    np.testing.assert_array_equal(clip, np.stack([reader.fit_frame(frame, 24) for frame in frames]))


@pytest.mark.parametrize("sampling", ["exact", "keyframes"])
def test_a_clip_holds_one_full_size_frame_at_a_time(corpus, monkeypatch, sampling):
    """Each decoded frame is fitted and let go before the next is read (a clip's full-size frames
    held together cost the next clip their page faults: ``reader._frames_at``)."""
    import weakref

    alive, most, frame_at = [], [0], reader._Timeline.frame_at

    def watched(self, path, seconds):
        most[0] = max(most[0], sum(ref() is not None for ref in alive))
        frame = frame_at(self, path, seconds)
        alive.append(weakref.ref(frame))
        return frame

    monkeypatch.setattr(reader._Timeline, "frame_at", watched)
    settings = FrameSettings(max_frames=6, framerate=2.0, size=24, sampling=sampling)
    clip = read_clip(corpus("b-frames, keyframe every 2 s"), settings)
    assert len(alive) == len(clip) == 6
    assert most[0] == 0, f"{most[0]} earlier frames still held when a frame was read"


def test_a_straight_read_holds_a_keyframe_interval_of_packets(tmp_path, monkeypatch):
    """MPEG-TS is read straight through (no seeks): the packets read ahead between two samples 25 s
    apart are dropped at each keyframe, so at most about a keyframe interval is held, not 25 s."""
    from muse_infer.video.planned import PlannedCursor

    path = make_video(tmp_path / "long.ts", 1500, 5, (32, 32), codec="libx264", options={"g": "10"})
    held, admit = [0], PlannedCursor._admit

    def counting(self, packet):
        admit(self, packet)
        held[0] = max(held[0], len(self._queue))

    monkeypatch.setattr(PlannedCursor, "_admit", counting)
    stats = DecodeStats()
    planned, expected = read_frames(path, stats=stats), read_frames_reference(path)
    assert all(np.array_equal(a, b) for a, b in zip(planned, expected, strict=True))
    assert stats.seeks == stats.fallbacks == 0 and stats.packets_decoded < 12 * 12
    assert held[0] <= 3 * 10, held[0]  # packets queued at once; 125 between two samples
