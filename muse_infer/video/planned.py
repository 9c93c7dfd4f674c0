"""The default cursor: the reference cursor's frames, bit for bit, for less decoding.

``PlannedCursor`` answers ``frame_at(target)`` as ``cursor.FrameCursor`` does (the last frame whose
timestamp is <= target, targets ascending), but reads the packets' timestamps before it decodes them,
so it knows which packet holds the frame it wants and decodes only what that frame needs:

1. Demux ahead, not decode: packets are read until one whose decode timestamp is past the target (no
   later packet can be shown at or before it), so the wanted frame is known from the timestamps alone.
2. Keyframe jumps: when a keyframe at or before the target lies among the packets read ahead, decoding
   restarts there (the decoder flushed, the packets before it dropped undecoded), as a seek would; the
   reference decodes them. Seeks (``container.seek``) follow the reference's rule otherwise.
3. Non-reference frames skipped: a packet that is shown at no sampled time is sent to the decoder with
   ``skip_frame = "NONREF"`` (H.264: dropped if no other frame refers to it, decoded otherwise).
4. No decoding past the wanted frame: it is drained out of the decoder (``decode(None)``) when the next
   target restarts from a keyframe anyway, rather than by decoding the frames after it.
5. One decoding thread (``thread_type`` NONE): decode workers run one a core; frame threads cost 13 %
   more CPU here and hold frames back (measured, docs/benchmarks.md).

Exactness rests on what well-formed streams guarantee (decode timestamps ascend and none exceeds its
presentation timestamp; a keyframe's group decodes without the frames before it) and is checked as the
packets come: a packet without timestamps, a decode error, a frame out of order or not planned, a
packet shown at a target already answered, raises ``Unplanned``, and the reader reads the video again
with the reference cursor (``DecodeStats.fallbacks``). The parity tests compare the two on awkward
videos (``tests/test_decode_parity.py``).
"""

from __future__ import annotations

import bisect
from collections import deque

from . import cursor as reference
from .cursor import DecodeStats, FrameCursor

# Codecs whose "NONREF" skip drops only frames no other frame refers to (checked in the parity tests).
NONREF_CODECS = frozenset({"h264"})
# Codecs whose decoder shows nothing before the first keyframe after a flush: where a seek lands on
# other packets (MPEG-TS seeks by timestamp, not to keyframes), those are dropped undecoded.
SHOWS_NOTHING_BEFORE_KEYFRAME = frozenset({"h264", "mpeg2video", "mpeg1video"})


class Unplanned(Exception):
    """The stream did something the plan does not cover: read it again with the reference cursor."""


NOT_SEEKABLE = object()  # seek_before's answer when the container refused the first seek


def seek_before(cursor: FrameCursor, target: int, restart):
    """Seek ``cursor``'s container to the keyframe before ``target`` (a pts), never before its current
    frame. Some demuxers land past the target (mp4 indexes keyframes by decode time): then this steps
    back with a doubling margin. ``restart()`` resets the cursor's reading after each seek and returns
    the first keyframe packet there (None: none). Returns that packet (or None), or ``NOT_SEEKABLE``
    (the cursor then marked unseekable) when the very first seek fails.

    The planned and keyframe cursors share it; the reference cursor keeps its own loop, so that the
    twin the fast readers are checked against does not share their code.
    """
    import av

    margin = 0
    while True:
        seek_to = max(target - margin, cursor.current.pts)
        try:
            cursor.container.seek(seek_to, stream=cursor.stream, backward=True)
        except av.FFmpegError:
            if margin == 0:  # nothing has moved yet: give up seeking, decode straight on
                cursor.seekable = False
                return NOT_SEEKABLE
            raise
        cursor.stats.seeks += 1
        first = restart()
        if first is None or first.pts <= target or seek_to == cursor.current.pts:
            return first
        margin = 2 * margin + (first.pts - target) + 1


class PlannedCursor(FrameCursor):
    """``FrameCursor``'s frames with the decoding planned from the packets' timestamps (module docstring).

    ``plan(targets)`` gives every target to come (stream time-base units), so the cursor knows which
    frames will be wanted and when decoding will restart from a keyframe anyway.
    """

    def __init__(
        self,
        container,
        stream,
        seekable: bool,
        indexed: bool,
        stats: DecodeStats | None = None,
        threads: str = "NONE",
    ):
        super().__init__(container, stream, seekable, indexed, stats)
        stream.codec_context.thread_type = threads  # before the first packet opens the decoder
        self.skip_nonref = stream.codec_context.name in NONREF_CODECS
        self.targets: list[int] = []  # every target, ascending, without repeats
        self._done_targets = 0  # how many of them were answered
        self._answers: list[tuple[int, int]] = []  # (target, pts of its frame) since decoding restarted
        self._restart(reference_demux=True)

    def plan(self, targets) -> None:
        """Every target the cursor will be asked for (any order; repeats allowed)."""
        self.targets = sorted(set(int(t) for t in targets))

    # --- the reference interface -------------------------------------------------------------

    def first_frame(self, path):
        """The stream's first frame (time 0), decoding from the start without skipping anything."""
        from ..errors import VideoDecodeError

        while not self._out and not self._drained:
            if not self._send_next(skip=False):
                self._drain()  # a short stream: its frames wait in the decoder until drained
        if not self._out:
            raise VideoDecodeError(path, "no decodable video frames")
        self.current = self._out.popleft()
        return self.current

    def frame_at(self, target: int):
        """The last frame with pts <= ``target``; the first frame if none (as ``FrameCursor.frame_at``)."""
        if target not in self.targets:  # an unplanned target: plan it (skips decided so far stand)
            bisect.insort(self.targets, target)
        self._done_targets = bisect.bisect_left(self.targets, target)
        if self.seekable and not self._demux_done and self._worth_seeking(target):
            self._seek_to(target)
        self._demux_past(target)
        self._jump_to_keyframe(target)
        wanted = self._best_pts(target)
        if wanted is not None and wanted > self.current.pts:
            self._decode_until(wanted, target)
        self._answers.append((target, self.current.pts))
        self._forget_before(self.current.pts)
        self.finished = self._demux_done and (not self._pts_seen or self._pts_seen[-1] <= target)
        return self.current

    # --- state ------------------------------------------------------------------------------------

    def _restart(self, reference_demux: bool = False) -> None:
        """Forget decoding state: a fresh demuxer from the container's position, the decoder flushed."""
        if not reference_demux:
            self.stream.codec_context.flush_buffers()
        self._packets = self.container.demux(self.stream)
        self._queue: deque = deque()  # demuxed packets not yet sent, decode order
        self._pts_seen: list[int] = []  # pts of every packet since the restart, sorted (shown ones)
        self._sent: set[int] = set()  # pts of packets sent since the restart
        self._out: deque = deque()  # frames out of the decoder, ascending pts, not yet answered
        self._max_dts: int | None = None
        self._demux_done = self._drained = self._gap = False
        self._last_out: int | None = None
        self._answers = []

    def _forget_before(self, pts: int) -> None:
        """Forget the times before the last answer (answers only go forward), so a long straight read
        keeps what its next targets need, not the whole video's timestamps."""
        self._pts_seen = self._pts_seen[bisect.bisect_left(self._pts_seen, pts) :]
        self._sent = {sent for sent in self._sent if sent >= pts}
        del self._answers[:-2]

    def _demux_one(self) -> bool:
        """Read one more packet into the queue; False at the end of the stream."""
        import av

        try:
            packet = next(self._packets, None)
            while packet is not None and not packet.size:  # the empty packet that ends demuxing
                packet = next(self._packets, None)
        except av.FFmpegError as error:  # unreadable data: the reference's business
            raise Unplanned(f"demuxing failed ({error})") from None
        if packet is None:
            self._demux_done = True
            return False
        self._admit(packet)
        return True

    def _admit(self, packet) -> None:
        """Check a demuxed packet against the plan and queue it."""
        # Matroska stores no decode timestamps: FFmpeg guesses them, but for the first packets
        if packet.pts is None or packet.dts is not None and packet.pts < packet.dts:
            raise Unplanned("a packet without usable timestamps")
        if packet.dts is not None:
            if self._max_dts is not None and packet.dts < self._max_dts:
                raise Unplanned("decode timestamps go back")
            self._max_dts = packet.dts
        for target, shown in self._answers[-2:]:
            if shown < packet.pts <= target:
                raise Unplanned("a packet shown at a time already answered came late")
        self._latest_packet = max(self._latest_packet, packet.pts)
        if packet.is_keyframe:
            if self._last_keyframe is not None and packet.pts > self._last_keyframe:
                self._longest_gop = max(self._longest_gop, packet.pts - self._last_keyframe)
            self._last_keyframe = packet.pts
        if not packet.is_discard:  # a packet an edit list cuts is decoded but never shown
            bisect.insort(self._pts_seen, packet.pts)
        self._queue.append(packet)

    def _demux_past(self, target: int) -> None:
        """Demux until no packet still to come can be shown at or before ``target``. A keyframe at or
        before it drops the queued packets before it as it comes, so a long stretch read ahead (a
        stream read straight through) holds a keyframe interval of packets at most."""
        while not self._demux_done and (self._max_dts is None or self._max_dts <= target):
            if self._demux_one() and self._queue[-1].is_keyframe and self._queue[-1].pts <= target:
                self._drop_queued_before_last()

    def _drop_queued_before_last(self) -> None:
        """Drop the packets queued before the last one (a keyframe at or before the target) undecoded, and
        forget the times shown before it: every target to come shows it or a later frame."""
        keyframe = self._queue.pop()
        if any(packet.pts >= keyframe.pts for packet in self._queue):
            raise Unplanned("a packet before a keyframe is shown after it")
        self._gap = bool(self._queue) or self._gap  # the decoder must restart there (a flush)
        self._queue.clear()
        self._queue.append(keyframe)
        self._pts_seen = self._pts_seen[bisect.bisect_left(self._pts_seen, keyframe.pts) :]

    def _covered(self, target: int) -> bool:
        return self._demux_done or (self._max_dts is not None and self._max_dts > target)

    def _best_pts(self, target: int) -> int | None:
        """The pts of the frame shown at ``target`` among the packets since the restart (None: none)."""
        i = bisect.bisect_right(self._pts_seen, target)
        return self._pts_seen[i - 1] if i else None

    # --- decoding -----------------------------------------------------------------------------------

    def _seek_to(self, target: int) -> None:
        """Seek to the keyframe before ``target`` (``seek_before``)."""
        first = seek_before(self, target, self._restart_at_keyframe)
        if first is not NOT_SEEKABLE and first.pts > target:
            raise Unplanned("a seek that lands on no keyframe before the target")

    def _restart_at_keyframe(self):
        """After a seek: reading restarted, the first keyframe packet there."""
        self._restart()
        self._last_keyframe = None
        return self._first_keyframe_after_seek()

    def _first_keyframe_after_seek(self):
        """The first packet after a seek: a keyframe; packets before the first keyframe are dropped where
        the decoder would show nothing of them (``SHOWS_NOTHING_BEFORE_KEYFRAME``)."""
        droppable = self.stream.codec_context.name in SHOWS_NOTHING_BEFORE_KEYFRAME
        while self._demux_one():
            if self._queue[-1].is_keyframe:
                break
            if not droppable:
                raise Unplanned("a seek that lands on no keyframe")
        else:
            raise Unplanned("no keyframe to read after a seek")
        while not self._queue[0].is_keyframe:
            self._queue.popleft()
        self._pts_seen = sorted(p.pts for p in self._queue if not p.is_discard)
        return self._queue[0]

    def _jump_to_keyframe(self, target: int) -> None:
        """Restart decoding at the last queued keyframe at or before ``target``, dropping the packets
        before it undecoded (they are shown before it, so at no target to come)."""
        keyframe = None
        for index, packet in enumerate(self._queue):
            if packet.pts > target and packet.dts is not None and packet.dts > target:
                break
            if packet.is_keyframe and packet.pts <= target:
                keyframe = index
        if keyframe is None or (keyframe == 0 and not self._drained and not self._gap):
            return  # none, or next in line with the decoder able to go on
        dropped = [self._queue.popleft() for _ in range(keyframe)]
        start = self._queue[0].pts
        if any(packet.pts >= start for packet in dropped):
            raise Unplanned("a packet before a keyframe is shown after it")
        kept = list(self._queue)
        self.stream.codec_context.flush_buffers()
        self._sent, self._out, self._drained, self._last_out = set(), deque(), False, None
        self._gap = False
        self._pts_seen = sorted(p.pts for p in kept if not p.is_discard)
        self._answers = []

    def _decode_until(self, wanted: int, target: int) -> None:
        """Decode until the frame with pts ``wanted`` comes out; it becomes ``current``."""
        while not self._is_out(wanted):
            if self._drained:
                raise Unplanned("the planned frame did not come out of the decoder")
            if wanted in self._sent and self._restarts_after(target) or not self._send_next(skip=None):
                self._drain()
        self.current = self._out.popleft()

    def _is_out(self, wanted: int) -> bool:
        """Whether the frame ``wanted`` is the next out (the frames before it are dropped)."""
        while self._out and self._out[0].pts < wanted:
            self._out.popleft()
        return bool(self._out) and self._out[0].pts == wanted

    def _restarts_after(self, target: int) -> bool:
        """Whether decoding restarts from a keyframe (seek or jump) for the next target, or it is the last."""
        following = bisect.bisect_right(self.targets, target)
        if following == len(self.targets):
            return True
        upcoming = self.targets[following]
        if self.seekable and not self._demux_done and self._worth_seeking(upcoming):
            return True
        self._demux_past(upcoming)
        return any(p.is_keyframe and p.pts <= upcoming for p in self._queue)

    def _send_next(self, skip: bool | None) -> bool:
        """Send the next queued packet (demuxing one if needed); False when there is none.

        skip None: decide from the plan (a packet shown at no target to come is skippable).
        """
        import av

        if not self._queue and not self._demux_one():
            return False
        if self._drained:
            raise Unplanned("decoding past a drained decoder")
        packet = self._queue.popleft()
        if skip is None:
            skip = self.skip_nonref and not self._maybe_wanted(packet.pts)
        codec = self.stream.codec_context
        codec.skip_frame = "NONREF" if skip else "DEFAULT"
        self._sent.add(packet.pts)
        try:
            frames = reference.decode_packet(codec, packet)
        except av.FFmpegError as error:
            raise Unplanned(f"decoding failed ({error})") from None
        self.stats.packets_decoded += 1
        self.stats.packets_skipped += skip
        self._receive(frames)
        return True

    def _maybe_wanted(self, pts: int) -> bool:
        """Whether the frame ``pts`` may be shown at some target to come (False only when known not)."""
        i = bisect.bisect_left(self.targets, pts, lo=self._done_targets)
        if i == len(self.targets):
            return False  # after every target
        first_target = self.targets[i]  # the first that could show it; a later one shows a later frame
        if not self._covered(first_target):
            return True
        return self._best_pts(first_target) == pts

    def _drain(self) -> None:
        """Take every frame still in the decoder (it then needs a restart before more packets)."""
        import av

        if self._drained:
            return
        self.stream.codec_context.skip_frame = "DEFAULT"
        try:
            frames = reference.decode_packet(self.stream.codec_context, None)
        except av.FFmpegError as error:
            raise Unplanned(f"draining failed ({error})") from None
        self._drained = True
        self._receive(frames)

    def _receive(self, frames: list) -> None:
        """Check frames out of the decoder against the plan and keep those a target may show."""
        self.stats.frames_decoded += len(frames)
        for frame in frames:
            if frame.pts is None or frame.pts not in self._sent:
                raise Unplanned("a frame that no packet sent announced")
            if self._last_out is not None and frame.pts <= self._last_out:
                raise Unplanned("frames out of order")
            self._last_out = frame.pts
            self._out.append(frame)
