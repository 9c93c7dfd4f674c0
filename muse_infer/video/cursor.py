"""Decoding a video stream forward to the frames shown at given times: the reference cursor.

``FrameCursor.frame_at(target)`` is the last decoded frame whose timestamp is <= ``target`` (stream
time-base units, ascending targets): it decodes every frame on the way, seeking ahead to the keyframe
before a target when that keyframe lies past what has been decoded. It is the reference twin of
``planned.PlannedCursor`` (the default, which gives the same frames while decoding less), and reads
files the planned cursor does not plan for (raw streams without timestamps, damaged data).

``DecodeStats`` counts what a read cost; ``decode_packet`` is the one call into the decoder (tests count
frames through it). PyAV is imported inside the functions that use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import VideoDecodeError


@dataclass
class DecodeStats:
    """What reading a video cost: packets demuxed and decoded, frames decoded, seeks, and the packets
    the end probe demuxed (near the end, without decoding). Filled by the readers when given one."""

    packets_decoded: int = 0
    frames_decoded: int = 0
    packets_demuxed: int = 0  # by the keyframe cursor: packets read to find the keyframes
    seeks: int = 0
    probe_packets: int = 0
    frames_converted: int = 0  # frames turned into RGB (the sampled ones)
    peak_frames_held: int = 0  # the most sampled frames kept at once (windows not yet complete)
    packets_skipped: int = 0  # of packets_decoded, those marked skippable (non-reference, not sampled)
    fallbacks: int = 0  # planned reads that met something unplanned and were read again by the reference
    device_fallbacks: int = 0  # openings for a GPU decoder that failed and were read on the CPU


def nominal_frame_ticks(stream) -> int:
    """One frame's duration in the stream's time base, from its average rate (0 if unknown)."""
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return 0
    return max(1, round(1 / (rate * stream.time_base)))


class FrameCursor:
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
                frames = decode_packet(codec, packet)
            except av.FFmpegError as error:
                self.failed_packets, self.last_error = self.failed_packets + 1, str(error)
                continue
            self.stats.frames_decoded += len(frames)
            for frame in frames:
                if frame.pts is None:  # raw streams carry no timestamps: count frames instead
                    previous = self._previous_pts
                    step = frame.duration or nominal_frame_ticks(self.stream)
                    frame.pts = 0 if previous is None else previous + step
                self._previous_pts = frame.pts
                yield frame


def decode_packet(codec, packet) -> list:
    """Decode one packet (None or the empty packet at the end drains the decoder)."""
    return codec.decode(packet)
