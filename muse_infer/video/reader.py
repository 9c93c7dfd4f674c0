"""Read a video into sampled frames, the way CLIP4Clip samples them.

Sampling rule (framerate r frames a second, default 1):
  1. Timeline: time 0 is the first decoded frame's timestamp; the video ends at the last frame's
     timestamp plus that frame's duration (read from the demuxed packets, so a container's declared
     duration is only a hint). The video has ``n = #{k >= 0 : k / r < end}`` sample times (at least 1).
  2. Sample ``k`` is the frame shown at ``t_k = k / r``: the last frame whose timestamp is <= t_k.
  3. ``sample_indices(n, max_frames, slice_mode)`` keeps at most ``max_frames`` of the n samples
     (uniform: ``np.linspace(0, n - 1, max_frames, dtype=int)``; head: the first; tail: the last).
At a constant integer frame rate f with r = 1 this is CLIP4Clip's rule exactly: frame k*f has
timestamp k, and n = ceil(frame_count / f) (CLIP4Clip: ``total_duration = (frameCount + fps - 1) // fps``,
then frames ``sec * fps`` for ``sec`` in ``0..total_duration`` inclusive, stopping at the first read
past the end, which is ``sec = total_duration``). It departs from CLIP4Clip where CLIP4Clip uses
``int(fps)`` as if it were the rate: at 29.97 fps CLIP4Clip takes frames 0, 29, 58, ... (drifting
3 % early); below 1 fps it divides by zero; above it (r > f) it fails an assert. Here the times
are real seconds and a frame shown at two sample times is repeated.

Decoding: a frame is reached by seeking (to the keyframe before it) when that keyframe lies past
what has been decoded (known from the index in mp4/mov; elsewhere assumed when the gap is longer
than the longest keyframe interval seen so far), else by decoding forward; so a long video is
never fully decoded, and a short one is decoded once, straight through. MPEG-PS and raw streams,
whose timestamps are not exact after a seek, are always decoded straight through. Only the chosen
frames are converted to RGB. Display-matrix rotations and flips (phone videos) are applied, so
frames come out upright. Packets that fail to decode are skipped, as FFmpeg's command line does.

Errors: a file that is missing, unreadable, empty, not a media file, has no video stream, yields
no decodable frame, or whose data stops (end of file or unreadable data) more than
``TRUNCATION_TOLERANCE_S`` plus a frame before the duration its video stream declares, raises
``VideoDecodeError``; FFmpeg's own exceptions never escape.

PyAV is imported inside the functions that need it and torch only by ``load_video`` and
``preprocess_frame``, so importing this module stays light (decode workers never import torch).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from fractions import Fraction

import numpy as np

from ..errors import VideoDecodeError
from . import devices, keyframes, pixels
from .cursor import DecodeStats, FrameCursor, decode_packet, nominal_frame_ticks
from .frames import FrameSettings, fit_frame, normalise, sample_indices
from .planned import PlannedCursor, Unplanned

# The names these had when they lived here (``video.thumbnails`` and older callers import them).
_FrameCursor, _decode_packet, _nominal_frame_ticks = FrameCursor, decode_packet, nominal_frame_ticks

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .qt .avi .mkv .webm .mpg .mpeg .m2v .vob .wmv .asf .flv .f4v .3gp .3g2 .ts .mts .m2ts "
    ".ogv .mxf .divx .gif".split()
)  # lowercase, with the dot, as os.path.splitext gives them
# Demuxers whose timestamps stay exact after a seek (FFmpeg format names). Others (MPEG-PS .mpg/.vob
# interpolates timestamps after a seek, half a frame off; raw streams) are decoded straight through.
# MPEG-TS seeks land on any packet near the time asked, not on a keyframe before it: a reader seeking
# there took frames up to a keyframe interval after the sample time (and failed near the end of a
# file with B-frames), so it is read straight through too; its end is still found by seeking.
SEEKABLE_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "flv", "asf"})
PROBE_SEEKABLE_FORMATS = SEEKABLE_FORMATS | {"mpegts"}
# Options for opening a file whose stream probing decodes nothing (FFmpeg decodes the first frames to
# learn the stream's parameters; measured 6.2 ms of a 640x360 H.264 video's 6.6 ms opening).
LIGHT_OPEN = {"skip_frame": "all"}
# Formats whose streams, opened so, tell the reader the same (timestamps, durations, rates: checked in
# tests/test_decode_parity.py); only the decoder's delay and pixel format are left for decoding to find.
# Elsewhere (Matroska: start time and duration change) the planned readers open files as the reference.
LIGHT_OPEN_FORMATS = frozenset({"mov", "mp4"})
# A video whose decodable frames end this much (plus one frame) before the duration its video
# stream declares is reported as truncated.
TRUNCATION_TOLERANCE_S = 0.5


def preprocess_frame(rgb: np.ndarray, size: int = 224):
    """CLIP preprocessing of one frame: (H, W, 3) uint8 RGB -> (3, size, size) float32 torch tensor.

    ``fit_frame`` then ``normalise`` (``muse_infer.video.frames``): the same numbers as CLIP4Clip's
    torchvision pipeline.
    """
    import torch

    return torch.from_numpy(normalise(fit_frame(rgb, size)))


def read_clip(
    path: str | os.PathLike, settings: FrameSettings, stats: DecodeStats | None = None, facts=None
) -> np.ndarray:
    """The sampled frames of a video, fitted to the model: (t, size, size, 3) uint8, 1 <= t <= max_frames.

    ``settings.sampling``: "exact" (the frame shown at each sample time, ``read_frames``) or "keyframes"
    (the keyframe nearest each sample time, ``read_keyframes``). stats: filled with what the
    read cost. facts: a ``video.facts.VideoFacts`` to fill (duration, size, rate, codec), or None.
    Raises ``VideoDecodeError`` naming the file and the reason when it cannot be read as a video.
    """
    if settings.sampling == "keyframes":
        return read_keyframes(path, settings, stats, facts, fitted=True)
    return _read_exact(path, settings, stats, facts, fitted=True)


def read_keyframes(
    path: str | os.PathLike,
    settings: FrameSettings,
    stats: DecodeStats | None = None,
    facts=None,
    fitted: bool = False,
) -> list[np.ndarray] | np.ndarray:
    """The keyframes nearest the sample times of a whole video (``keyframes.KeyframeCursor``), upright
    RGB (H, W, 3) uint8 arrays; the exact frames where the cursor cannot work (``planned.Unplanned``).

    facts: a ``video.facts.VideoFacts`` filled from the opened video, or None. fitted: each frame
    fitted by ``settings`` as soon as it is read, the clip (t, S, S, 3) uint8 returned (``read_clip``).
    Raises ``VideoDecodeError`` naming the file when it cannot be read as a video.
    """
    stats = stats if stats is not None else DecodeStats()
    rate = _check_sampling(settings.max_frames, settings.framerate, settings.slice_mode)
    with open_for_planned(path, settings.decoder, stats) as container:
        with _ffmpeg_errors(path):
            try:
                timeline = open_timeline(path, container, True, stats, cursor_kind=keyframes.KeyframeCursor)
                if facts is not None:
                    facts.fill(timeline)
                times = _sample_times(timeline, rate, settings.max_frames, settings.slice_mode)
                return _frames_at(timeline, path, times, settings if fitted else None)
            except Unplanned:
                stats.fallbacks += 1
    return _read_exact(path, settings, stats, facts, fitted)


def _read_exact(path, settings: FrameSettings, stats: DecodeStats | None, facts, fitted: bool):
    """``read_frames`` with the sampling and decoder of ``settings``; fitted: the clip (``fit_to``)."""
    args = (settings.max_frames, settings.framerate, settings.slice_mode, stats, facts, settings.decoder)
    return read_frames(path, *args, fit_to=settings if fitted else None)


def read_clip_reference(path: str | os.PathLike, settings: FrameSettings) -> np.ndarray:
    """``read_clip`` in exact sampling as it was before the planned cursor (``read_frames_reference``):
    the reference twin of the tests and the "before" of ``benchmarks/bench_decode.py``."""
    images = read_frames_reference(path, settings.max_frames, settings.framerate, settings.slice_mode)
    return np.stack([settings.fit(image) for image in images])


def load_video(
    path: str | os.PathLike,
    max_frames: int = 12,
    framerate: float = 1.0,
    slice_mode: str = "uniform",
    size: int = 224,
):
    """Frames of one video, sampled and preprocessed as CLIP4Clip does (see the module docstring).

    Returns torch tensors ``frames`` (max_frames, 3, size, size) float32, CLIP-normalised, zero after
    the real frames, and ``mask`` (max_frames,) int64, 1 for a real frame (CLIP4Clip's
    ``video_mask``). Raises ``VideoDecodeError`` (a ``ValueError``) naming the file and the reason
    when the file cannot be read as a video.
    """
    import torch

    from .frames import clip_inputs

    clip = read_clip(path, FrameSettings(max_frames, framerate, slice_mode, size))
    frames, mask = clip_inputs([clip], max_frames)
    return torch.from_numpy(frames[0]), torch.from_numpy(mask[0])


def read_frames(
    path: str | os.PathLike,
    max_frames: int = 12,
    framerate: float = 1.0,
    slice_mode: str = "uniform",
    stats: DecodeStats | None = None,
    facts=None,
    decoder: str = "cpu",
    fit_to: FrameSettings | None = None,
) -> list[np.ndarray] | np.ndarray:
    """The sampled frames of a video, upright, as a list of 1..max_frames (H, W, 3) uint8 RGB arrays.

    Decoded by the planned cursor (``planned.PlannedCursor``); the same frames, bit for bit, as
    ``read_frames_reference``, which reads the files the plan does not cover (``stats.fallbacks``).
    facts: a ``video.facts.VideoFacts`` filled from the opened video, or None. decoder: where to
    decode (``devices``: "cpu", "cuda", "cuda:N"; the same frames). fit_to: each frame fitted by
    these settings as soon as it is read, the clip (t, S, S, 3) uint8 returned (``read_clip``).
    """
    rate = _check_sampling(max_frames, framerate, slice_mode)
    times = lambda timeline: _sample_times(timeline, rate, max_frames, slice_mode)  # noqa: E731
    return read_planned(path, times, stats, facts, decoder, fit_to)


def read_frames_reference(
    path: str | os.PathLike,
    max_frames: int = 12,
    framerate: float = 1.0,
    slice_mode: str = "uniform",
    stats: DecodeStats | None = None,
    decoder: str = "cpu",
) -> list[np.ndarray]:
    """``read_frames`` by the reference cursor (``cursor.FrameCursor``: every frame on the way decoded,
    decoder threads on): the reader as it was before the planned cursor, kept as its twin."""
    rate = _check_sampling(max_frames, framerate, slice_mode)
    with _open(path, decoder=decoder, stats=stats) as container:
        with _ffmpeg_errors(path):
            timeline = open_timeline(path, container, seek=True, stats=stats, planned=False)
            return [timeline.frame_at(path, t) for t in _sample_times(timeline, rate, max_frames, slice_mode)]


def open_for_planned(path: str | os.PathLike, decoder: str = "cpu", stats: DecodeStats | None = None):
    """The container for a planned read: opened without FFmpeg's decoding probe where that changes nothing
    the reader uses (``LIGHT_OPEN_FORMATS``), else as the reference opens it. decoder: as ``_open``."""
    container = _open(path, LIGHT_OPEN, decoder, stats)
    if set(container.format.name.split(",")) & LIGHT_OPEN_FORMATS:
        return container
    container.close()
    return _open(path, decoder=decoder, stats=stats)


def read_planned(
    path,
    times_of: Callable[[_Timeline], list[Fraction]],
    stats: DecodeStats | None = None,
    facts=None,
    decoder: str = "cpu",
    fit_to: FrameSettings | None = None,
) -> list[np.ndarray] | np.ndarray:
    """The frames shown at ``times_of(timeline)`` (seconds from time 0, ascending), upright RGB, read by
    the planned cursor; by the reference cursor when the plan does not cover the file. facts: a
    ``video.facts.VideoFacts`` filled from the opened video, or None. decoder: as ``_open``. fit_to:
    as ``read_frames`` (``_frames_at``)."""
    stats = stats if stats is not None else DecodeStats()
    for planned in (True, False):
        opened = (
            open_for_planned(path, decoder, stats) if planned else _open(path, decoder=decoder, stats=stats)
        )
        with opened as container:
            with _ffmpeg_errors(path):
                try:
                    timeline = open_timeline(path, container, seek=True, stats=stats, planned=planned)
                    if facts is not None:
                        facts.fill(timeline)
                    times = times_of(timeline)
                    timeline.plan(times)
                    return _frames_at(timeline, path, times, fit_to)
                except Unplanned:
                    stats.fallbacks += 1
    raise AssertionError("the reference cursor never raises Unplanned")


def _check_sampling(max_frames: int, framerate: float, slice_mode: str) -> Fraction:
    """The frame rate as an exact fraction; ValueError for bad arguments, before any decoding."""
    if not framerate > 0:
        raise ValueError(f"framerate must be > 0 frames a second, got {framerate}")
    sample_indices(0, max_frames, slice_mode)
    return Fraction(framerate).limit_denominator(1_000_000)


def _sample_times(timeline: _Timeline, rate: Fraction, max_frames: int, slice_mode: str) -> list[Fraction]:
    """The sample times of a whole video (see the module docstring for the rule)."""
    n = max(1, math.ceil(timeline.duration * rate))
    return [k / rate for k in sample_indices(n, max_frames, slice_mode)]


def _frames_at(
    timeline: _Timeline, path, times, fit_to: FrameSettings | None
) -> list[np.ndarray] | np.ndarray:
    """The frames at ``times``: a list of upright RGB (H, W, 3) arrays, or with ``fit_to`` the clip
    (len(times), S, S, 3) uint8, each frame fitted into its row as soon as it is read.

    Why fit as they come: a clip's full-size frames held together (12 x 0.7 MB at 640x360) are freed
    together, and glibc hands that much freed memory back to the system, so the next clip page-faults
    it all in again; one frame at a time reuses the same memory (page faults a clip and what they cost:
    docs/benchmarks.md, "Decoding").
    """
    if fit_to is None:
        return [timeline.frame_at(path, t) for t in times]
    clip = np.empty((len(times), fit_to.size, fit_to.size, 3), dtype=np.uint8)
    for row, t in zip(clip, times, strict=True):
        fit_to.fit(timeline.frame_at(path, t), out=row)
    return clip


class _ffmpeg_errors:
    """Turns an FFmpeg exception none of the steps expected into ``VideoDecodeError`` naming the file."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        import av

        if kind is not None and issubclass(kind, av.FFmpegError):
            raise VideoDecodeError(self.path, f"decoding failed ({error})") from None
        return False


def read_window_clip(
    path: str | os.PathLike, settings: FrameSettings, start_s: float, end_s: float
) -> np.ndarray:
    """The clip of the time range [start_s, end_s] of a video: (t, S, S, 3) uint8, sampled as ``read_clip``
    samples a whole video, on the range's own timeline (``windows.sample_times``).

    Opens the file and seeks to the range: the reference for ``window_reader.read_windows``, which
    walks a video once for all its windows (exact sampling: the reference cursor; keyframe sampling:
    the keyframe cursor, seeking). ``end_s`` equal to the video's duration (as a float) means its exact
    end, so the range [0, duration] gives ``read_clip``'s frames.
    """
    from .windows import exact_sample_times

    kind = FrameCursor
    if settings.sampling == "keyframes":
        kind = keyframes.KeyframeCursor
    decoder = settings.decoder
    opened = open_for_planned(path, decoder) if kind is not FrameCursor else _open(path, decoder=decoder)
    with opened as container:
        with _ffmpeg_errors(path):
            timeline = open_timeline(path, container, seek=True, cursor_kind=kind)
            end = timeline.exact(end_s)
            times = exact_sample_times(timeline.exact(start_s), end, settings)
            return _frames_at(timeline, path, times, settings)


class _Timeline:
    """An opened video stream with time 0 at its first frame: its duration, and its frame at a time."""

    def __init__(self, container, stream, cursor: FrameCursor, origin: Fraction, end: Fraction, stats):
        self.container, self.stream, self.cursor = container, stream, cursor
        self.origin, self.end, self.stats = origin, end, stats
        self.duration = end - origin
        self.matrix = display_matrix(cursor.current)  # the first frame's: see _upright
        self.on_device = stream.codec_context.is_hwaccel  # frames to make planar first (video.devices)
        self.one_thread = type(cursor) is not FrameCursor  # the reference converts as it did (video.pixels)

    def exact(self, seconds: float) -> Fraction:
        """A window's time in seconds as an exact fraction: the duration's float stands for the exact
        duration, any other time for the nearest microsecond (window times are planned to microseconds)."""
        from .windows import exact_seconds

        return self.duration if seconds == float(self.duration) else exact_seconds(seconds)

    def plan(self, times) -> None:
        """Tell a planned cursor every time (seconds from time 0) it will be asked for."""
        if isinstance(self.cursor, PlannedCursor):
            self.cursor.plan([self.target(t) for t in times])

    def frame_at(self, path, seconds: Fraction) -> np.ndarray:
        """The frame shown at ``seconds`` (from time 0), upright RGB (H, W, 3) uint8."""
        target = self.target(seconds)
        frame = self.cursor.frame_at(target)
        _check_reached(path, self.cursor, self.stream, target)
        if self.stats is not None:
            self.stats.frames_converted += 1
        return self.upright(frame)

    def upright(self, frame) -> np.ndarray:
        """A decoded frame as upright RGB (H, W, 3) uint8, turned by the stream's display matrix."""
        return _upright(devices.planar(frame) if self.on_device else frame, self.matrix, self.one_thread)

    def target(self, seconds: Fraction) -> int:
        """``seconds`` from time 0 in the stream's pts units (the last frame at or before it is shown)."""
        return math.floor((self.origin + seconds) / self.stream.time_base)


def open_timeline(
    path,
    container,
    seek: bool,
    stats: DecodeStats | None = None,
    planned: bool = True,
    cursor_kind: type | None = None,
) -> _Timeline:
    """Set up reading ``container``'s video stream: its first frame decoded, its end probed, truncation checked.

    seek: whether the cursor may seek ahead (``read_clip``); without it, the video is read front to
    back (``window_reader``). planned: the planned cursor (``planned.PlannedCursor``; it may raise
    ``Unplanned``), else the reference (``cursor.FrameCursor``, decoder threads on, as before it).
    cursor_kind: another cursor class (``keyframes.KeyframeCursor``).
    """
    stream = _video_stream(container, path)
    formats = set(container.format.name.split(","))
    seekable = bool(formats & SEEKABLE_FORMATS)
    kind = cursor_kind or (PlannedCursor if planned else FrameCursor)
    cursor = kind(container, stream, seekable=seek and seekable, indexed="mp4" in formats, stats=stats)
    origin = cursor.first_frame(path).pts * stream.time_base  # time 0, in seconds
    hint = _declared_end(container, stream) if formats & PROBE_SEEKABLE_FORMATS else None
    light = kind is not FrameCursor
    end = _probe_end(path, stream.index, hint, stats, nominal_frame_ticks(stream), light_open=light)
    if end is None or end <= origin:  # one frame whose duration nobody records
        end = origin
    _check_not_truncated(path, container, stream, end)
    return _Timeline(container, stream, cursor, origin, end, stats)


def _open(
    path: str | os.PathLike,
    options: dict | None = None,
    decoder: str = "cpu",
    stats: DecodeStats | None = None,
):
    """An opened PyAV input container, or VideoDecodeError saying why not. options: FFmpeg's, for the
    container and its streams' probing (e.g. ``{"skip_frame": "all"}``: probe without decoding).
    decoder: where its video decodes (``devices``); a GPU that fails to open for a file that opens
    reads it on the CPU (the same frames), counted in ``stats.device_fallbacks``."""
    import av

    try:
        if os.path.isfile(path) and os.path.getsize(path) == 0:  # FFmpeg would only say "invalid data"
            raise VideoDecodeError(path, "empty file (0 bytes)")

        def opened(**device):
            return av.open(os.fspath(path), metadata_errors="ignore", options=options, **device)

        if not devices.on_device(decoder):
            return opened()
        try:
            return opened(hwaccel=devices.hwaccel(decoder))
        except Exception as error:  # the device's fault or the file's: opening it on the CPU tells which
            device_error = error
        container = opened()
        devices.note_fallback(decoder, path, device_error)
        if stats is not None:
            stats.device_fallbacks += 1
        return container
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except PermissionError:
        raise VideoDecodeError(path, "permission denied") from None
    except IsADirectoryError:
        raise VideoDecodeError(path, "is a directory") from None
    except (av.FFmpegError, OSError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise VideoDecodeError(path, f"not a readable video container ({reason})") from None


def _video_stream(container, path):
    """The container's first video stream that is not a cover image, set up for decoding."""
    from av.stream import Disposition

    videos = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if not videos:
        kinds = sorted(
            {s.type + (" (cover image)" if s in container.streams.video else "") for s in container.streams}
        )
        raise VideoDecodeError(path, f"no video stream (it has: {', '.join(kinds) or 'no streams'})")
    stream = videos[0]
    if stream.codec_context is None:  # FFmpeg knows no decoder for the stream's codec tag
        raise VideoDecodeError(
            path,
            "its video codec is unknown to this FFmpeg (no decoder); re-encode it, "
            "e.g. ffmpeg -i INPUT -c:v libx264 OUTPUT.mp4",
        )
    stream.codec_context.thread_type = "AUTO"  # frame + slice threads: ~25 % faster on 2 cores
    return stream


def _declared_end(container, stream) -> Fraction | None:
    """Where the container says the video stream ends (seconds, absolute), or None if it doesn't."""
    start = (stream.start_time or 0) * stream.time_base
    if stream.duration:
        return start + stream.duration * stream.time_base
    tag = _parse_clock(stream.metadata.get("DURATION") or stream.metadata.get("duration"))
    if tag is not None:
        return start + tag
    return None


def _parse_clock(text: str | None) -> Fraction | None:
    """'HH:MM:SS.fraction' (Matroska's per-track DURATION tag) in seconds, or None."""
    try:
        hours, minutes, seconds = (text or "").split(":")
        return Fraction(int(hours) * 3600 + int(minutes) * 60) + Fraction(seconds)
    except ValueError:
        return None


def _probe_end(
    path,
    stream_index: int,
    hint: Fraction | None,
    stats: DecodeStats | None = None,
    nominal: int | None = None,
    light_open: bool = False,
) -> Fraction | None:
    """End of the video stream (last packet's timestamp + duration, seconds, absolute).

    Demuxes packets without decoding them: from the keyframe before ``hint`` (the declared end)
    when given, else (or when that finds nothing) from the start, which for a long video without
    metadata reads the whole file but decodes none of it. nominal: a frame's duration in the stream's
    time base, for packets that state none (default: from the stream as this opening sees it).
    light_open: open the file without decoding its first frames (FFmpeg's stream probing decodes some
    unless told to skip them; the probe decodes nothing anyway): measured 6.2 ms less a 640x360 video.
    """
    import av

    options = LIGHT_OPEN if light_open else None
    for seek_to in ([hint] if hint else []) + [None]:
        with _open(path, options) as container:
            stream = container.streams[stream_index]
            if seek_to is not None:
                try:
                    container.seek(int(seek_to / stream.time_base), stream=stream, backward=True)
                except av.FFmpegError:  # an unseekable input: scan it from the start instead
                    continue
            end = _last_packet_end(container, stream, stats, nominal)
        if end is not None:
            return end
    return None


def _last_packet_end(
    container, stream, stats: DecodeStats | None = None, nominal: int | None = None
) -> Fraction | None:
    """max(pts + duration) over the stream's remaining packets, in seconds, or None if none."""
    import av

    nominal = nominal_frame_ticks(stream) if nominal is None else nominal
    end = None
    try:
        for packet in container.demux(stream):
            if not packet.size:  # the empty packet that ends the demuxing
                continue
            if stats is not None:
                stats.probe_packets += 1
            stamp = next(s for s in (packet.pts, packet.dts, end, 0) if s is not None)  # raw streams: count
            finish = stamp + (packet.duration or nominal)
            end = finish if end is None else max(end, finish)
    except av.FFmpegError:  # a damaged tail: keep what was read before it
        pass
    return None if end is None else end * stream.time_base


def _check_not_truncated(path, container, stream, end: Fraction) -> None:
    """Raise when the stream's packets stop well before the duration its metadata declares."""
    declared = _declared_end(container, stream)
    slack = TRUNCATION_TOLERANCE_S + nominal_frame_ticks(stream) * stream.time_base
    if declared is not None and end < declared - slack:
        raise VideoDecodeError(
            path, f"truncated: video data ends at {float(end):.2f} s of a declared {float(declared):.2f} s"
        )


def _check_reached(path, cursor: FrameCursor, stream, target: int) -> None:
    """Raise when decoding stopped (end of data) well before a time the packets promised."""
    if not cursor.finished or cursor.current is None:
        return
    last = cursor.current
    slack = TRUNCATION_TOLERANCE_S / stream.time_base + (last.duration or nominal_frame_ticks(stream))
    if target > last.pts + slack:
        seconds = float(last.pts * stream.time_base)
        raise VideoDecodeError(path, f"truncated or corrupt: frames stop decoding at {seconds:.2f} s")


def _upright(frame, matrix: np.ndarray | None | str = "read", one_thread: bool = True) -> np.ndarray:
    """The frame as (H, W, 3) uint8 RGB, turned by its display matrix so it shows as intended.

    matrix: the stream's display matrix (``display_matrix`` of its first frame; None: none), or "read"
    to read the frame's own. Why a stream's: in PyAV 18, reading a frame's side data ties the frame
    and its side data in a reference cycle, so its buffers stay until the garbage collector runs
    (measured: 145 MiB kept after 300 frames of 640x480); read for every sampled frame of a long video,
    that grows with the video. one_thread: swscale on this thread (``pixels``), else PyAV's default.
    """
    rgb = pixels.rgb24(frame, one_thread)
    matrix = display_matrix(frame) if isinstance(matrix, str) else matrix
    if matrix is None:
        return rgb
    return np.ascontiguousarray(apply_display_matrix(rgb, matrix))


def display_matrix(frame) -> np.ndarray | None:
    """The frame's display matrix (9 int32) or None (see ``_upright`` for why it is read once a stream)."""
    matrix = frame.side_data.get("DISPLAYMATRIX")
    return None if matrix is None else np.frombuffer(bytes(matrix), dtype="<i4").copy()


def apply_display_matrix(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply FFmpeg's 3x3 display matrix (9 int32, 16.16 fixed point) to an (H, W, C) image.

    The matrix maps a pixel (x, y) to (a*x + c*y, b*x + d*y) with (a, b, c, d) = matrix[[0, 1, 3, 4]];
    rotations by multiples of 90 degrees and flips are exact, other angles snap to the nearest.
    """
    a, b, c, d = (float(v) for v in np.asarray(matrix)[[0, 1, 3, 4]])
    if abs(a) + abs(d) >= abs(b) + abs(c):  # no transpose: x' = a*x, y' = d*y
        return image[:: -1 if d < 0 else 1, :: -1 if a < 0 else 1]
    transposed = image.swapaxes(0, 1)  # out[x, y] = in[y, x]: x' = c*y, y' = b*x
    return transposed[:: -1 if b < 0 else 1, :: -1 if c < 0 else 1]
