"""Frames between the decoder and the model: one geometry, one normalisation, one settings type.

A decoded frame takes exactly two forms on its way to the model:

1. ``fit_frame``: (H, W, 3) uint8 RGB as decoded -> (S, S, 3) uint8, the short side resized to S
   (PIL bicubic, as torchvision's ``Resize`` on PIL images: long side ``int(S * long / short)``) and
   centre-cropped; or, for models whose open_clip preprocessing says "squash" (SigLIP's), resized to
   S x S without cropping; bilinear where the model's config says so. PIL's bytes, computed by
   ``muse_infer._fit`` (only the pixels the crop keeps) where it reproduces the installed Pillow.
   Decode workers and the training frame cache stop here: uint8 is 4x smaller than float32 to ship
   between processes or to keep on disk.
2. ``normalise`` (where the model runs): uint8 -> float32 (3, S, S), ``(pixel / 255 - mean) / std``
   with the model's mean and std (CLIP's by default): the numbers of CLIP4Clip's and open_clip's
   torchvision pipelines, bit for bit.

The model's choices travel in ``FrameSettings`` (``resize_mode``, ``interpolation``, ``mean``, ``std``),
recorded by an index only where they differ from CLIP4Clip's, so indexes made before them still match.

``clip_inputs`` pads a batch of clips to the model's frame count and builds the mask; ``clip_pixels``
does the same in uint8, for a backend that normalises on its device (``runtime.torch_backend``,
``normalise_pixels``: the same float32 math). Only numpy, PIL and ``muse_infer._fit`` (built without
torch) are imported here: decode workers never import torch.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import CLIP_MEAN, CLIP_STD, INTERPOLATIONS, RESIZE_MODES
from .devices import check_decoder_name

logger = logging.getLogger(__name__)

SLICE_MODES = ("uniform", "head", "tail")
# "exact": the frame shown at each sample time (CLIP4Clip's rule); "keyframes": the keyframe nearest
# each sample time, decoding nothing else (much cheaper; the frames are up to half a keyframe
# interval away from the sample times).
SAMPLINGS = ("exact", "keyframes")


@dataclass(frozen=True)
class FrameSettings:
    """How a video becomes a clip: frames sampled (at most ``max_frames``, ``framerate`` a second,
    ``slice_mode`` choosing which when there are more), their size ``size`` x ``size``, whether each
    is the frame shown at its sample time or the nearest keyframe (``sampling``, one of ``SAMPLINGS``),
    how a frame is fitted (``resize_mode`` "shortest" or "squash", ``interpolation``) and normalised
    (``mean``, ``std``): the model's open_clip preprocessing. ``decoder``: where the frames are decoded
    ("cpu", "cuda", "cuda:N": ``video.devices``); it changes no frame, so an index does not record it."""

    max_frames: int = 12
    framerate: float = 1.0
    slice_mode: str = "uniform"
    size: int = 224
    sampling: str = "exact"
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    decoder: str = "cpu"

    def __post_init__(self):
        if not isinstance(self.max_frames, int) or self.max_frames < 1:
            raise ValueError(f"max_frames must be a positive integer, got {self.max_frames!r}")
        if not self.framerate > 0:
            raise ValueError(f"framerate must be > 0 frames a second, got {self.framerate!r}")
        if self.slice_mode not in SLICE_MODES:
            raise ValueError(f"slice_mode must be one of {SLICE_MODES}, got {self.slice_mode!r}")
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive integer, got {self.size!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        check_decoder_name(self.decoder)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std must be 3 numbers (std > 0), got {self.mean}, {self.std}")

    def to_dict(self) -> dict:
        """The settings as an index records them (``image_size`` for ``size``). ``sampling``, and the
        preprocessing fields, only when not CLIP4Clip's: every index made before them holds those, so
        their settings stay equal."""
        recorded = {
            "max_frames": self.max_frames,
            "framerate": self.framerate,
            "slice_mode": self.slice_mode,
            "image_size": self.size,
        }
        for name, default in (("sampling", "exact"),) + tuple(_PREPROCESS_DEFAULTS.items()):
            value = getattr(self, name)
            if value != default:
                recorded[name] = list(value) if isinstance(value, tuple) else value
        return recorded

    @classmethod
    def from_dict(cls, recorded: dict) -> FrameSettings:
        """The settings ``to_dict`` recorded (an index's, a shard's)."""
        fields = {k: v for k, v in recorded.items() if k != "image_size"}
        return cls(size=int(recorded["image_size"]), **fields)

    def fit(self, rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``fit_frame`` with these settings: (H, W, 3) uint8 -> (size, size, 3) uint8 (into ``out``)."""
        return fit_frame(rgb, self.size, self.resize_mode, self.interpolation, out)


_PREPROCESS_DEFAULTS = {
    "resize_mode": "shortest",
    "interpolation": "bicubic",
    "mean": CLIP_MEAN,
    "std": CLIP_STD,
}


def fit_frame(
    rgb: np.ndarray,
    size: int = 224,
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size, size, 3) uint8: short side to ``size`` then centre crop
    ("shortest", CLIP's), or resized to size x size ("squash", SigLIP's); PIL ``interpolation``
    ("bicubic" or "bilinear"), as torchvision's ``Resize`` on PIL images in open_clip's transforms.

    PIL's bytes, computed by ``muse_infer._fit`` (csrc/fit: Pillow's resampling on packed RGB, only the
    pixels the crop keeps; 3.5x cheaper for a 640x360 frame) where that reproduces the installed Pillow,
    which is checked once a process; else by PIL itself (``fit_frame_reference``).

    out: a C-contiguous (size, size, 3) uint8 array to write into and return (a clip's row, so that a
    reader fills one clip array as it decodes: ``reader.read_clip``), or None for a new array."""
    rgb = _check_fit(rgb, size, resize_mode, interpolation)
    if out is not None:
        _check_out(out, size)
    kernel = _fit_kernel()
    if kernel is None:
        fitted = _fit_by_pil(rgb, size, resize_mode, interpolation)
        if out is None:
            return fitted
        out[...] = fitted
        return out
    return _fit_by_kernel(kernel, rgb, size, resize_mode, interpolation, out)


def fit_frame_reference(
    rgb: np.ndarray, size: int = 224, resize_mode: str = "shortest", interpolation: str = "bicubic"
) -> np.ndarray:
    """``fit_frame`` by PIL: ``Image.resize`` of the whole frame, then the crop (the reference twin)."""
    return _fit_by_pil(_check_fit(rgb, size, resize_mode, interpolation), size, resize_mode, interpolation)


def _fit_by_kernel(
    kernel, rgb: np.ndarray, size: int, resize_mode: str, interpolation: str, out: np.ndarray | None = None
) -> np.ndarray:
    height, width = rgb.shape[:2]
    new_w, new_h, left, top = fit_geometry(height, width, size, resize_mode)
    fitted = np.empty((size, size, 3), dtype=np.uint8) if out is None else out
    source = np.ascontiguousarray(rgb)
    kernel.fit(source, height, width, fitted, size, size, new_w, new_h, left, top, interpolation == "bicubic")
    return fitted


def _fit_by_pil(rgb: np.ndarray, size: int, resize_mode: str, interpolation: str) -> np.ndarray:
    from PIL import Image

    resample = Image.BICUBIC if interpolation == "bicubic" else Image.BILINEAR
    height, width = rgb.shape[:2]
    new_w, new_h, left, top = fit_geometry(height, width, size, resize_mode)
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), resample)
    return np.ascontiguousarray(np.asarray(image)[top : top + size, left : left + size])


def fit_geometry(height: int, width: int, size: int, resize_mode: str) -> tuple[int, int, int, int]:
    """Where ``fit_frame`` takes a frame of ``height`` x ``width``: (new_w, new_h, left, top), the size
    it is resized to and the corner of the size x size crop kept. "shortest": the short side to
    ``size``, the long side ``int(size * long / short)`` (torchvision's ``Resize``), the crop centred
    (its ``CenterCrop``); "squash": size x size."""
    if resize_mode == "squash":
        return size, size, 0, 0
    short, long = min(height, width), max(height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_w, new_h, int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))


def _check_fit(rgb, size: int, resize_mode: str, interpolation: str) -> np.ndarray:
    rgb = np.asarray(rgb)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    if resize_mode not in RESIZE_MODES or interpolation not in INTERPOLATIONS:
        raise ValueError(f"resize_mode/interpolation must be in {RESIZE_MODES}/{INTERPOLATIONS}")
    return rgb


def _check_out(out, size: int) -> None:
    if not (
        isinstance(out, np.ndarray)
        and out.shape == (size, size, 3)
        and out.dtype == np.uint8
        and out.flags.c_contiguous
        and out.flags.writeable
    ):
        shown = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a writable C-contiguous ({size}, {size}, 3) uint8 array, got {shown}")


# Frames the kernel must fit as the installed PIL does before it is used: (height, width, size, mode,
# interpolation), both pass orders of Pillow's resampling (the vertical pass first when the height
# shrinks more than twice as much as the width: the 160x90 squash), shrinking and enlarging.
_FIT_PROBES = (
    (36, 64, 22, "shortest", "bicubic"),
    (64, 36, 22, "shortest", "bilinear"),
    (160, 90, 56, "squash", "bicubic"),
    (160, 90, 56, "squash", "bilinear"),
    (7, 11, 19, "shortest", "bicubic"),
    (30, 20, 30, "squash", "bicubic"),
)


@functools.cache
def _fit_kernel():
    """``muse_infer._fit`` when it is built and fits the probes as the installed Pillow does, else None."""
    try:
        from .. import _fit
    except ImportError as error:
        logger.debug("muse_infer._fit not loaded (%s); frames are fitted by PIL", error)
        return None
    rng = np.random.default_rng(0)
    for height, width, size, mode, interpolation in _FIT_PROBES:
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        rgb[: height // 2] //= 4  # an edge: clipping, negative lobes
        fitted = _fit_by_kernel(_fit, rgb, size, mode, interpolation)
        if not np.array_equal(fitted, _fit_by_pil(rgb, size, mode, interpolation)):
            import PIL

            logger.debug("muse_infer._fit differs from Pillow %s; frames are fitted by PIL", PIL.__version__)
            return None
    return _fit


def normalise(
    pixels: np.ndarray, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> np.ndarray:
    """(..., S, S, 3) uint8 -> (..., 3, S, S) float32: (pixel / 255 - mean) / std (CLIP's by default)."""
    scaled = pixels.astype(np.float32) / np.float32(255)
    normalised = (scaled - np.float32(mean)) / np.float32(std)  # (..., S, S, 3)
    return np.ascontiguousarray(np.moveaxis(normalised, -1, -3))


def clip_inputs(
    clips: Sequence[np.ndarray],
    max_frames: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs from clips of 1..max_frames uint8 frames each, (t_i, S, S, 3).

    Returns frames (B, max_frames, 3, S, S) float32, normalised with ``mean`` and ``std`` (the model's;
    CLIP's by default), zero after each clip's real frames, and mask (B, max_frames) int64, 1 for a real
    frame (CLIP4Clip's ``video_mask``).
    """
    size = _check_clips(clips, max_frames)
    frames = np.zeros((len(clips), max_frames, 3, size, size), dtype=np.float32)
    mask = np.zeros((len(clips), max_frames), dtype=np.int64)
    for row, clip in enumerate(clips):
        frames[row, : len(clip)] = normalise(clip, mean, std)
        mask[row, : len(clip)] = 1
    return frames, mask


def clip_pixels(
    clips: Sequence[np.ndarray], max_frames: int, out: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``clip_inputs`` before normalising: pixels (B, max_frames, S, S, 3) uint8, zero after each
    clip's real frames, and mask (B, max_frames) int64. For a model that normalises on its device.

    out: (pixels, mask) arrays of those shapes and dtypes to fill (e.g. views of pinned memory).
    """
    size = _check_clips(clips, max_frames)
    shape = (len(clips), max_frames, size, size, 3)
    if out is None:
        out = (np.empty(shape, dtype=np.uint8), np.empty(shape[:2], dtype=np.int64))
    pixels, mask = out
    if pixels.shape != shape or pixels.dtype != np.uint8 or mask.shape != shape[:2] or mask.dtype != np.int64:
        raise ValueError(f"out must be uint8 {shape} and int64 {shape[:2]}, got {pixels.shape}, {mask.shape}")
    for row, clip in enumerate(clips):
        pixels[row, : len(clip)] = clip
        pixels[row, len(clip) :] = 0
        mask[row, : len(clip)] = 1
        mask[row, len(clip) :] = 0
    return pixels, mask


def _check_clips(clips: Sequence[np.ndarray], max_frames: int) -> int:
    """The frame size S of ``clips``; ValueError unless each is (1..max_frames, S, S, 3)."""
    if not len(clips):
        raise ValueError("clip_inputs needs at least one clip")
    size = clips[0].shape[1]
    for row, clip in enumerate(clips):
        if not 1 <= len(clip) <= max_frames or clip.shape[1:] != (size, size, 3):
            raise ValueError(
                f"clip {row} has shape {clip.shape}; expected (1..{max_frames}, {size}, {size}, 3)"
            )
    return size


def sample_indices(n: int, max_frames: int, slice_mode: str = "uniform") -> list[int]:
    """Which of ``n`` per-second samples to keep: at most ``max_frames`` indices, ascending.

    CLIP4Clip's ``slice_framepos`` rule: all of them when ``n <= max_frames``; otherwise
    ``linspace(0, n - 1, max_frames)`` rounded down ("uniform"), the first ("head") or the last
    ("tail") ``max_frames``.
    """
    if slice_mode not in SLICE_MODES:
        raise ValueError(f"slice_mode must be one of {SLICE_MODES}, got {slice_mode!r}")
    if max_frames < 1 or n < 0:
        raise ValueError(f"need max_frames >= 1 and n >= 0, got max_frames={max_frames}, n={n}")
    if n <= max_frames:
        return list(range(n))
    if slice_mode == "head":
        return list(range(max_frames))
    if slice_mode == "tail":
        return list(range(n - max_frames, n))
    return [int(i) for i in np.linspace(0, n - 1, num=max_frames, dtype=int)]
