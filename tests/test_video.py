"""muse_infer.video: CLIP4Clip's frame sampling by timestamp, preprocessing, containers, bad files."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

from muse_infer.video import (
    CLIP_MEAN,
    CLIP_STD,
    VIDEO_EXTENSIONS,
    VideoDecodeError,
    apply_display_matrix,
    load_video,
    preprocess_frame,
    read_frames,
    sample_indices,
)
from muse_infer.video import reader as video

sys.path.insert(0, os.path.dirname(__file__))
from video_factory import index_image, make_video, read_index  # noqa: E402


def clip4clip_indices(frame_count: int, fps: int, max_frames: int, slice_mode: str) -> list[int]:
    """Frame indices CLIP4Clip keeps, transcribed from its code (feature_framerate = 1).

    rawvideo_util.RawVideoExtractorCV2.video_to_tensor: OpenCV's ``cap.read()`` after
    ``cap.set(CAP_PROP_POS_FRAMES, i)`` succeeds exactly when i < frame_count; then
    dataloader_msrvtt_retrieval's ``slice_framepos`` slicing.
    """
    sample_fp = 1
    total_duration = (frame_count + fps - 1) // fps
    start_sec, end_sec = 0, total_duration
    interval = fps // sample_fp or 1
    inds = [ind for ind in np.arange(0, fps, interval)][:sample_fp]
    picked, ret = [], True
    for sec in np.arange(start_sec, end_sec + 1):
        if not ret:
            break
        sec_base = int(sec * fps)
        for ind in inds:
            ret = sec_base + ind < frame_count
            if not ret:
                break
            picked.append(int(sec_base + ind))
    if max_frames < len(picked):
        if slice_mode == "head":
            return picked[:max_frames]
        if slice_mode == "tail":
            return picked[-max_frames:]
        return [picked[i] for i in np.linspace(0, len(picked) - 1, num=max_frames, dtype=int)]
    return picked


def indices_read(path, **kwargs) -> list[int]:
    return [read_index(frame) for frame in read_frames(path, **kwargs)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Build each (fps, frame count, extension, keyframe interval) video once for the module."""
    folder, made = tmp_path_factory.mktemp("videos"), {}

    def get(fps, n_frames, ext="mp4", keyframe_interval=None):
        key = (fps, n_frames, ext, keyframe_interval)
        if key not in made:
            path = folder / f"v{len(made)}.{ext}"
            made[key] = make_video(path, n_frames, fps, keyframe_interval=keyframe_interval)
        return made[key]

    return get


# (fps, frames): 5 s, 30 s, 0.5 s, a single frame, just over 1 s, 70 s at 2 fps.
SAMPLING_CASES = [
    (25, 125),
    (30, 150),
    (3, 15),
    (1, 5),
    (30, 900),
    (3, 90),
    (30, 15),
    (25, 1),
    (25, 13),
    (30, 31),
    (2, 140),
]


@pytest.mark.parametrize("fps,n_frames", SAMPLING_CASES)
def test_sampling_matches_clip4clip(videos, fps, n_frames):
    path = videos(fps, n_frames, keyframe_interval=12)
    for slice_mode in ("uniform", "head", "tail"):
        for max_frames in (12, 5, 1, 50):
            expected = clip4clip_indices(n_frames, fps, max_frames, slice_mode)
            got = indices_read(path, max_frames=max_frames, slice_mode=slice_mode)
            assert got == expected, (slice_mode, max_frames)


def test_load_video_shapes_padding_and_mask(videos):
    frames, mask = load_video(videos(3, 15), max_frames=12, size=64)  # 5 samples
    assert frames.shape == (12, 3, 64, 64) and frames.dtype == torch.float32
    assert mask.dtype == torch.long and mask.tolist() == [1] * 5 + [0] * 7
    assert [read_index(frame) for frame in frames[:5]] == [0, 3, 6, 9, 12]
    assert torch.count_nonzero(frames[5:]) == 0
    frames, mask = load_video(videos(30, 900), max_frames=12)
    assert frames.shape == (12, 3, 224, 224) and mask.tolist() == [1] * 12
    assert [read_index(frame) for frame in frames] == clip4clip_indices(900, 30, 12, "uniform")


@pytest.mark.parametrize("ext", ["mp4", "webm", "avi", "mkv", "mov", "ts", "flv"])
def test_containers_with_seeking(tmp_path, ext):
    path = make_video(tmp_path / f"v.{ext}", 300, 5, keyframe_interval=10)  # 60 s at 5 fps
    assert indices_read(path) == clip4clip_indices(300, 5, 12, "uniform")
    assert indices_read(path, slice_mode="tail", max_frames=3) == [285, 290, 295]


def test_odd_tiny_and_portrait_sizes(tmp_path):
    tiny = make_video(tmp_path / "tiny.mp4", 7, 3, size=(17, 31), pix_fmt="yuv444p")
    frames = read_frames(tiny)
    assert [f.shape for f in frames] == [(17, 31, 3)] * 3 and [read_index(f) for f in frames] == [0, 3, 6]
    for ext in ("webm", "avi"):  # vp9 and mpeg4 keep odd sizes in yuv420p
        odd = make_video(tmp_path / f"odd.{ext}", 7, 3, size=(45, 33))
        assert read_frames(odd)[0].shape == (45, 33, 3) and indices_read(odd) == [0, 3, 6]
    portrait = make_video(tmp_path / "portrait.mp4", 10, 5, size=(96, 54))
    frames, mask = load_video(portrait, size=32)
    assert [read_index(f) for f in frames[: mask.sum()]] == [0, 5]


@pytest.mark.parametrize("rotation,hflip", [(-90, False), (90, False), (180, False), (-90, True), (0, True)])
def test_display_matrix_makes_frames_upright(tmp_path, rotation, hflip):
    import av

    ext = "mov" if hflip else "mp4"
    path = make_video(tmp_path / f"r.{ext}", 10, 5, size=(64, 36), rotation=rotation, hflip=hflip)
    frames = read_frames(path)
    assert [f.shape for f in frames] == [(64, 36, 3)] * 2 and [read_index(f) for f in frames] == [0, 5]
    with av.open(path) as container:  # the stored frames really are turned (the test is not vacuous)
        stored = next(container.decode(video=0)).to_ndarray(format="rgb24")
    with pytest.raises(AssertionError):
        read_index(stored)


def test_apply_display_matrix_is_the_rotation_it_encodes():
    image = np.arange(2 * 3).reshape(2, 3, 1)
    for degrees in (0, 90, 180, 270, -90):
        radians = np.radians(degrees)  # FFmpeg's av_display_rotation_set(matrix, -degrees)
        c, s = np.cos(radians), np.sin(radians)
        matrix = np.round(np.array([c, -s, 0, s, c, 0, 0, 0, 1]) * 65536).astype(np.int32)
        turned = apply_display_matrix(image, matrix)
        assert np.array_equal(turned, np.rot90(image, k=degrees // 90)), degrees  # counter-clockwise
    mirror = np.array([-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30], dtype=np.int32)
    assert np.array_equal(apply_display_matrix(image, mirror), image[:, ::-1])


def test_variable_frame_rate_takes_the_frame_shown_at_each_second(tmp_path):
    times = [0.0, 0.3, 1.5, 1.6, 3.0, 4.2, 7.9]
    path = make_video(tmp_path / "vfr.mkv", len(times), 10, timestamps=times)
    # Last frame lasts 0.1 s (the nominal rate): the video ends at 8.0 s, so 8 samples, t = 0..7.
    shown = [max(i for i, t in enumerate(times) if t <= second) for second in range(8)]
    assert shown == [0, 1, 3, 4, 4, 5, 5, 5]
    assert indices_read(path, max_frames=20) == shown


def test_non_integer_and_low_frame_rates(tmp_path):
    ntsc = make_video(tmp_path / "ntsc.mp4", 300, Fraction(30000, 1001), keyframe_interval=30)
    # The frame shown at each whole second; CLIP4Clip would use int(29.97) = 29 and take
    # 0, 29, 58, ... (ceil(300 / 29) = 11 frames) instead.
    expected = [int(k * Fraction(30000, 1001)) for k in range(11)]
    assert indices_read(ntsc, max_frames=20) == expected
    assert clip4clip_indices(300, 29, 20, "uniform")[:3] == [0, 29, 58]
    slow = make_video(tmp_path / "slow.mp4", 5, 0.5)  # 10 s; CLIP4Clip divides by int(0.5) = 0
    assert indices_read(slow, max_frames=20) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert indices_read(slow, max_frames=20, framerate=0.25) == [0, 2, 4]  # t = 0, 4, 8 s
    two_per_second = make_video(tmp_path / "ten.webm", 30, 10)
    assert indices_read(two_per_second, max_frames=20, framerate=2) == list(range(0, 30, 5))


def count_decoded(monkeypatch) -> list[int]:
    """Instrument the decoder (every cursor's one call into it); returns a one-element list holding the
    frames decoded so far."""
    from muse_infer.video import cursor

    count, decode = [0], cursor.decode_packet

    def counting(codec, packet):
        frames = decode(codec, packet)
        count[0] += len(frames)
        return frames

    monkeypatch.setattr(cursor, "decode_packet", counting)
    return count


READERS = {"planned": read_frames, "reference": video.read_frames_reference}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_long_video_is_not_fully_decoded(tmp_path, monkeypatch, ext, reader):
    # Two hours at one frame every 4 s, a keyframe every 8 frames (32 s).
    path = make_video(tmp_path / f"long.{ext}", 1800, 0.25, size=(40, 40), keyframe_interval=8)
    decoded = count_decoded(monkeypatch)
    frames = READERS[reader](path)
    assert [read_index(f) for f in frames] == [i // 4 for i in np.linspace(0, 7199, 12, dtype=int)]
    assert 12 <= decoded[0] < 12 * 8 + 20, decoded[0]  # at most about a GOP a sample, of 1800


@pytest.mark.parametrize("reader", READERS)
def test_short_gaps_decode_straight_through(tmp_path, monkeypatch, reader):
    path = make_video(tmp_path / "short.mp4", 150, 30, keyframe_interval=300)  # one keyframe
    decoded = count_decoded(monkeypatch)
    assert [read_index(f) for f in READERS[reader](path)] == clip4clip_indices(150, 30, 12, "uniform")
    assert 12 <= decoded[0] <= 150  # no seek back to the keyframe: each frame decoded once


@pytest.mark.parametrize("reader", READERS)
def test_a_seek_that_lands_past_the_target_steps_back(tmp_path, monkeypatch, reader):
    path = make_video(tmp_path / "v.mkv", 300, 5, keyframe_interval=10)
    name = "PlannedCursor" if reader == "planned" else "FrameCursor"
    real_cursor, overshoots = getattr(video, name), []

    class OvershootingSeeks(real_cursor):
        """Seeks 3 s past where asked whenever asked further than before, as inexact demuxers may."""

        def __init__(self, container, *args, **kwargs):
            super().__init__(container, *args, **kwargs)
            self.container = _SeekPastOnce(
                container, int(3 / container.streams.video[0].time_base), overshoots
            )

    monkeypatch.setattr(video, name, OvershootingSeeks)
    stats = video.DecodeStats()
    frames = read_frames(path, stats=stats) if reader == "planned" else READERS[reader](path)
    assert [read_index(f) for f in frames] == clip4clip_indices(300, 5, 12, "uniform")
    assert len(overshoots) >= 5 and stats.fallbacks == 0  # the proxy really made seeks overshoot


class _SeekPastOnce:
    """A container proxy whose seeks further ahead than the last one land ``ahead`` ticks past."""

    def __init__(self, container, ahead, log):
        self._container, self._ahead, self._log, self._last = container, ahead, log, None

    def seek(self, offset, **kwargs):
        if offset != self._last and (self._last is None or offset > self._last):
            self._log.append(offset)
            self._last = offset
            return self._container.seek(offset + self._ahead, **kwargs)
        return self._container.seek(offset, **kwargs)

    def __getattr__(self, name):
        return getattr(self._container, name)


def test_decodes_a_file_with_some_corrupt_packets(tmp_path):
    import av

    path = make_video(tmp_path / "v.mp4", 50, 10, keyframe_interval=10)
    data = bytearray(open(path, "rb").read())
    with av.open(path) as container:  # in mp4, a packet's pos and size are its sample's bytes
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    position, size = packets[23]  # a frame inside the third GOP, not a keyframe
    data[position : position + size] = os.urandom(size)
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    frames = read_frames(tmp_path / "damaged.mp4")
    assert len(frames) == 5 and read_index(frames[1]) == 10


def corrupt_every_packet(path, out):
    import av

    data = bytearray(open(path, "rb").read())
    with av.open(path) as container:
        for packet in container.demux(video=0):
            if packet.size:
                data[packet.pos : packet.pos + packet.size] = bytes(packet.size)
    out.write_bytes(bytes(data))
    return out


def make_bad_file(kind: str, tmp_path):
    """A file of one bad kind; returns (path, words the error's reason must contain)."""
    import av

    if kind == "empty":
        (tmp_path / "empty.mp4").write_bytes(b"")
        return tmp_path / "empty.mp4", "empty"
    if kind == "text":
        (tmp_path / "notes.mp4").write_text("not a video at all\n" * 50)
        return tmp_path / "notes.mp4", "not a readable video"
    if kind == "random":
        (tmp_path / "noise.avi").write_bytes(np.random.default_rng(0).bytes(20000))
        return tmp_path / "noise.avi", "not a readable video"
    if kind in ("truncated-mp4", "truncated-webm"):
        ext = kind.split("-")[1]
        data = open(make_video(tmp_path / f"full.{ext}", 100, 10, keyframe_interval=10), "rb").read()
        (tmp_path / f"cut.{ext}").write_bytes(data[: len(data) // 2])
        return tmp_path / f"cut.{ext}", "not a readable video" if ext == "mp4" else "truncated"
    if kind in ("audio-only", "audio-with-cover"):
        path = tmp_path / ("song.m4a" if kind == "audio-only" else "song.mp4")  # .m4a takes no mjpeg
        with av.open(str(path), "w") as container:
            stream = container.add_stream("aac", rate=16000)
            if kind == "audio-with-cover":  # a cover image is a one-frame video stream
                cover = container.add_stream("mjpeg")
                cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
                cover.disposition = av.stream.Disposition.attached_pic
                for packet in cover.encode(
                    av.VideoFrame.from_ndarray(index_image(0, 32, 32), format="rgb24")
                ):
                    container.mux(packet)
            for i in range(10):
                frame = av.AudioFrame.from_ndarray(
                    np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = 16000, i * 1024
                for packet in stream.encode(frame):
                    container.mux(packet)
        return path, "no video stream"
    if kind == "no-frames":
        good = make_video(tmp_path / "good.mp4", 20, 10)
        return corrupt_every_packet(good, tmp_path / "blank.mp4"), "no decodable video frames"
    if kind == "missing":
        return tmp_path / "nowhere.mp4", "not found"
    if kind == "directory":
        return tmp_path, "directory"
    raise AssertionError(kind)


BAD_KINDS = [
    "empty",
    "text",
    "random",
    "truncated-mp4",
    "truncated-webm",
    "audio-only",
    "audio-with-cover",
    "no-frames",
    "missing",
    "directory",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_files_raise_video_decode_error_naming_the_file(tmp_path, kind):
    path, reason = make_bad_file(kind, tmp_path)
    with pytest.raises(VideoDecodeError) as caught:
        load_video(path)
    assert isinstance(caught.value, ValueError)
    assert str(path) in str(caught.value) and caught.value.path == str(path)
    assert reason in caught.value.reason, caught.value.reason


def test_truncated_faststart_mp4_raises(tmp_path):
    import av

    source = make_video(tmp_path / "source.mkv", 100, 10, keyframe_interval=10)
    faststart = tmp_path / "faststart.mp4"  # index first: the cut file still opens
    with av.open(source) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.size:
                packet.stream = stream
                dst.mux(packet)
    data = faststart.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match="truncated"):
        load_video(tmp_path / "cut.mp4")


def test_unreadable_file_raises(tmp_path, monkeypatch):
    path = make_video(tmp_path / "secret.mp4", 5, 5)
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):  # root reads anything: make the open fail the same way
            import av

            def denied(*args, **kwargs):
                raise av.error.PermissionError(13, "Permission denied", path)

            monkeypatch.setattr(av, "open", denied)
        with pytest.raises(VideoDecodeError, match="permission denied"):
            load_video(path)
    finally:
        os.chmod(path, 0o644)


def test_sample_indices_is_clip4clips_slicing():
    assert sample_indices(5, 12) == [0, 1, 2, 3, 4]
    assert sample_indices(12, 12, "tail") == list(range(12))
    assert sample_indices(30, 12) == [0, 2, 5, 7, 10, 13, 15, 18, 21, 23, 26, 29]
    assert sample_indices(30, 4, "head") == [0, 1, 2, 3] and sample_indices(30, 4, "tail") == [26, 27, 28, 29]
    for n in (13, 100, 7201):
        assert sample_indices(n, 12) == list(np.linspace(0, n - 1, num=12, dtype=int))
    with pytest.raises(ValueError):
        sample_indices(10, 12, "middle")
    with pytest.raises(ValueError):
        load_video("any.mp4", framerate=0)


@pytest.mark.parametrize(
    "height,width", [(17, 31), (360, 640), (640, 360), (224, 224), (225, 300), (500, 223), (1, 1)]
)
def test_preprocess_matches_torchvision_pil_pipeline(height, width):
    from PIL import Image
    from torchvision.transforms import CenterCrop, Compose, Normalize, Resize, ToTensor

    clip4clip = Compose(
        [
            Resize(224, interpolation=Image.BICUBIC),
            CenterCrop(224),
            ToTensor(),
            Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    rgb = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ours = preprocess_frame(rgb, 224)
    assert ours.shape == (3, 224, 224) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, clip4clip(Image.fromarray(rgb)), atol=1e-6, rtol=0)


def test_index_code_survives_the_preprocessing():
    for index in (0, 1, 1234, 2**19 - 1):
        assert read_index(preprocess_frame(index_image(index, 48, 80), 224)) == index


def test_extensions_and_light_import():
    assert {
        ".mp4",
        ".avi",
        ".mkv",
        ".mov",
        ".webm",
        ".m4v",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".3gp",
        ".ts",
    } <= VIDEO_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in VIDEO_EXTENSIONS)
    code = "import sys, muse_infer.video; assert 'av' not in sys.modules and 'PIL' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_codec_ffmpeg_cannot_decode_is_named_plainly(tmp_path):
    from muse_infer.video import FrameSettings
    from muse_infer.video.pool import decode_one

    make_video(tmp_path / "ok.mp4", 24, 12, codec="libx264")
    data = (tmp_path / "ok.mp4").read_bytes()
    assert b"avc1" in data
    unknown = tmp_path / "unknown_codec.mp4"
    unknown.write_bytes(data.replace(b"avc1", b"zzzz"))  # the sample entry's codec tag
    with pytest.raises(VideoDecodeError, match="video codec is unknown to this FFmpeg"):
        read_frames(unknown, max_frames=2)
    reason = decode_one(str(unknown), FrameSettings(max_frames=2))
    assert reason.startswith("its video codec is unknown") and "Error" not in reason
