"""Read every window of a video in one pass: decode it once, front to back, and hand out each window's clip.

``read_windows(path, settings, windows)`` plans the windows from the video's duration
(``windows.plan_windows``, or ``shot_windows`` with shot boundaries), lists every window's sample
times (``windows.sample_times``: the whole-video rule on the window's timeline), and walks the
timeline once: each packet is demuxed and decoded once, never seeking (``DecodeStats`` counts it),
and the frame shown at a sample time is fitted to the model (``fit_frame``) once, even when several
overlapping windows sample it. A window's clip is yielded as soon as its last sample is decoded, in
window order, and forgotten by the reader: it keeps only the frames of windows not yet complete, at
most ``max_frames * ceil(window / stride + 1)`` of them, whatever the video's length.

The walk is planned (``planned.PlannedCursor``): every sample time is known before decoding starts,
so only what the sampled frames need is decoded (from the keyframe before each, skipping non-reference
frames); with ``sampling="keyframes"`` only the keyframes taken are (``keyframes.KeyframeCursor``).
A video the plan does not cover is walked again by the reference cursor, every frame decoded, and
the windows not yet yielded come from that walk (``DecodeStats.fallbacks``).

The frames are those ``reader.read_window_clip`` gives for each window (which opens the file and
seeks: the reference twin, compared in the tests); errors are ``reader``'s (``VideoDecodeError``).
Before decoding, the end of the video is found as ``read_clip`` finds it: by demuxing (not decoding)
the packets after the last keyframe (``DecodeStats.probe_packets``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import VideoDecodeError
from .cursor import FrameCursor
from .frames import FrameSettings
from .keyframes import KeyframeCursor
from .planned import PlannedCursor, Unplanned
from .reader import DecodeStats, _open, open_for_planned, open_timeline
from .windows import WindowSettings, exact_sample_times, plan_windows, shot_windows

# Shot boundaries of a video, in seconds: (path, duration) -> cuts. Given by ``--cuts shots``.
CutFinder = Callable[[str, float], Sequence[float]]


@dataclass
class WindowClip:
    """One window of a video: its time range (seconds from the first frame) and clip (t, S, S, 3) uint8."""

    start_s: float
    end_s: float
    pixels: np.ndarray


def read_windows(
    path: str | os.PathLike,
    settings: FrameSettings,
    windows: WindowSettings,
    stats: DecodeStats | None = None,
    find_cuts: CutFinder | None = None,
    facts=None,
) -> Iterator[WindowClip]:
    """The clips of every window of a video, in time order (see the module docstring).

    windows: the window length and stride (``cuts`` "shots" needs ``find_cuts``). stats: filled with
    what the pass cost. facts: a ``video.facts.VideoFacts`` filled before the first window. Raises ``VideoDecodeError`` naming the file when it cannot be read as a video
    (possibly after some windows were yielded: a video whose data breaks off midway).
    """
    import av

    stats = stats if stats is not None else DecodeStats()
    first = KeyframeCursor if settings.sampling == "keyframes" else PlannedCursor
    yielded = 0
    decoder = settings.decoder
    for kind in (first, FrameCursor):
        if kind is not FrameCursor:
            opened = open_for_planned(path, decoder, stats)
        else:
            opened = _open(path, decoder=decoder, stats=stats)
        with opened as container:
            try:
                for number, clip in enumerate(
                    _walk(path, container, settings, windows, stats, find_cuts, kind, facts)
                ):
                    if number == yielded:  # after a fallback, the windows already given are skipped
                        yielded += 1
                        yield clip
                return
            except Unplanned:
                stats.fallbacks += 1
            except av.FFmpegError as error:
                raise VideoDecodeError(path, f"decoding failed ({error})") from None


def plan_for(
    path, duration: float, windows: WindowSettings, find_cuts: CutFinder | None
) -> list[tuple[float, float]]:
    """The windows of a video of ``duration`` seconds: fixed, or following its shots."""
    if windows.cuts == "shots":
        if find_cuts is None:
            raise ValueError("cuts='shots' needs find_cuts (e.g. muse_infer.video.shots.find_shot_cuts)")
        return shot_windows(duration, find_cuts(os.fspath(path), duration), windows.window, windows.stride)
    return plan_windows(duration, windows.window, windows.stride)


def _walk(path, container, settings, windows, stats, find_cuts, kind, facts=None) -> Iterator[WindowClip]:
    timeline = open_timeline(path, container, seek=False, stats=stats, cursor_kind=kind)
    if facts is not None:
        facts.fill(timeline)
    plan = plan_for(path, float(timeline.duration), windows, find_cuts)
    wanted = _sample_plan(timeline, plan, settings)  # (target pts, window, slot), ascending
    if isinstance(timeline.cursor, PlannedCursor):
        timeline.cursor.plan(target for target, _, _ in wanted)
    slots = [[None] * count for count in _slot_counts(wanted, len(plan))]
    filled = [0] * len(plan)
    next_out, held = 0, 0
    last_target, picture = None, None
    for target, window, slot in wanted:
        if target != last_target:
            frame = timeline.cursor.frame_at(target)
            _check(path, timeline, target)
            if picture is None or frame.pts != picture[0]:  # a new frame: fit it once for every window
                stats.frames_converted += 1
                picture = (frame.pts, settings.fit(timeline.upright(frame)))
            last_target = target
        slots[window][slot] = picture[1]
        filled[window] += 1
        held += 1
        stats.peak_frames_held = max(stats.peak_frames_held, held)
        while next_out < len(plan) and filled[next_out] == len(slots[next_out]):
            start, end = plan[next_out]
            yield WindowClip(start, end, np.stack(slots[next_out]))
            held -= len(slots[next_out])
            slots[next_out] = None  # forget the window's frames
            next_out += 1


def _sample_plan(timeline, plan, settings) -> list[tuple[int, int, int]]:
    """Every (target pts, window number, frame slot) of the plan, sorted by time then window."""
    wanted = []
    for number, (start, end) in enumerate(plan):
        times = exact_sample_times(timeline.exact(start), timeline.exact(end), settings)
        wanted += [(timeline.target(t), number, slot) for slot, t in enumerate(times)]
    return sorted(wanted)


def _slot_counts(wanted, windows: int) -> list[int]:
    counts = [0] * windows
    for _, window, _ in wanted:
        counts[window] += 1
    return counts


def _check(path, timeline, target: int) -> None:
    from .reader import _check_reached

    _check_reached(path, timeline.cursor, timeline.stream, target)
