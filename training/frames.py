"""Decode each training video once: sampled, resized and cropped frames kept as uint8 ``.npy`` files.

A cache entry holds what ``muse_infer.video.load_video`` computes before its float normalisation: the
sampled frames (CLIP4Clip's rule), short side resized to ``size`` (PIL bicubic), centre-cropped, as
(t, size, size, 3) uint8 with t <= max_frames real frames. ``normalise`` turns a batch of entries into
exactly the float frames and mask ``load_video`` returns (same float32 operations), so training on
cached frames is training on ``load_video``'s output.

Entry name: SHA-1 of (absolute path, file size, mtime_ns, max_frames, framerate, slice_mode, size), so
an edited video or other sampling settings give a new entry. Entries are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muse_infer.checkpoint import atomic_path
from muse_infer.video import CLIP_MEAN, CLIP_STD, VideoDecodeError, read_frames


@dataclass(frozen=True)
class Sampling:
    """Frame sampling and size (the arguments of ``load_video``)."""

    max_frames: int = 12
    framerate: float = 1.0
    slice_mode: str = "uniform"
    size: int = 224


def default_cache_dir() -> Path:
    """$MUSE_FRAME_CACHE, else ~/.cache/muse-infer/frames."""
    return Path(os.environ.get("MUSE_FRAME_CACHE", Path.home() / ".cache" / "muse-infer" / "frames"))


def entry_path(cache_dir: str | os.PathLike, video: str | os.PathLike, sampling: Sampling) -> Path:
    """Where the cached frames of ``video`` under ``sampling`` live (the file may not exist yet)."""
    path = os.path.abspath(video)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"training video not found: {path}") from None
    key = json.dumps([path, stat.st_size, stat.st_mtime_ns, *vars(sampling).values()])
    digest = hashlib.sha1(key.encode()).hexdigest()
    return Path(cache_dir) / digest[:2] / f"{digest}.npy"


def fit_uint8(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: short side to ``size`` (PIL bicubic), centre crop.

    The geometry of ``muse_infer.video.preprocess_frame`` (which then only scales and normalises).
    """
    from PIL import Image

    height, width = rgb.shape[:2]
    short, long = min(height, width), max(height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.ascontiguousarray(np.asarray(image)[top : top + size, left : left + size])


def decode_to_cache(job: tuple[str, str, Sampling]) -> str | None:
    """Decode one video into its cache entry unless it exists. Returns None, or why the video could not
    be read (a string: exceptions with extra arguments do not survive the trip back from a worker)."""
    video, cache_dir, sampling = job
    target = entry_path(cache_dir, video, sampling)
    if target.is_file():
        return None
    try:
        images = read_frames(video, sampling.max_frames, sampling.framerate, sampling.slice_mode)
    except VideoDecodeError as error:
        return error.reason
    frames = np.stack([fit_uint8(image, sampling.size) for image in images])  # (t, S, S, 3)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, frames)
    return None


def fill_cache(
    videos: Sequence[str], cache_dir: str | os.PathLike, sampling: Sampling, workers: int | None = None
) -> dict[str, str]:
    """Make sure every video has a cache entry (decoding the missing ones); {video: entry path}.

    workers: decoding processes (default: CPU count; 0 or 1 decodes here). A video that cannot be
    decoded raises ``VideoDecodeError`` naming it.
    """
    unique = list(dict.fromkeys(videos))
    workers = (os.cpu_count() or 1) if workers is None else workers
    missing = [
        (v, str(cache_dir), sampling) for v in unique if not entry_path(cache_dir, v, sampling).is_file()
    ]
    if workers <= 1 or len(missing) < 2:
        failures = [decode_to_cache(job) for job in missing]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            failures = list(pool.map(decode_to_cache, missing, chunksize=4))
    for job, reason in zip(missing, failures, strict=True):
        if reason is not None:
            raise VideoDecodeError(job[0], reason)
    return {video: str(entry_path(cache_dir, video, sampling)) for video in unique}


def normalise(entries: Sequence[np.ndarray], max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Cached entries -> frames (B, max_frames, 3, S, S) float32 CLIP-normalised, zero-padded, and
    mask (B, max_frames) int64, as ``load_video`` returns them."""
    size = entries[0].shape[1]
    frames = np.zeros((len(entries), max_frames, 3, size, size), dtype=np.float32)
    mask = np.zeros((len(entries), max_frames), dtype=np.int64)
    mean, std = np.float32(CLIP_MEAN), np.float32(CLIP_STD)
    for row, entry in enumerate(entries):
        pixels = entry.astype(np.float32) / np.float32(255)  # (t, S, S, 3)
        frames[row, : len(entry)] = ((pixels - mean) / std).transpose(0, 3, 1, 2)
        mask[row, : len(entry)] = 1
    return frames, mask
