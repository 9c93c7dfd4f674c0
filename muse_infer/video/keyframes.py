"""Keyframe sampling: the keyframe nearest each sample time, decoding nothing else.

``FrameSettings(sampling="keyframes")`` (``--sampling keyframes``): the sample times are the exact
rule's (``reader``: time 0 at the first frame, ``k / framerate`` seconds, ``max_frames`` of them kept),
but each takes the keyframe nearest to it (the earlier of two equally near), found from the packets
alone (demuxed, not decoded) and decoded by itself. A keyframe decodes without any other frame, so a
clip costs at most ``max_frames`` frame decodes however long the groups of pictures are, against the
exact rule's keyframe plus every reference frame up to the sample. The frames are those the exact
reader shows at the keyframes' times, bit for bit (the parity tests compare them), so they lie up to
half a keyframe interval from the sample times: with a keyframe every 2 s, within 1 s; with a single
keyframe, every sample is the first frame. A long video's keyframes are reached by seeking, as the
exact reader reaches its frames; a front-to-back reading (``window_reader``) demuxes every packet but
decodes only the keyframes it takes.

A stream where this cannot work (no keyframe flagged, a keyframe that yields no frame alone, packets
without timestamps) raises ``planned.Unplanned``; ``reader.read_keyframes`` then reads the exact frames.
"""

from __future__ import annotations

import bisect

from . import cursor as reference
from .cursor import DecodeStats, FrameCursor
from .planned import Unplanned, seek_before


class KeyframeCursor(FrameCursor):
    """``frame_at(target)``: the keyframe nearest ``target`` (pts units; the earlier on a tie), decoded alone.

    Keyframes are learnt from demuxed packets, in a stretch that starts at a keyframe (the stream's
    start or a seek) and runs to the last packet read; a target is answered once a keyframe after it
    (or the end) is known. Seeks follow the exact reader's rule (``FrameCursor._worth_seeking``).
    """

    def __init__(self, container, stream, seekable: bool, indexed: bool, stats: DecodeStats | None = None):
        super().__init__(container, stream, seekable, indexed, stats)
        stream.codec_context.thread_type = "NONE"  # one frame at a time: threads would only wait
        self._packets = container.demux(stream)
        self._keyframes: list[int] = []  # pts of the keyframes of the stretch, ascending
        self._kept: dict = {}  # pts -> keyframe packet not decoded yet (those a target may take)
        self._decoded: tuple | None = None  # (pts, frame) of the last keyframe decoded
        self._ended = False  # the stretch runs to the end of the stream

    def first_frame(self, path):
        """The stream's first frame (time 0): its first packet decoded alone when it is a keyframe shown,
        else the first frame out of decoding from the start (an edit list may hide the first keyframe)."""
        from ..errors import VideoDecodeError

        packet = self._next_packet()
        if packet is None:
            raise VideoDecodeError(path, "no decodable video frames")
        if packet.is_keyframe and not packet.is_discard:
            self.current = self._decode_alone(packet)
        else:
            self.current = self._decode_from(packet)
        return self.current

    def _decode_from(self, packet):
        """The first frame out of the decoder fed from ``packet`` on (the packets read are learnt)."""
        import av

        codec = self.stream.codec_context
        frames: list = []
        try:
            while not frames:
                frames = reference.decode_packet(codec, packet)
                self.stats.packets_decoded += packet is not None
                if packet is None:
                    break
                packet = self._next_packet()
        except av.FFmpegError as error:
            raise Unplanned(f"decoding failed ({error})") from None
        self.stats.frames_decoded += len(frames)
        if not frames:
            raise Unplanned("no frame decodes from the start")
        return frames[0]

    def frame_at(self, target: int):
        if self.seekable and not self._ended and self._worth_seeking(target):
            self._seek_to(target)
        while not self._ended and (not self._keyframes or self._keyframes[-1] <= target):
            self._next_packet()
        chosen = self._nearest(target)
        if self._decoded is None or self._decoded[0] != chosen:
            self._decode_alone(self._kept.pop(chosen))
        self.current = self._decoded[1]
        self._forget_before(chosen)
        return self.current

    def _nearest(self, target: int) -> int:
        """The pts of the keyframe nearest ``target`` among those of the stretch (earlier on a tie)."""
        i = bisect.bisect_right(self._keyframes, target)
        candidates = self._keyframes[max(0, i - 1) : i + 1]
        if not candidates:
            raise Unplanned("no keyframe to take")
        return min(candidates, key=lambda pts: (abs(pts - target), pts))

    def _next_packet(self):
        """Demux one packet, learning it if it is a keyframe; None (and the stretch ended) at the end."""
        import av

        try:
            packet = next(self._packets, None)
            while packet is not None and not packet.size:
                packet = next(self._packets, None)
        except av.FFmpegError as error:
            raise Unplanned(f"demuxing failed ({error})") from None
        if packet is None:
            self._ended = True
            return None
        if packet.pts is None:
            raise Unplanned("a packet without a timestamp")
        self._latest_packet = max(self._latest_packet, packet.pts)
        if packet.is_keyframe and not packet.is_discard:
            if self._last_keyframe is not None and packet.pts > self._last_keyframe:
                self._longest_gop = max(self._longest_gop, packet.pts - self._last_keyframe)
            self._last_keyframe = packet.pts
            bisect.insort(self._keyframes, packet.pts)
            self._kept[packet.pts] = packet
        return packet

    def _forget_before(self, pts: int) -> None:
        """Drop the keyframe packets before ``pts``: later targets take it or a later one."""
        for earlier in [p for p in self._kept if p < pts]:
            del self._kept[earlier]

    def _seek_to(self, target: int) -> None:
        """Seek to the keyframe before ``target`` (``seek_before``); the stretch starts there."""
        if seek_before(self, target, self._restart_at_keyframe) is None:
            raise Unplanned("no keyframe after a seek")

    def _restart_at_keyframe(self):
        """After a seek: reading restarted, the first keyframe packet there (None: none)."""
        self._packets, self._keyframes, self._kept = self.container.demux(self.stream), [], {}
        self._ended, self._last_keyframe = False, None
        first = self._next_packet()
        while first is not None and not first.is_keyframe:  # MPEG-TS seeks land on any packet
            first = self._next_packet()
        return first

    def _decode_alone(self, packet):
        """Decode one keyframe packet by itself (the decoder flushed before, drained after)."""
        import av

        codec = self.stream.codec_context
        codec.flush_buffers()
        try:
            frames = reference.decode_packet(codec, packet) + reference.decode_packet(codec, None)
        except av.FFmpegError as error:
            raise Unplanned(f"a keyframe that does not decode alone ({error})") from None
        self.stats.packets_decoded += 1
        self.stats.frames_decoded += len(frames)
        shown = [frame for frame in frames if frame.pts == packet.pts]
        if not shown:
            raise Unplanned("a keyframe that yields no frame alone")
        self._decoded = (packet.pts, shown[0])
        return shown[0]
