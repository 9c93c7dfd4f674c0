"""Pixel-format conversion of decoded frames (FFmpeg's swscale through PyAV), on the calling thread.

PyAV 17 made ``VideoFrame.reformat`` (and ``to_ndarray(format=...)``) multithreaded by default: each
conversion builds a new swscale context with one thread per CPU. For a frame at a time that is
mostly thread start-up: converting a decoded 640x360 frame to RGB cost 0.3 to 2.4 CPU ms that way
against 0.1 ms on one thread (the same bytes; measured on 2 cores, more threads on more cores).
Decode workers already run one a core, so every conversion here runs on one thread; the reference
reader keeps PyAV's default, as it was (``benchmarks/bench_decode.py``'s "before").
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def _one_thread() -> dict:
    """``reformat``'s keyword for a one-thread conversion: PyAV < 17 has no ``threads`` (and no threads)."""
    import av

    major = int(av.__version__.split(".")[0])
    return {"threads": 1} if major >= 17 else {}


def _threads(one_thread: bool) -> dict:
    return _one_thread() if one_thread else {}


def reformat(frame, one_thread: bool = True, **options):
    """``frame.reformat(**options)`` (a new ``av.VideoFrame``), on this thread unless ``one_thread`` is False."""
    return frame.reformat(**options, **_threads(one_thread))


def rgb24(frame, one_thread: bool = True) -> np.ndarray:
    """A decoded frame as (H, W, 3) uint8 RGB, swscale's default conversion (what ``to_ndarray`` gives)."""
    return frame.to_ndarray(format="rgb24", **_threads(one_thread))
