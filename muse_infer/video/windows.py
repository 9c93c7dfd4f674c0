"""Moments: a video cut into time windows, each encoded as its own clip (a row with ``start_s``/``end_s``).

Planning (``plan_windows``, a pure function): a video of ``duration`` seconds (the reader's timeline:
time 0 is the first frame, the end is the last frame's end) becomes the windows
``[k * stride, k * stride + window]`` for k = 0, 1, ... while the window ends before the video does,
then one last window aligned to the end, ``[duration - window, duration]`` (unless the previous one
already ends there). No two windows start less than half a stride apart: when the window aligned to
the end would start closer than that to the one before, that one is stretched to the end instead
(a 4.004 s video with a 4 s window is one window ``[0, 4.004]``, not two near-identical rows). So a
video shorter than ``window + stride / 2`` is one window ``[0, duration]``, every moment of the
video lies in some window, every window is ``window`` seconds long but the last (shorter for a short
video, at most ``stride / 2`` longer when stretched), and consecutive windows overlap by
``window - stride`` (the last pair possibly more).

Sampling inside a window (``sample_times``): the model's rule for a whole video on the window's own
timeline: ``n = ceil(length * framerate)`` sample times ``start + k / framerate`` (at least one), of
which ``sample_indices(n, max_frames, slice_mode)`` are kept. A window over the whole video samples
exactly the frames ``read_clip`` takes for it.

Defaults from the model (``default_window``): window = max_frames / framerate seconds (12 s for MUSE:
12 frames at one a second, the clip length it was trained on, so a window's frames are one a second
like its training clips), stride = window / 2 (every moment of at least half a window lies whole in
some window). ``--cuts shots`` plans windows from shot boundaries instead (``shot_windows``).

Only numpy (through ``sample_indices``) is imported here: decode workers plan their own windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from .frames import FrameSettings, sample_indices

CUTS = ("fixed", "shots")
MIN_STRIDE_S = 0.1  # a finer stride makes rows faster than any model samples frames (1 a second for MUSE)
MIN_SHOT_FRACTION = 0.25  # shots shorter than this part of a window are merged into a neighbour
_EPSILON = 1e-9  # seconds: float noise in k * stride


@dataclass(frozen=True)
class WindowSettings:
    """How videos are cut into moments: ``window`` seconds long, one starting every ``stride`` seconds
    (``cuts`` "fixed"), or at shot boundaries, long shots split into such windows (``cuts`` "shots")."""

    window: float
    stride: float
    cuts: str = "fixed"

    def __post_init__(self):
        if not (isinstance(self.window, (int, float)) and math.isfinite(self.window) and self.window > 0):
            raise ValueError(f"window must be a positive number of seconds, got {self.window!r}")
        if not (isinstance(self.stride, (int, float)) and math.isfinite(self.stride) and self.stride > 0):
            raise ValueError(f"stride must be a positive number of seconds, got {self.stride!r}")
        if self.stride < MIN_STRIDE_S:
            raise ValueError(
                f"stride {self.stride:g} s would make {1 / self.stride:.0f} rows a second of video; use a stride of "
                f"at least {MIN_STRIDE_S:g} s"
            )
        if self.stride > self.window:
            raise ValueError(
                f"stride {self.stride:g} s is longer than the window {self.window:g} s: parts of the video "
                "would be in no window; use a stride <= the window"
            )
        if self.cuts not in CUTS:
            raise ValueError(f"cuts must be one of {CUTS}, got {self.cuts!r}")

    def to_dict(self) -> dict:
        """As the job and the index's sidecar record them (``"windows"``)."""
        return {"window": float(self.window), "stride": float(self.stride), "cuts": self.cuts}

    @classmethod
    def from_dict(cls, data: dict | None) -> WindowSettings | None:
        return (
            None if not data else cls(float(data["window"]), float(data["stride"]), data.get("cuts", "fixed"))
        )


def default_window(settings: FrameSettings) -> float:
    """The model's clip length: ``max_frames / framerate`` seconds (12 s for MUSE)."""
    return settings.max_frames / settings.framerate


def window_settings(
    frames: FrameSettings, window: float | None, stride: float | None = None, cuts: str = "fixed"
) -> WindowSettings:
    """``WindowSettings`` with the model's defaults filled in (window: ``default_window``; stride: window / 2).

    A stride given alone takes the default window; a stride longer than the window is an error.
    """
    window = default_window(frames) if window is None else float(window)
    stride = window / 2 if stride is None else float(stride)
    return WindowSettings(window, stride, cuts)


def plan_windows(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """The windows [(start_s, end_s), ...] of a video ``duration`` seconds long, ascending (see above).

    >>> plan_windows(20.0, 6.0, 3.0)
    [(0.0, 6.0), (3.0, 9.0), (6.0, 12.0), (9.0, 15.0), (12.0, 18.0), (14.0, 20.0)]
    >>> plan_windows(4.004, 4.0, 2.0)  # the window aligned to the end would start 4 ms after the first
    [(0.0, 4.004)]
    """
    if not duration >= 0 or not window > 0 or not stride > 0:
        raise ValueError(f"need duration >= 0, window > 0, stride > 0; got {duration}, {window}, {stride}")
    if duration <= window + _EPSILON:
        return [(0.0, float(duration))]
    windows = []
    k = 0
    while k * stride + window < duration - _EPSILON:
        windows.append((k * stride, k * stride + window))
        k += 1
    last_start = duration - window
    if last_start - windows[-1][0] < stride / 2 - _EPSILON:  # too close to the one before: stretch that
        windows[-1] = (windows[-1][0], duration)
    else:
        windows.append((last_start, duration))
    # Rounded to microseconds (no 12.600000000000001), but the last end: the video's end exactly.
    return [(_tidy(start), _tidy(end) if end != duration else float(end)) for start, end in windows]


def _tidy(seconds: float) -> float:
    return float(round(seconds, 6))


def shot_windows(
    duration: float, cuts: Sequence[float], window: float, stride: float
) -> list[tuple[float, float]]:
    """Windows that follow shots: ``cuts`` are shot boundaries (seconds, any order) in ``(0, duration)``.

    Shots shorter than ``MIN_SHOT_FRACTION * window`` are merged into the shot before them (the first
    into the next); a shot longer than ``window`` is split into windows as ``plan_windows`` splits a
    video; every window is then offset to its shot's start. Windows never cross a kept boundary.
    """
    bounds = sorted({0.0, float(duration), *(float(c) for c in cuts if 0 < c < duration)})
    shots = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=False)]
    shots = _merge_short(shots, MIN_SHOT_FRACTION * window) or [(0.0, float(duration))]
    windows = []
    for start, end in shots:
        length = end - start
        for a, b in plan_windows(length, window, stride):
            windows.append((_tidy(start + a), end if b == length else _tidy(start + b)))
    return [(start, float(duration) if end == duration else end) for start, end in windows]


def _merge_short(shots: list[tuple[float, float]], shortest: float) -> list[tuple[float, float]]:
    """Join each shot shorter than ``shortest`` to the shot before it (the first shot to the next)."""
    merged: list[tuple[float, float]] = []
    for start, end in shots:
        if merged and (end - start < shortest or merged[-1][1] - merged[-1][0] < shortest):
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def sample_times(start: float, end: float, settings: FrameSettings) -> list[float]:
    """The sample times (seconds, ascending) of the window [start, end]: the whole-video rule on its timeline."""
    return [float(t) for t in exact_sample_times(exact_seconds(start), exact_seconds(end), settings)]


def exact_seconds(seconds: float) -> Fraction:
    """A planned time as an exact fraction: the nearest microsecond (windows are planned to microseconds)."""
    return Fraction(round(seconds * 1_000_000), 1_000_000)


def exact_sample_times(start: Fraction, end: Fraction, settings: FrameSettings) -> list[Fraction]:
    """``sample_times`` in exact fractions of a second (what the readers use to find frames)."""

    rate = Fraction(settings.framerate).limit_denominator(1_000_000)
    n = max(1, math.ceil((end - start) * rate))
    return [start + k / rate for k in sample_indices(n, settings.max_frames, settings.slice_mode)]
