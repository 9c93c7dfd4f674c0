"""Thumbnails: a few small keyframes of each indexed video (or of a time range in it), kept beside the index.

Frames: ``count`` (3) images for the middles of ``count`` equal parts of the range (the whole video
when no range is given), so a strip shows its beginning, middle and end. For each time: the last key
frame at or before it, when that lies inside the range and is not already in the strip, found by
seeking and demuxing (no decoding) and then decoded on its own, one packet; else the exact frame shown
at that time, in a second pass through the reader's frame cursor (``muse_infer.video.reader``), which
also serves containers whose seeking is not exact (MPEG-PS, raw streams). So a thumbnail costs about
one frame's decoding, not a group of pictures'. Frames are scaled by FFmpeg's scaler to fit
``max_side`` pixels before they become RGB (a 4K frame never becomes a full-size array), turned
upright by their display matrix, and saved as JPEG.

Store: ``EMB.npy`` -> the folder ``EMB.thumbs/`` holding ``KEY-N.jpg`` (N = 0..count-1), KEY the
SHA-1 of the row's relative path, size, mtime and time range (``ThumbnailSource.key``). Keys
depend on the content, not on row numbers, so thumbnails survive rows being renumbered when the
index grows, and ``prune`` removes those whose row left the index. Files are written atomically
(``muse_infer.atomic``) without fsync: they are a cache, and one a power cut left empty counts as
missing and is made again. Only files named like ours are ever removed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import VideoDecodeError
from ..filenames import display_name
from .pixels import reformat

logger = logging.getLogger(__name__)
THUMBNAIL_COUNT = 3  # keyframes a row
MAX_SIDE = 192  # pixels, the longer side of a thumbnail (cards show them ~120 px wide, 2x for sharp screens)
JPEG_QUALITY = 82
_OUR_FILE = re.compile(r"^[0-9a-f]{40}-[0-9]+\.jpg$")
_OUR_TEMPORARY = re.compile(r"^\.[0-9a-f]{40}-[0-9]+\.jpg\..*\.tmp$")  # left by a killed atomic write


@dataclass(frozen=True)
class ThumbnailSource:
    """What a row's thumbnails show: a video (relative path under the index's root, its size and
    mtime when indexed) and, for a moment, its time range in seconds (None: the whole video)."""

    path: str
    size: int = -1
    mtime_ns: int = -1
    start_s: float | None = None
    end_s: float | None = None

    @property
    def key(self) -> str:
        """40 hex digits naming this row's thumbnail files; changes when the file or range changes."""
        fields = [self.path, str(self.size), str(self.mtime_ns), _seconds_text(self.start_s)]
        fields.append(_seconds_text(self.end_s))
        return hashlib.sha1("\0".join(fields).encode("utf-8", "surrogateescape")).hexdigest()


def thumbnail_sources(paths, sizes, mtimes_ns, starts=None, ends=None) -> list[ThumbnailSource]:
    """One ``ThumbnailSource`` a row, from an index's row columns (equal-length lists; None where a
    value is unknown: -1 for a stat, a whole video for a missing range; ``starts``/``ends`` None: no
    row is a moment)."""
    count = len(paths)
    starts, ends = starts or [None] * count, ends or [None] * count
    return [
        ThumbnailSource(
            str(path),
            -1 if size is None else int(size),
            -1 if mtime is None else int(mtime),
            None if start is None else float(start),
            None if end is None else float(end),
        )
        for path, size, mtime, start, end in zip(paths, sizes, mtimes_ns, starts, ends, strict=True)
    ]


def _seconds_text(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def keyframe_times(start_s: float, end_s: float, count: int) -> list[float]:
    """``count`` times (seconds) at the middles of ``count`` equal parts of [start_s, end_s]."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    span = max(0.0, end_s - start_s)
    return [start_s + (i + 0.5) * span / count for i in range(count)]


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled down (never up) so the longer side is at most ``max_side``, both even >= 2."""
    scale = min(1.0, max_side / max(width, height, 1))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def read_keyframes(
    path: str | os.PathLike,
    count: int = THUMBNAIL_COUNT,
    start_s: float | None = None,
    end_s: float | None = None,
    max_side: int = MAX_SIDE,
) -> list[np.ndarray]:
    """``count`` small upright RGB keyframes (h, w, 3) uint8 of a video, or of [start_s, end_s] in it.

    Times are seconds from the first frame (as ``read_frames`` counts them). Raises
    ``VideoDecodeError`` naming the file when it cannot be read.
    """
    import av

    from .reader import _open

    with _open(path) as container:
        try:
            return _keyframes_of(path, container, count, start_s, end_s, max_side)
        except av.FFmpegError as error:
            raise VideoDecodeError(path, f"decoding failed ({error})") from None


def _keyframes_of(path, container, count, start_s, end_s, max_side) -> list[np.ndarray]:
    """Key frames first: each time gets the last key frame at or before it, when that lies inside the
    range and is not already shown, decoded on its own (one packet, no group of pictures to decode
    through). Times left over, and containers whose seeking is not exact, get their exact frame
    through the reader's cursor in a second pass."""
    from .reader import SEEKABLE_FORMATS

    stream = _video_stream_of(path, container)
    stream.codec_context.thread_type = "SLICE"  # frame threads would hold decoded frames back
    first = _key_packet_at(container, stream, None)
    if first is None or not set(container.format.name.split(",")) & SEEKABLE_FORMATS:
        return _exact_frames(path, count, start_s, end_s, max_side, {})
    origin = first.pts * stream.time_base  # the first frame's time, as the reader's time 0
    start = max(0.0, start_s or 0.0)
    end = end_s if end_s is not None else max(_duration(path, container, stream, origin), start)
    targets = [_ticks(origin, seconds, stream) for seconds in keyframe_times(start, end, count)]
    floor = _ticks(origin, start, stream)
    chosen: dict[int, np.ndarray] = {}
    shown: set[int] = set()
    for number, target in enumerate(targets):
        packet = _key_packet_at(container, stream, target)
        if packet is None or not floor <= packet.pts <= target or packet.pts in shown:
            continue
        shown.add(packet.pts)
        frame = _decode_alone(stream, packet)
        if frame is not None:
            chosen[number] = _small_upright(frame, max_side)
    if len(chosen) < count:
        return _exact_frames(path, count, start_s, end_s, max_side, chosen)
    return [chosen[number] for number in range(count)]


def _key_packet_at(container, stream, target: int | None):
    """The last key-frame packet with pts <= ``target`` (stream units; None: the first key frame), or
    None when the seek fails or lands past the target. Packets are demuxed, not decoded."""
    import av

    candidate = None
    try:
        if target is not None:
            container.seek(target, stream=stream, backward=True)
        for packet in container.demux(stream):
            if not packet.size:
                break
            if packet.is_keyframe and packet.pts is not None and (target is None or packet.pts <= target):
                candidate = packet
                if target is None:
                    break
            if target is not None and packet.dts is not None and packet.dts > target:
                break  # decode timestamps only grow: no later packet is shown at or before the target
    except av.FFmpegError:
        return None
    return candidate


def _decode_alone(stream, packet):
    """A key-frame packet decoded on its own (the decoder drained at once, then reset), or None."""
    import av

    codec = stream.codec_context
    try:
        codec.flush_buffers()
        frames = [*codec.decode(packet), *codec.decode(None)]  # None drains: the frame comes out now
        codec.flush_buffers()
    except av.FFmpegError:
        return None
    return frames[0] if frames else None


def _video_stream_of(path, container):
    from .reader import _video_stream

    return _video_stream(container, path)


def _cursor(container, stream):
    # The reader's own cursor: thumbnails seek exactly as encoding does (see muse_infer.video.reader).
    from .reader import SEEKABLE_FORMATS, _FrameCursor

    formats = set(container.format.name.split(","))
    return _FrameCursor(
        container, stream, seekable=bool(formats & SEEKABLE_FORMATS), indexed="mp4" in formats
    )


def _ticks(origin: Fraction, seconds: float, stream) -> int:
    """A time in seconds from the first frame, in the stream's timestamp units (rounded down)."""
    return math.floor((origin + Fraction(seconds).limit_denominator(1_000_000)) / stream.time_base)


def _exact_frames(path, count, start_s, end_s, max_side, chosen: dict[int, np.ndarray]) -> list[np.ndarray]:
    """The frames shown at the strip's times (those not in ``chosen``), through the reader's cursor:
    every frame decodable, the timeline exactly as ``read_frames`` counts it."""
    from .reader import _open

    with _open(path) as container:
        stream = _video_stream_of(path, container)
        cursor = _cursor(container, stream)
        origin = cursor.first_frame(path).pts * stream.time_base
        start = max(0.0, start_s or 0.0)
        end = end_s if end_s is not None else max(_duration(path, container, stream, origin), start)
        for number, seconds in enumerate(keyframe_times(start, end, count)):
            if number not in chosen:
                chosen[number] = _small_upright(cursor.frame_at(_ticks(origin, seconds, stream)), max_side)
    return [chosen[number] for number in range(count)]


def _duration(path, container, stream, origin: Fraction) -> float:
    """Seconds from the first frame to the end: the container's word when it gives one (no extra
    reading), else the end of the last packet (``_probe_end`` demuxes without decoding)."""
    from .reader import _declared_end, _probe_end

    end = _declared_end(container, stream)
    if end is None:
        end = _probe_end(path, stream.index, None)
    return float(end - origin) if end is not None and end > origin else 0.0


def _small_upright(frame, max_side: int) -> np.ndarray:
    """The frame scaled by FFmpeg to fit ``max_side``, as (h, w, 3) uint8 RGB, display matrix applied."""
    from .reader import apply_display_matrix

    width, height = fit_size(frame.width, frame.height, max_side)
    rgb = reformat(frame, width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
    matrix = frame.side_data.get("DISPLAYMATRIX")
    if matrix is None:
        return rgb
    return np.ascontiguousarray(apply_display_matrix(rgb, np.frombuffer(bytes(matrix), dtype="<i4")))


def jpeg_bytes(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """An (h, w, 3) uint8 RGB image as baseline JPEG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def thumbnail_jpegs(
    path: str | os.PathLike,
    count: int = THUMBNAIL_COUNT,
    start_s: float | None = None,
    end_s: float | None = None,
    max_side: int = MAX_SIDE,
) -> list[bytes]:
    """``count`` JPEG keyframes of a video (or of a time range in it): ``read_keyframes`` + ``jpeg_bytes``."""
    return [jpeg_bytes(rgb) for rgb in read_keyframes(path, count, start_s, end_s, max_side)]


class ThumbnailStore:
    """The thumbnails of an index's rows, in one folder (``index.IndexFiles.thumbs``: EMB.thumbs)."""

    def __init__(self, folder: str | os.PathLike, count: int = THUMBNAIL_COUNT):
        self.folder, self.count = Path(folder), count

    def files(self, source: ThumbnailSource) -> list[Path]:
        """The row's ``count`` thumbnail paths (whether or not they exist yet)."""
        key = source.key
        return [self.folder / f"{key}-{n}.jpg" for n in range(self.count)]

    def has(self, source: ThumbnailSource) -> bool:
        """Whether all the row's files are there and not empty (a power cut can empty unsynced files)."""
        return all(_size(path) > 0 for path in self.files(source))

    def make(self, video: str | os.PathLike, source: ThumbnailSource) -> list[Path]:
        """Decode ``video`` (the file ``source`` names) and write its thumbnails; raises VideoDecodeError."""
        images = thumbnail_jpegs(video, self.count, source.start_s, source.end_s)
        paths = self.files(source)
        for path, data in zip(paths, images, strict=True):
            atomic_write_bytes(
                path, data, durable=False
            )  # a cache: whole files, remade if a crash empties one
        return paths

    def ensure(self, video: str | os.PathLike, source: ThumbnailSource) -> list[Path]:
        """The row's thumbnail files, made first when missing; [] (logged) when the video cannot be read."""
        if self.has(source):
            return self.files(source)
        try:
            return self.make(video, source)
        except VideoDecodeError as error:
            reason = error.reason
        except OSError as error:
            reason = f"cannot write its thumbnails ({error.strerror or error})"
        except MemoryError:
            reason = "out of memory while decoding"
        except Exception as error:  # noqa: BLE001 - one odd file (FFmpeg's scaler, Pillow, a decoder bug) fails alone
            reason = f"decoding its keyframes failed ({' '.join(str(error).split())[:200] or 'no details'})"
        logger.warning("no thumbnails for %s: %s", display_name(source.path), reason)
        return []

    def prune(self, keep: Iterable[ThumbnailSource]) -> int:
        """Remove our files whose row is not in ``keep`` (and temporary leftovers); returns how many."""
        keys = {source.key for source in keep}
        removed = 0
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        for name in names:
            stale = _OUR_FILE.match(name) and name[:40] not in keys
            if stale or _OUR_TEMPORARY.match(name):
                (self.folder / name).unlink(missing_ok=True)
                removed += 1
        return removed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


@dataclass
class ThumbnailSummary:
    """What ``sync_thumbnails`` did."""

    made: int = 0
    already: int = 0
    failed: int = 0
    removed: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        text = f"thumbnails: {self.made} made, {self.already} already there, {self.removed} removed"
        return (
            text
            + (f", {self.failed} failed (see the log)" if self.failed else "")
            + f" in {self.seconds:.1f} s"
        )


def sync_thumbnails(
    store: ThumbnailStore,
    root: str | os.PathLike,
    sources: Sequence[ThumbnailSource],
    threads: int = 2,
    progress: bool = False,
) -> ThumbnailSummary:
    """Make the missing thumbnails of ``sources`` (videos under ``root``) and remove those of other rows.

    Decoding runs in ``threads`` threads (PyAV and Pillow release the GIL while they work). A video
    that cannot be read is logged and counted, never raised: thumbnails are an extra.
    """
    started = time.monotonic()
    summary = ThumbnailSummary(removed=store.prune(sources))
    todo = [source for source in sources if not store.has(source)]
    summary.already = len(sources) - len(todo)
    if todo:
        store.folder.mkdir(parents=True, exist_ok=True)
        _make_all(store, Path(root), todo, threads, progress, summary)
    summary.seconds = time.monotonic() - started
    return summary


def _make_all(store, root: Path, todo, threads: int, progress: bool, summary: ThumbnailSummary) -> None:
    from ..progress import progress_bar

    def make(source: ThumbnailSource) -> bool:
        return bool(store.ensure(root / source.path, source))

    with (
        ThreadPoolExecutor(max(1, threads), thread_name_prefix="thumbnails") as pool,
        progress_bar(len(todo), "thumbnails", enabled=progress) as bar,
    ):
        for made in pool.map(make, todo):
            summary.made += made
            summary.failed += not made
            bar.update(1)
