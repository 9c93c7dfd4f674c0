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
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..errors import VideoDecodeError
from .frames import FrameSettings, fit_frame, normalise, sample_indices

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .qt .avi .mkv .webm .mpg .mpeg .m2v .vob .wmv .asf .flv .f4v .3gp .3g2 .ts .mts .m2ts "
    ".ogv .mxf .divx .gif".split()
)  # lowercase, with the dot, as os.path.splitext gives them
# Demuxers whose timestamps stay exact after a seek (FFmpeg format names). Others (MPEG-PS .mpg/.vob
# interpolates timestamps after a seek, half a frame off; raw streams) are decoded straight through.
SEEKABLE_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "flv", "asf", "mpegts"})
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


def read_clip(path: str | os.PathLike, settings: FrameSettings, facts=None) -> np.ndarray:
    """The sampled frames of a video, fitted to the model: (t, size, size, 3) uint8, 1 <= t <= max_frames.

    facts: a ``video.facts.VideoFacts`` to fill (duration, size, rate, codec), or None.
    Raises ``VideoDecodeError`` naming the file and the reason when it cannot be read as a video.
    """
    images = read_frames(path, settings.max_frames, settings.framerate, settings.slice_mode, facts)
    return np.stack([fit_frame(image, settings.size) for image in images])


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
    facts=None,
) -> list[np.ndarray]:
    """The sampled frames of a video, upright, as a list of 1..max_frames (H, W, 3) uint8 RGB arrays.

    facts: a ``video.facts.VideoFacts`` filled from the opened video, or None."""
    if not framerate > 0:
        raise ValueError(f"framerate must be > 0 frames a second, got {framerate}")
    sample_indices(0, max_frames, slice_mode)  # validates the arguments before any decoding
    import av

    rate = Fraction(framerate).limit_denominator(1_000_000)
    with _open(path) as container:
        try:
            return _read_sampled(path, container, rate, max_frames, slice_mode, facts)
        except av.FFmpegError as error:  # a failure none of the steps expected
            raise VideoDecodeError(path, f"decoding failed ({error})") from None


def _read_sampled(
    path, container, rate: Fraction, max_frames: int, slice_mode: str, facts=None
) -> list[np.ndarray]:
    """read_frames on an opened container (see the module docstring for the rule)."""
    timeline = open_timeline(path, container, seek=True)
    if facts is not None:
        facts.fill(timeline)
    n = max(1, math.ceil(timeline.duration * rate))
    return [timeline.frame_at(path, k / rate) for k in sample_indices(n, max_frames, slice_mode)]


def read_window_clip(
    path: str | os.PathLike, settings: FrameSettings, start_s: float, end_s: float
) -> np.ndarray:
    """The clip of the time range [start_s, end_s] of a video: (t, S, S, 3) uint8, sampled as ``read_clip``
    samples a whole video, on the range's own timeline (``windows.sample_times``).

    Opens the file and seeks to the range: the reference for ``window_reader.read_windows``, which
    walks a video once for all its windows. ``end_s`` equal to the video's duration (as a float) means
    its exact end, so the range [0, duration] gives ``read_clip``'s frames.
    """
    import av

    from .windows import exact_sample_times

    with _open(path) as container:
        try:
            timeline = open_timeline(path, container, seek=True)
            end = timeline.exact(end_s)
            times = exact_sample_times(timeline.exact(start_s), end, settings)
            images = [timeline.frame_at(path, t) for t in times]
        except av.FFmpegError as error:
            raise VideoDecodeError(path, f"decoding failed ({error})") from None
    return np.stack([fit_frame(image, settings.size) for image in images])


@dataclass
class DecodeStats:
    """What reading a video cost: packets demuxed and decoded, frames decoded, seeks, and the packets
    the end probe demuxed (near the end, without decoding). Filled by the readers when given one."""

    packets_decoded: int = 0
    frames_decoded: int = 0
    seeks: int = 0
    probe_packets: int = 0
    frames_converted: int = 0  # frames turned into RGB (the sampled ones)
    peak_frames_held: int = 0  # the most sampled frames kept at once (windows not yet complete)


class _Timeline:
    """An opened video stream with time 0 at its first frame: its duration, and its frame at a time."""

    def __init__(self, container, stream, cursor: _FrameCursor, origin: Fraction, end: Fraction, stats):
        self.container, self.stream, self.cursor = container, stream, cursor
        self.origin, self.end, self.stats = origin, end, stats
        self.duration = end - origin
        self.matrix = display_matrix(cursor.current)  # the first frame's: see _upright

    def exact(self, seconds: float) -> Fraction:
        """A window's time in seconds as an exact fraction: the duration's float stands for the exact
        duration, any other time for the nearest microsecond (window times are planned to microseconds)."""
        from .windows import exact_seconds

        return self.duration if seconds == float(self.duration) else exact_seconds(seconds)

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
        return _upright(frame, self.matrix)

    def target(self, seconds: Fraction) -> int:
        """``seconds`` from time 0 in the stream's pts units (the last frame at or before it is shown)."""
        return math.floor((self.origin + seconds) / self.stream.time_base)


def open_timeline(path, container, seek: bool, stats: DecodeStats | None = None) -> _Timeline:
    """Set up reading ``container``'s video stream: its first frame decoded, its end probed, truncation checked.

    seek: whether the cursor may seek ahead (``read_clip``); without it, every frame is decoded once,
    front to back (``window_reader``).
    """
    stream = _video_stream(container, path)
    formats = set(container.format.name.split(","))
    seekable = bool(formats & SEEKABLE_FORMATS)
    cursor = _FrameCursor(
        container, stream, seekable=seek and seekable, indexed="mp4" in formats, stats=stats
    )
    origin = cursor.first_frame(path).pts * stream.time_base  # time 0, in seconds
    end = _probe_end(path, stream.index, _declared_end(container, stream) if seekable else None, stats)
    if end is None or end <= origin:  # one frame whose duration nobody records
        end = origin
    _check_not_truncated(path, container, stream, end)
    return _Timeline(container, stream, cursor, origin, end, stats)


def _open(path: str | os.PathLike):
    """An opened PyAV input container, or VideoDecodeError saying why not."""
    import av

    try:
        if os.path.isfile(path) and os.path.getsize(path) == 0:  # FFmpeg would only say "invalid data"
            raise VideoDecodeError(path, "empty file (0 bytes)")
        return av.open(os.fspath(path), metadata_errors="ignore")
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
    path, stream_index: int, hint: Fraction | None, stats: DecodeStats | None = None
) -> Fraction | None:
    """End of the video stream (last packet's timestamp + duration, seconds, absolute).

    Demuxes packets without decoding them: from the keyframe before ``hint`` (the declared end)
    when given, else (or when that finds nothing) from the start, which for a long video without
    metadata reads the whole file but decodes none of it.
    """
    import av

    for seek_to in ([hint] if hint else []) + [None]:
        with _open(path) as container:
            stream = container.streams[stream_index]
            if seek_to is not None:
                try:
                    container.seek(int(seek_to / stream.time_base), stream=stream, backward=True)
                except av.FFmpegError:  # an unseekable input: scan it from the start instead
                    continue
            end = _last_packet_end(container, stream, stats)
        if end is not None:
            return end
    return None


def _last_packet_end(container, stream, stats: DecodeStats | None = None) -> Fraction | None:
    """max(pts + duration) over the stream's remaining packets, in seconds, or None if none."""
    import av

    nominal = _nominal_frame_ticks(stream)
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


def _nominal_frame_ticks(stream) -> int:
    """One frame's duration in the stream's time base, from its average rate (0 if unknown)."""
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return 0
    return max(1, round(1 / (rate * stream.time_base)))


def _check_not_truncated(path, container, stream, end: Fraction) -> None:
    """Raise when the stream's packets stop well before the duration its metadata declares."""
    declared = _declared_end(container, stream)
    slack = TRUNCATION_TOLERANCE_S + _nominal_frame_ticks(stream) * stream.time_base
    if declared is not None and end < declared - slack:
        raise VideoDecodeError(
            path, f"truncated: video data ends at {float(end):.2f} s of a declared {float(declared):.2f} s"
        )


def _check_reached(path, cursor: _FrameCursor, stream, target: int) -> None:
    """Raise when decoding stopped (end of data) well before a time the packets promised."""
    if not cursor.finished or cursor.current is None:
        return
    last = cursor.current
    slack = TRUNCATION_TOLERANCE_S / stream.time_base + (last.duration or _nominal_frame_ticks(stream))
    if target > last.pts + slack:
        seconds = float(last.pts * stream.time_base)
        raise VideoDecodeError(path, f"truncated or corrupt: frames stop decoding at {seconds:.2f} s")


class _FrameCursor:
    """Decodes one video stream forward, seeking ahead when the next wanted time is far away.

    ``current`` is the last decoded frame at or before the last target, ``upcoming`` the first
    frame after it (already decoded, not yet used). ``indexed`` says the demuxer's seek index is
    complete from the start (mp4/mov); other demuxers build theirs as they read, so there the
    longest keyframe interval seen so far decides. Packets that fail to decode are skipped, as
    FFmpeg's command line does; ``failed_packets`` counts them.
    """

    def __init__(self, container, stream, seekable: bool, indexed: bool, stats: DecodeStats | None = None):
        self.container, self.stream, self.seekable, self.indexed = container, stream, seekable, indexed
        self.stats = stats if stats is not None else DecodeStats()
        self.current = self.upcoming = None
        self.finished = False
        self.failed_packets, self.last_error = 0, ""
        self._frames: Iterator | None = None
        self._longest_gop = 0  # longest keyframe-to-keyframe distance seen, pts units
        self._last_keyframe: int | None = None  # since the last seek
        self._latest_packet = 0
        self._previous_pts: int | None = None

    def first_frame(self, path):
        """Decode the stream's first frame (its timestamp is time 0), or raise VideoDecodeError."""
        self._frames = self._decode()
        frame = next(self._frames, None)
        if frame is None:
            failed = self.failed_packets
            detail = f" ({failed} packets failed to decode, last: {self.last_error})" if failed else ""
            raise VideoDecodeError(path, f"no decodable video frames{detail}")
        self.current = frame
        return frame

    def frame_at(self, target: int):
        """The last frame with pts <= ``target`` (stream time-base units); the first frame if none."""
        if self.seekable and not self.finished and self._worth_seeking(target):
            self._seek(target)
        while not self.finished and (self.upcoming is None or self.upcoming.pts <= target):
            if self.upcoming is not None:
                self.current = self.upcoming
            self.upcoming = next(self._frames, None)
            self.finished = self.upcoming is None
        return self.current

    def _worth_seeking(self, target: int) -> bool:
        """Whether the keyframe before ``target`` lies past the frames decoded so far."""
        position = max(self._latest_packet, (self.upcoming or self.current).pts)
        if self.indexed:  # mp4/mov: the sample table lists every keyframe from the start
            entries = self.stream.index_entries
            i = entries.search_timestamp(target, backward=True)
            return i >= 0 and entries[i].timestamp > position
        # No index: assume no keyframe interval is longer than the longest seen so far.
        since_keyframe = position - self._last_keyframe if self._last_keyframe is not None else 0
        return target - position > max(self._longest_gop, since_keyframe)

    def _seek(self, target: int) -> None:
        """Restart decoding at the keyframe before ``target`` (stepping further back if it overshoots).

        Some demuxers seek to a keyframe whose pts is past the target (mp4 indexes keyframes by
        decode time); then this steps back with a doubling margin, at worst to the current frame.
        """
        import av

        fallback, margin = self.current, 0
        while True:
            seek_to = max(target - margin, fallback.pts)
            try:
                self.container.seek(seek_to, stream=self.stream, backward=True)
            except av.FFmpegError:
                if margin == 0:  # nothing has moved yet: give up seeking, decode straight on
                    self.seekable = False
                    return
                raise
            self.stats.seeks += 1
            self._frames, self.upcoming, self._last_keyframe = self._decode(), None, None
            first = next(self._frames, None)
            if first is not None and first.pts <= target or seek_to == fallback.pts:
                break
            margin = 2 * margin + (first.pts - target if first is not None else 0) + 1
        self.current = first if first is not None else fallback
        self.finished = first is None

    def _decode(self) -> Iterator:
        """Decoded frames from the container's current position; skips packets that fail."""
        import av

        codec = self.stream.codec_context
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as error:  # unreadable data (a truncated file): stop here
                self.failed_packets, self.last_error = self.failed_packets + 1, str(error)
                packet, packets = None, iter(())  # None drains the decoder's buffered frames
            if packet is not None and packet.pts is not None:
                self._latest_packet = max(self._latest_packet, packet.pts)
                if packet.is_keyframe:
                    if self._last_keyframe is not None and packet.pts > self._last_keyframe:
                        self._longest_gop = max(self._longest_gop, packet.pts - self._last_keyframe)
                    self._last_keyframe = packet.pts
            if packet is not None and packet.size:
                self.stats.packets_decoded += 1
            try:
                frames = _decode_packet(codec, packet)
            except av.FFmpegError as error:
                self.failed_packets, self.last_error = self.failed_packets + 1, str(error)
                continue
            self.stats.frames_decoded += len(frames)
            for frame in frames:
                if frame.pts is None:  # raw streams carry no timestamps: count frames instead
                    previous = self._previous_pts
                    step = frame.duration or _nominal_frame_ticks(self.stream)
                    frame.pts = 0 if previous is None else previous + step
                self._previous_pts = frame.pts
                yield frame


def _decode_packet(codec, packet) -> list:
    """Decode one packet (None or the empty packet at the end drains the decoder)."""
    return codec.decode(packet)


def _upright(frame, matrix: np.ndarray | None | str = "read") -> np.ndarray:
    """The frame as (H, W, 3) uint8 RGB, turned by its display matrix so it shows as intended.

    matrix: the stream's display matrix (``display_matrix`` of its first frame; None: none), or "read"
    to read the frame's own. Why a stream's: in PyAV 18, reading a frame's side data ties the frame
    and its side data in a reference cycle, so its buffers stay until the garbage collector runs
    (measured: 145 MiB kept after 300 frames of 640x480); read for every sampled frame of a long video,
    that grows with the video.
    """
    rgb = frame.to_ndarray(format="rgb24")
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
