"""The frame fit's kernel (``muse_infer._fit``, csrc/fit) against PIL, its reference twin, bit for bit.

``fit_frame`` computes PIL's bytes with the kernel where it reproduces the installed Pillow: here the
kernel must be built and pass that check (a missing kernel would make every parity test below compare
PIL with itself), and it must give PIL's bytes on frames of every shape, both resize modes, both
interpolations, both orders of Pillow's two passes, shrinking and enlarging, any memory layout.
``MUSE_ALLOW_NO_KERNEL=1`` is the deliberate opt-out (a build with ``MUSE_SKIP_CPP_BUILD=1``).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import muse_infer
from muse_infer.video import frames
from muse_infer.video.frames import fit_frame, fit_frame_reference, fit_geometry


@pytest.fixture(scope="module")
def kernel():
    if os.environ.get("MUSE_ALLOW_NO_KERNEL") == "1":
        pytest.skip("MUSE_ALLOW_NO_KERNEL=1: running without the compiled kernels on purpose")
    loaded = frames._fit_kernel()
    if loaded is None:
        pytest.fail(
            "muse_infer._fit did not load or does not fit frames as the installed Pillow does; rebuild it: "
            "pip install --no-build-isolation -e ."
        )
    return loaded


def vertical_pass_first(height: int, width: int, new_h: int, new_w: int) -> bool:
    """Pillow 13's choice: the vertical pass first when the height shrinks more than twice the width."""
    return height - new_h > 0 and height - new_h > (width - new_w) * 2


def picture(rng, height: int, width: int, kind: str) -> np.ndarray:
    if kind == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "extremes":  # 0 beside 255: the bicubic's negative lobes clip at both ends
        return (rng.random((height, width, 3)) < 0.5).astype(np.uint8) * 255
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1), (x + y) % 256], -1)
    return (smooth + rng.integers(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8)


def random_cases(count: int, seed: int):
    rng = np.random.default_rng(seed)
    for number in range(count):
        height, width = (int(v) for v in rng.integers(1, 240, 2))
        size = int(rng.integers(1, 200))
        yield (
            height,
            width,
            size,
            ("shortest", "squash")[number % 2],
            ("bicubic", "bilinear")[number // 2 % 2],
            ("noise", "extremes", "smooth")[number % 3],
        )


RANDOM = list(random_cases(240, seed=7))
# Sizes of real videos and the model's (224; SigLIP's 256, 384 squashed), portrait and landscape.
VIDEO_SIZES = [
    (360, 640, 224, "shortest", "bicubic", "smooth"),
    (640, 360, 224, "shortest", "bicubic", "smooth"),
    (720, 1280, 224, "shortest", "bicubic", "noise"),
    (1080, 1920, 224, "shortest", "bicubic", "smooth"),
    (576, 720, 224, "shortest", "bilinear", "smooth"),
    (480, 480, 224, "shortest", "bicubic", "extremes"),
    (1080, 1920, 384, "squash", "bicubic", "smooth"),
    (1920, 1080, 256, "squash", "bicubic", "smooth"),
    (240, 320, 224, "shortest", "bicubic", "noise"),
    (120, 160, 224, "shortest", "bicubic", "noise"),  # enlarged
    (224, 224, 224, "shortest", "bicubic", "noise"),  # nothing to resize
    (224, 398, 224, "shortest", "bicubic", "noise"),  # the width alone
    (398, 224, 224, "shortest", "bilinear", "noise"),  # the height alone
    (1, 1, 224, "squash", "bicubic", "noise"),
    (1, 999, 17, "shortest", "bicubic", "noise"),
    (999, 2, 5, "squash", "bilinear", "extremes"),
]


def test_the_cases_take_both_orders_of_the_passes():
    orders = set()
    for height, width, size, mode, _, _ in RANDOM + VIDEO_SIZES:
        new_w, new_h, _, _ = fit_geometry(height, width, size, mode)
        if new_w != width and new_h != height:
            orders.add(vertical_pass_first(height, width, new_h, new_w))
    assert orders == {False, True}


@pytest.mark.parametrize("case", RANDOM + VIDEO_SIZES, ids=lambda case: "{}x{}-{}-{}-{}-{}".format(*case))
def test_the_kernel_gives_pils_bytes(kernel, case):
    height, width, size, mode, interpolation, kind = case
    rgb = picture(np.random.default_rng(height * 1000 + width), height, width, kind)
    expected = fit_frame_reference(rgb, size, mode, interpolation)
    assert expected.shape == (size, size, 3)
    assert np.array_equal(fit_frame(rgb, size, mode, interpolation), expected)


LAYOUTS = {
    "every other column": lambda rgb: rgb[:, ::2],
    "mirrored": lambda rgb: rgb[:, ::-1],
    "upside down": lambda rgb: rgb[::-1],
    "transposed": lambda rgb: rgb.swapaxes(0, 1),
    "Fortran order": np.asfortranarray,
    "channels reversed": lambda rgb: rgb[..., ::-1],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_any_memory_layout_gives_the_same_bytes(kernel, layout):
    rgb = LAYOUTS[layout](picture(np.random.default_rng(3), 97, 173, "noise"))
    for size, mode in ((33, "shortest"), (40, "squash")):
        assert np.array_equal(fit_frame(rgb, size, mode), fit_frame_reference(rgb, size, mode))


def test_the_kernel_checks_its_buffers(kernel):
    rgb, out = np.zeros((10, 20, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    kernel.fit(rgb, 10, 20, out, 8, 8, 16, 8, 4, 0, True)
    with pytest.raises(ValueError, match="sizes"):
        kernel.fit(rgb, 10, 21, out, 8, 8, 16, 8, 4, 0, True)  # the source is not 10x21
    with pytest.raises(ValueError, match="crop"):
        kernel.fit(rgb, 10, 20, out, 8, 8, 16, 8, 9, 0, True)  # columns 9..16 of 16
    with pytest.raises(ValueError, match="sizes"):
        kernel.fit(rgb, 10, 20, out, 8, 8, 0, 8, 0, 0, True)
    with pytest.raises((TypeError, BufferError)):
        kernel.fit(rgb, 10, 20, bytes(8 * 8 * 3), 8, 8, 16, 8, 4, 0, True)  # read-only output


def test_bad_frames_are_refused_by_name():
    for bad in (np.zeros((0, 5, 3), np.uint8), np.zeros((5, 5), np.uint8), np.zeros((5, 5, 3), np.float32)):
        for fit in (fit_frame, fit_frame_reference):
            with pytest.raises(ValueError, match="uint8 RGB"):
                fit(bad, 8)
    with pytest.raises(ValueError, match="size"):
        fit_frame(np.zeros((5, 5, 3), np.uint8), 0)


@pytest.mark.parametrize("by", ["kernel", "PIL"])
def test_a_frame_fitted_into_a_given_array_is_the_same_bytes(monkeypatch, by):
    """``out=``: the row of a clip a reader fills as it decodes (``reader.read_clip``) gets the bytes a
    new array would, and is what is returned; by the kernel, and by PIL where the kernel is not used."""
    if by == "PIL":
        monkeypatch.setattr(frames, "_fit_kernel", lambda: None)
    rng = np.random.default_rng(7)
    clip = np.full((3, 31, 31, 3), 7, np.uint8)
    for row, (height, width, mode) in enumerate(
        ((90, 160, "shortest"), (160, 90, "squash"), (31, 31, "shortest"))
    ):
        rgb = picture(rng, height, width, "noise")
        returned = fit_frame(rgb, 31, mode, "bicubic", out=clip[row])
        assert returned is clip[row] or np.shares_memory(returned, clip[row])
        np.testing.assert_array_equal(clip[row], fit_frame_reference(rgb, 31, mode))
    settings = frames.FrameSettings(size=31, interpolation="bilinear")
    rgb = picture(rng, 50, 70, "noise")
    settings.fit(rgb, out=clip[0])
    np.testing.assert_array_equal(clip[0], fit_frame_reference(rgb, 31, "shortest", "bilinear"))


def test_a_wrong_out_array_is_refused_by_name():
    rgb = np.zeros((10, 20, 3), np.uint8)
    wrong = {
        "size": np.zeros((8, 9, 3), np.uint8),
        "dtype": np.zeros((8, 8, 3), np.float32),
        "layout": np.zeros((8, 8, 6), np.uint8)[..., ::2],
        "read-only": np.zeros((8, 8, 3), np.uint8),
        "type": bytearray(8 * 8 * 3),
    }
    wrong["read-only"].flags.writeable = False
    for name, out in wrong.items():
        with pytest.raises(ValueError, match=r"out must be a writable C-contiguous \(8, 8, 3\) uint8"):
            fit_frame(rgb, 8, out=out)
        assert not np.any(out) if isinstance(out, np.ndarray) else not any(out), name  # nothing written


class _WrongKernel:
    """A kernel that fits every frame black: the check against Pillow must refuse it."""

    @staticmethod
    def fit(src, src_h, src_w, dst, *args):
        np.frombuffer(dst, dtype=np.uint8)[:] = 0


def test_a_kernel_that_differs_from_pillow_is_not_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "muse_infer._fit", _WrongKernel)
    monkeypatch.setattr(muse_infer, "_fit", _WrongKernel, raising=False)
    frames._fit_kernel.cache_clear()
    try:
        assert frames._fit_kernel() is None
        rgb = picture(np.random.default_rng(5), 50, 70, "noise")
        assert np.array_equal(fit_frame(rgb, 24), fit_frame_reference(rgb, 24))
        assert fit_frame(rgb, 24).any()
    finally:
        frames._fit_kernel.cache_clear()
