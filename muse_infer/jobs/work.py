"""The folder job's material: the video files found under the root (``Entry``), finished results
(``Known``) and the work directory's chunk files (``ChunkStore``; format: ``muse_infer.jobs.encode``).

Shared by both engines (``jobs.encode``, ``jobs.ray_engine``) and their resume logic.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..encoders import VideoResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """A video file found under the root: relative POSIX path, size, mtime, or a problem found before decoding."""

    path: str
    size: int = -1
    mtime_ns: int = -1
    problem: str | None = None


@dataclass
class Known:
    """A finished result: the file's stats when it was encoded, and its embedding (C,) or failure reason.

    A video encoded as moments: ``embedding`` (n, C), a row per window, and ``spans`` their (start_s, end_s).
    ``facts``: the video's duration, size, frame rate and codec (``video.facts``; None: not recorded).
    """

    size: int
    mtime_ns: int
    embedding: np.ndarray | None = None
    reason: str | None = None
    spans: list | None = None
    precision: str | None = None  # what the model computed it in (None: not recorded)
    facts: dict | None = None

    def rows(self) -> np.ndarray:
        """The result's rows (n, C): one for a whole video, one a window for moments."""
        return self.embedding.reshape(-1, self.embedding.shape[-1])

    def matches(self, entry: Entry) -> bool:
        return (self.size, self.mtime_ns) == (entry.size, entry.mtime_ns)


def find_videos(root: Path, folder: str = "") -> list[Entry]:
    """Video files under ``root / folder`` (recursively, by extension), sorted by their POSIX path
    relative to ``root``.

    Symbolic links to files are followed, links to folders are not. A file that cannot be
    examined (broken link, not a regular file) or a folder that cannot be listed becomes an entry
    with a ``problem``.
    """
    from ..video.reader import VIDEO_EXTENSIONS

    entries = []

    def unreadable_folder(error: OSError) -> None:
        relative = Path(error.filename).relative_to(root).as_posix() + "/"
        entries.append(Entry(relative, problem=f"folder not readable ({error.strerror})"))

    for place, subfolders, names in os.walk(root / folder, onerror=unreadable_folder):
        subfolders.sort()
        for name in names:
            if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                full = os.path.join(place, name)
                entries.append(file_entry(full, Path(full).relative_to(root).as_posix()))
    return sorted(entries, key=lambda entry: entry.path)


def file_entry(full: str, relative: str) -> Entry:
    """The entry of one file: its stats, or the problem that keeps it from being read."""
    try:
        info = os.stat(full)
    except FileNotFoundError:
        return Entry(relative, problem="file not found (removed while the folder was read, or a broken link)")
    except OSError as error:
        return Entry(relative, problem=f"cannot examine the file ({error.strerror})")
    if not stat.S_ISREG(info.st_mode):
        return Entry(relative, info.st_size, info.st_mtime_ns, problem="not a regular file")
    return Entry(relative, info.st_size, info.st_mtime_ns)


class ChunkStore:
    """The work directory: job.json, numbered chunk files, and the lock."""

    def __init__(self, directory: Path):
        self.directory = directory

    def chunks(self) -> list[Path]:
        return sorted(self.directory.glob("chunk-*.npz"))

    def write(self, results: list[VideoResult], entries: list[Entry], precision: str) -> None:
        """One chunk with the results (``result.index`` indexes ``entries``), computed in ``precision``.

        Moments (results with ``spans``): the embeddings hold every window's row, video after video, and
        ``records["spans"]`` each done video's [[start_s, end_s], ...]. ``records["facts"]``: each done
        video's facts dict (``video.facts``) or None.
        """
        done = [r for r in results if r.error is None]
        rows = [r.embedding.reshape(-1, r.embedding.shape[-1]) for r in done]
        embeddings = np.concatenate(rows) if done else np.zeros((0, 0), np.float32)
        records = {
            "done": [_stats(entries[r.index]) for r in done],
            "failed": [[*_stats(entries[r.index]), r.error] for r in results if r.error is not None],
            "precision": precision,
            "facts": [r.facts for r in done],
        }
        if any(r.spans is not None for r in done):
            records["spans"] = [[list(span) for span in r.spans] for r in done]
        number = max([int(p.stem.split("-")[1]) for p in self.chunks()] + [-1]) + 1
        self.write_chunk(number, embeddings, records)

    def write_chunk(self, number: int, embeddings: np.ndarray, records: dict) -> None:
        # ASCII JSON: a name that is not UTF-8 (a str with lone surrogates, as os.walk gives it) is
        # written as \udcXX escapes, which json.loads turns back into the exact name.
        payload = np.frombuffer(json.dumps(records, ensure_ascii=True).encode("ascii"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, embeddings=embeddings.astype(np.float32), records=payload)
        atomic_write(
            self.directory / f"chunk-{number:06d}.npz", lambda handle: handle.write(buffer.getvalue())
        )

    def load(self) -> dict[str, Known]:
        """Results of every chunk, later chunks overriding earlier ones; unreadable chunks are dropped."""
        known: dict[str, Known] = {}
        for chunk in self.chunks():
            try:
                embeddings, records = _read_chunk(chunk)
            except (OSError, ValueError, KeyError, EOFError) as error:
                logger.warning(
                    "dropping unreadable work file %s (%s); its videos are encoded again", chunk, error
                )
                chunk.unlink(missing_ok=True)
                continue
            rows, spans_of = _split_rows(embeddings, records)
            precision = records.get("precision")
            facts = records.get("facts") or [None] * len(records["done"])  # chunks written before facts
            for (path, size, mtime_ns), row, spans, fact in zip(
                records["done"], rows, spans_of, facts, strict=True
            ):
                known[path] = Known(size, mtime_ns, row, spans=spans, precision=precision, facts=fact)
            for path, size, mtime_ns, reason in records["failed"]:
                known[path] = Known(size, mtime_ns, reason=reason)
        return known


def _stats(entry: Entry) -> list:
    return [entry.path, entry.size, entry.mtime_ns]


def _read_chunk(chunk: Path) -> tuple[np.ndarray, dict]:
    with np.load(chunk, allow_pickle=False) as data:
        embeddings = np.asarray(data["embeddings"], dtype=np.float32)
        records = json.loads(bytes(data["records"]).decode())
    expected = sum(map(len, records["spans"])) if "spans" in records else len(records["done"])
    if "spans" in records and len(records["spans"]) != len(records["done"]):
        raise ValueError(f"{len(records['spans'])} window lists for {len(records['done'])} paths")
    if expected != len(embeddings):
        raise ValueError(f"{len(embeddings)} rows for {expected} expected")
    if records.get("facts") is not None and len(records["facts"]) != len(records["done"]):
        raise ValueError(f"{len(records['facts'])} facts for {len(records['done'])} paths")
    return embeddings, records


def _split_rows(embeddings: np.ndarray, records: dict) -> tuple[list, list]:
    """(each done video's embedding: (C,), or (n, C) with moments; its spans or None), in records order."""
    if "spans" not in records:
        return list(embeddings), [None] * len(embeddings)
    ends = np.cumsum([len(spans) for spans in records["spans"]])
    rows = np.split(embeddings, ends[:-1]) if len(ends) else []
    return rows, [[tuple(span) for span in spans] for spans in records["spans"]]
