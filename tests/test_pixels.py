"""``muse_infer.video.pixels``: swscale on one thread gives PyAV's default (threaded) conversion bit for bit.

The frames are large enough for swscale to cut them into slices across threads (the case where the
two could differ), of awkward sizes, 8 and 10 bits, 4:2:0, 4:2:2 and 4:4:4, limited and full range,
BT.601 and BT.709; scaled as the thumbnails scale; and read through the readers.
"""

from __future__ import annotations

import os
import sys

import av
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from video_factory import make_video  # noqa: E402

from muse_infer.video import pixels, reader  # noqa: E402
from muse_infer.video.frames import FrameSettings  # noqa: E402

FRAMES = [  # (height, width, pix_fmt, colorspace, color_range)
    (1080, 1920, "yuv420p", None, None),
    (361, 643, "yuv420p", "ITU709", "MPEG"),
    (720, 1278, "yuvj420p", None, "JPEG"),
    (1082, 1918, "yuv420p10le", "ITU709", None),
    (481, 855, "yuv422p", "ITU601", "MPEG"),
    (479, 641, "yuv444p", None, None),
    (1080, 1920, "nv12", None, None),
]


def _frame(height, width, pix_fmt, colorspace, color_range, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
    if colorspace is not None:
        frame.colorspace = getattr(av.video.reformatter.Colorspace, colorspace)
    if color_range is not None:
        frame.color_range = getattr(av.video.reformatter.ColorRange, color_range)
    return frame


@pytest.mark.parametrize(
    "case", FRAMES, ids=["x".join(map(str, c[:2])) + f"-{c[2]}-{c[3]}-{c[4]}" for c in FRAMES]
)
def test_rgb_on_one_thread_is_pyavs_default_conversion_bit_for_bit(case):
    frame = _frame(*case)
    one = pixels.rgb24(frame)
    assert one.shape == (case[0], case[1], 3) and one.dtype == np.uint8
    assert np.array_equal(one, frame.to_ndarray(format="rgb24"))
    assert np.array_equal(pixels.rgb24(frame, one_thread=False), frame.to_ndarray(format="rgb24"))


@pytest.mark.parametrize(
    "size, interpolation", [((224, 398), "AREA"), ((97, 171), "AREA"), ((360, 641), "BILINEAR")]
)
def test_scaling_on_one_thread_is_pyavs_default_scaling(size, interpolation):
    frame = _frame(1080, 1920, "yuv420p", "ITU709", None, seed=1)
    height, width = size
    options = dict(width=width, height=height, format="rgb24", interpolation=interpolation)
    one = pixels.reformat(frame, **options).to_ndarray()
    assert one.shape == (height, width, 3)
    assert np.array_equal(one, frame.reformat(**options).to_ndarray())


def test_one_thread_is_asked_for_only_where_pyav_has_threads(monkeypatch):
    pixels._one_thread.cache_clear()
    try:
        monkeypatch.setattr(av, "__version__", "16.1.0")
        assert pixels._one_thread() == {}
        pixels._one_thread.cache_clear()
        monkeypatch.setattr(av, "__version__", "17.0.0")
        assert pixels._one_thread() == {"threads": 1}
    finally:
        pixels._one_thread.cache_clear()


def test_the_readers_convert_on_one_thread_and_the_reference_as_it_was(tmp_path):
    path = make_video(tmp_path / "v.mp4", 30, 10, size=(90, 160), index_colour=False, keyframe_interval=10)
    with reader._open(path) as container:
        assert not reader.open_timeline(path, container, seek=True, planned=False).one_thread
    with reader.open_for_planned(path) as container:
        assert reader.open_timeline(path, container, seek=True).one_thread
    for sampling in ("exact", "keyframes"):
        settings = FrameSettings(max_frames=4, framerate=1.0, sampling=sampling)
        clip = reader.read_clip(path, settings)
        if sampling == "exact":
            assert np.array_equal(clip, reader.read_clip_reference(path, settings))
        assert clip.shape[1:] == (224, 224, 3)
