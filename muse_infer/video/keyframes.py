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

Where the container's sample table lists every sample (mp4/mov), the cursor does not demux its way
from one keyframe to the next either: the table gives the next keyframe's decode timestamp, and a seek
lands on it (``KeyframeCursor._jump_to_next_keyframe``), one packet read instead of a keyframe
interval of them (demuxing was a fifth of a clip's CPU time where keyframes decode cheaply:
docs/benchmarks.md). The packet the seek lands on is checked to be that keyframe; where it is not, the
cursor seeks back and demuxes as above.

A stream where this cannot work (no keyframe flagged, a keyframe that yields no frame alone, packets
without timestamps) raises ``planned.Unplanned``; ``reader.read_keyframes`` then reads the exact frames.
"""

from __future__ import annotations

import bisect

from . import cursor as reference
from .cursor import DecodeStats, FrameCursor
from .planned import Unplanned, seek_before

UNUSABLE_TABLE = object()  # next_keyframe_entry's answer for an index that is not in order
# A seek and its first packet cost about as much as demuxing 5 packets (mp4, 640x360 H.264: 25 against
# 5 µs): a keyframe this close is read on to.
READ_ON_WITHIN = 4


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
        self._keyframe_dts: dict = {}  # pts -> dts of the keyframes learnt (where to look in the table)
        self._jumps = seekable and indexed and lists_every_sample(stream)  # _jump_to_next_keyframe
        self._read_on_from: int | None = None  # pts of a keyframe whose next one is read on to, not jumped to

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
            if not self._jump_to_next_keyframe(target):
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
        packet = self._demux_one()
        if packet is None:
            self._ended = True
            return None
        self._learn(packet)
        return packet

    def _demux_one(self):
        """The next non-empty packet of the stretch, or None at the end."""
        import av

        try:
            packet = next(self._packets, None)
            while packet is not None and not packet.size:
                packet = next(self._packets, None)
        except av.FFmpegError as error:
            raise Unplanned(f"demuxing failed ({error})") from None
        if packet is not None:
            self.stats.packets_demuxed += 1
        return packet

    def _learn(self, packet) -> None:
        """Note a demuxed packet's time, and keep it if it is a keyframe."""
        if packet.pts is None:
            raise Unplanned("a packet without a timestamp")
        self._latest_packet = max(self._latest_packet, packet.pts)
        if packet.is_keyframe and not packet.is_discard:
            if self._last_keyframe is not None and packet.pts > self._last_keyframe:
                self._longest_gop = max(self._longest_gop, packet.pts - self._last_keyframe)
            self._last_keyframe = packet.pts
            bisect.insort(self._keyframes, packet.pts)
            self._kept[packet.pts] = packet
            self._keyframe_dts[packet.pts] = packet.dts

    def _jump_to_next_keyframe(self, target: int) -> bool:
        """Learn the next keyframe after the stretch's last one from the sample table and a seek, not by
        demuxing the packets in between (the table lists every keyframe, so none lies among them).

        True when done: that keyframe learnt, the stretch going on from it; or, where the table holds no
        keyframe after the last one, the stretch marked ended. False where this does not apply (no
        complete table, no keyframe learnt yet, a packet without a decode timestamp) or does not pay
        (the next keyframe within ``READ_ON_WITHIN`` packets): demux on. Where the seek lands on another
        packet, the jumps stop for this video and the cursor seeks back to ``target`` (the keyframe
        before it) to demux from there, as without a table.
        """
        import av

        if not self._jumps or not self._keyframes or self._keyframes[-1] == self._read_on_from:
            return False
        last = self._keyframes[-1]
        last_dts = self._keyframe_dts.get(last)
        if last_dts is None:
            return False
        entries = self.stream.index_entries
        found = next_keyframe_entry(entries, last_dts)
        if found is UNUSABLE_TABLE:
            self._jumps = False
            return False
        if found is None:
            self._ended = True
            return True
        position, wanted = found
        if position - entries.search_timestamp(last_dts, backward=True, any_frame=True) <= READ_ON_WITHIN:
            self._read_on_from = last  # demux on to it
            return False
        # mp4 seeks by presentation time (decode time plus the stream's shift): aim at the keyframe's
        # decode time shifted as the last one's is, then check where the seek landed.
        try:
            self.container.seek(wanted.timestamp + (last - last_dts), stream=self.stream, backward=True)
        except av.FFmpegError:
            return self._stop_jumping(target)
        self.stats.seeks += 1
        self._packets = self.container.demux(self.stream)
        packet = self._demux_one()
        if not is_entry_packet(packet, wanted) or packet.pts is None or packet.pts <= last:
            return self._stop_jumping(target)
        self._learn(packet)
        return True

    def _stop_jumping(self, target: int) -> bool:
        """A jump that missed: no more jumps; restart the stretch at the keyframe before ``target``."""
        self._jumps = False
        self._seek_to(target)
        return True

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
        self._ended, self._last_keyframe, self._keyframe_dts = False, None, {}
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


def lists_every_sample(stream) -> bool:
    """Whether the stream's seek index is a complete sample table: one entry per frame the container
    declares (mp4/mov read their table whole when opened; a fragmented mp4 declares no frame count
    and indexes its fragments as they are read)."""
    return bool(stream.frames) and len(stream.index_entries) == stream.frames


def is_entry_packet(packet, entry) -> bool:
    """Whether ``packet`` (or None) is the keyframe of index ``entry``: its decode time and file position."""
    if packet is None or not packet.is_keyframe or packet.is_discard:
        return False
    return packet.dts == entry.timestamp and packet.pos == entry.pos


def next_keyframe_entry(entries, dts: int):
    """(position, entry) of the first index entry after decode time ``dts`` that is a keyframe not
    marked discarded; None where there is none; ``UNUSABLE_TABLE`` where the search does not move
    forward (FFmpeg keeps its index sorted: never seen, and then the table is not to be trusted)."""
    i = entries.search_timestamp(dts + 1, backward=False)
    while 0 <= i < len(entries):
        entry = entries[i]
        if entry.timestamp <= dts:
            return UNUSABLE_TABLE
        if entry.is_keyframe and not entry.is_discard:
            return i, entry
        i = entries.search_timestamp(entry.timestamp + 1, backward=False)
    return None
