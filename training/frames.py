"""Decode each training video once: its clip kept as a uint8 ``.npy`` file.

A cache entry is exactly what ``muse_infer.video.read_clip`` returns, and what the decode workers of
``encode-videos`` send: the sampled frames (CLIP4Clip's rule), fitted to the model's size, as
(t, size, size, 3) uint8 with t <= max_frames real frames. ``normalise`` is
``muse_infer.video.clip_inputs``: the frames and mask the model gets, so training sees the frames that
encoding sees, through the same reader, settings (``FrameSettings``) and normalisation.

Entry name: SHA-1 of (absolute path, file size, mtime_ns, max_frames, framerate, slice_mode, size), so
an edited video or other sampling settings give a new entry. Entries are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from muse_infer.atomic import atomic_path
from muse_infer.progress import progress_bar
from muse_infer.video import CLIP_MEAN, CLIP_STD, FrameSettings, VideoDecodeError, clip_inputs, read_clip


def default_cache_dir() -> Path:
    """Where decoded frames go when no cache folder is given (``muse-infer train --cache-dir``, the
    ``cache_dir`` setting): $MUSE_FRAME_CACHE, else ~/.cache/muse-infer/frames. About 1.8 MB a video
    at 12 frames of 224 px; entries are never removed by the training (delete the folder to free it)."""
    return Path(os.environ.get("MUSE_FRAME_CACHE", Path.home() / ".cache" / "muse-infer" / "frames"))


def entry_path(cache_dir: str | os.PathLike, video: str | os.PathLike, sampling: FrameSettings) -> Path:
    """Where the cached frames of ``video`` under ``sampling`` live (the file may not exist yet)."""
    path = os.path.abspath(video)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"training video not found: {path}") from None
    key = json.dumps([path, stat.st_size, stat.st_mtime_ns, *vars(sampling).values()])
    digest = hashlib.sha1(key.encode()).hexdigest()
    return Path(cache_dir) / digest[:2] / f"{digest}.npy"


def decode_to_cache(job: tuple[str, str, FrameSettings]) -> str | None:
    """Decode one video into its cache entry unless it exists. Returns None, or why the video could not
    be read (a string: exceptions with extra arguments do not survive the trip back from a worker)."""
    video, cache_dir, sampling = job
    target = entry_path(cache_dir, video, sampling)
    if target.is_file():
        return None
    try:
        frames = read_clip(video, sampling)  # (t, S, S, 3) uint8
    except VideoDecodeError as error:
        return error.reason
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, frames)
    return None


def fill_cache(
    videos: Sequence[str],
    cache_dir: str | os.PathLike,
    sampling: FrameSettings,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, str]:
    """Make sure every video has a cache entry (decoding the missing ones); {video: entry path}.

    workers: decoding processes (default: CPU count; 0 or 1 decodes here); progress: show a
    "decoding frames" bar on stderr (``muse_infer.progress``: plain lines when stderr is a file). A
    video that cannot be decoded raises ``VideoDecodeError`` naming it.
    """
    unique = list(dict.fromkeys(videos))
    workers = (os.cpu_count() or 1) if workers is None else workers
    missing = [
        (v, str(cache_dir), sampling) for v in unique if not entry_path(cache_dir, v, sampling).is_file()
    ]
    with progress_bar(len(missing), "decoding frames", "video", enabled=progress and bool(missing)) as bar:
        if workers <= 1 or len(missing) < 2:
            failures = [_counted(decode_to_cache(job), bar) for job in missing]
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                failures = [_counted(r, bar) for r in pool.map(decode_to_cache, missing, chunksize=4)]
    for job, reason in zip(missing, failures, strict=True):
        if reason is not None:
            raise VideoDecodeError(job[0], reason)
    return {video: str(entry_path(cache_dir, video, sampling)) for video in unique}


def _counted(reason: str | None, bar) -> str | None:
    """``reason`` (a decode's outcome), after counting it on ``bar``."""
    bar.update(1)
    return reason


def normalise(
    entries: Sequence[np.ndarray], max_frames: int, mean=CLIP_MEAN, std=CLIP_STD
) -> tuple[np.ndarray, np.ndarray]:
    """Cached entries -> frames (B, max_frames, 3, S, S) float32 normalised with the model's ``mean``
    and ``std`` (CLIP's by default), zero-padded, and mask (B, max_frames) int64:
    ``muse_infer.video.clip_inputs``, the frames encoding gives the model."""
    return clip_inputs(entries, max_frames, mean, std)
