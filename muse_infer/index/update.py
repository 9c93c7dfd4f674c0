"""Growing an index in place: the front the encode jobs use (``muse_infer.jobs``).

A job that writes ``EMB.npy`` where an index already is reads that index once (``read_previous``:
its rows' stats in row order, their embeddings and time ranges, its failures, its content id), takes
what it needs from that reading while it runs, and at the end hands the new rows to ``update_index``,
which decides the row order (the earlier rows first, in place, while their files are unchanged),
says which earlier rows are gone and why, writes the files, reads them back to check them, and brings
the approximate index up to date, all from the same reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import IndexFileError, MuseError
from .files import IndexFiles
from .store import read_failures


@dataclass
class PreviousIndex:
    """The index a job grows, as read once at its start.

    rows: [[path, size, mtime_ns], ...] in row order (-1 where unknown); embeddings: (N, C) float32,
    memory-mapped; spans: (start_s, end_s) a row for an index of moments, else None; failures: its
    failures file's records; sidecar: its sidecar dict; row_records: its rows table (Arrow), for the
    videos' facts (``facts``).
    """

    location: Path
    sidecar: dict
    content_id: str | None
    rows: list[list]
    embeddings: np.ndarray
    spans: list[tuple] | None
    failures: list[dict]
    row_records: object = None

    def facts(self) -> list[dict | None]:
        """Each row's video facts (``store.FACT_COLUMNS``: duration, size, rate, codec), None where the
        index recorded none (written before facts were recorded)."""
        from .store import FACT_COLUMNS

        table = self.row_records
        present = [name for name in FACT_COLUMNS if table is not None and name in table.column_names]
        if not present:
            return [None] * len(self.rows)
        columns = {name: table.column(name).to_pylist() for name in present}
        rows = [{name: columns[name][row] for name in present} for row in range(len(self.rows))]
        return [values if any(v is not None for v in values.values()) else None for values in rows]

    def videos(self) -> tuple[list[list], list[list]]:
        """A moments index's rows grouped by video: ([[path, size, mtime_ns], ...], [[[start, end], ...]])."""
        done, spans = [], []
        for row_stat, span in zip(self.rows, self.spans or [(None, None)] * len(self.rows), strict=True):
            if not done or done[-1][0] != row_stat[0]:
                done.append(row_stat)
                spans.append([])
            spans[-1].append(list(span))
        if len({row_stat[0] for row_stat in done}) != len(done):
            raise IndexFileError(f"{self.location}: a video's moment rows are not consecutive")
        return done, spans


def read_previous(path) -> PreviousIndex | None:
    """The index at ``path`` (EMB.npy), read once; None when there is none; ``IndexFileError`` when one
    is there but cannot be read (truncated, foreign, stale)."""
    from .embedding_index import EmbeddingIndex

    files = IndexFiles.of(path)
    if not files.sidecar.exists() and not files.npy.exists():
        return None
    index = EmbeddingIndex.load(files.npy, ann=False)
    stats = _row_stats(index)
    spans = None
    if "start_s" in index.rows.column_names:
        starts, ends = (index.rows.column(c).to_pylist() for c in ("start_s", "end_s"))
        if any(start is not None for start in starts):
            spans = list(zip(starts, ends, strict=True))
    return PreviousIndex(
        files.npy,
        dict(index.metadata),
        index.content_id,
        stats,
        index.embeddings,
        spans,
        read_failures(files.npy),
        index.rows,
    )


def discard_index(path) -> None:
    """Remove the index at ``path`` (its rows, sidecar, row records, failures file), and its approximate
    index where this tool wrote it (``--overwrite``). Files another program wrote are left alone."""
    from .ann import owned_ann_file, read_ann_meta

    files = IndexFiles.of(path)
    ann_ours = read_ann_meta(files.npy)[0] is not None, owned_ann_file(files.npy)  # read before removing
    for core in files.core:
        core.unlink(missing_ok=True)
    for ann_file, owned in zip((files.ann_meta, files.ann), ann_ours, strict=True):
        if owned:
            ann_file.unlink(missing_ok=True)


def is_our_index(path) -> bool:
    """Whether ``path`` (EMB.npy) has a muse-infer index sidecar beside it (so this tool wrote it)."""
    from .build import is_index

    return is_index(IndexFiles.of(path).npy)


def _row_stats(index) -> list[list]:
    sizes, mtimes = (index.rows.column(c).to_pylist() for c in ("size", "mtime_ns"))
    return [
        [path, -1 if size is None else size, -1 if mtime is None else mtime]
        for path, size, mtime in zip(index.paths, sizes, mtimes, strict=True)
    ]


@dataclass
class Video:
    """One video of the new index: its exact path, stats and rows (n, C), with n time ranges for
    moments, and its facts (``store.FACT_COLUMNS``; None: not recorded)."""

    path: str
    size: int
    mtime_ns: int
    rows: np.ndarray
    spans: list | None = None
    facts: dict | None = None


@dataclass
class UpdatedIndex:
    """What ``update_index`` did: the videos in row order, the earlier videos whose rows are gone
    (``{"path", "why"[, "rows"]}``), the row records written, the index read back, and what happened
    to the approximate index (or a hint; None when there is nothing to say)."""

    order: list[str]
    dropped: list[dict] = field(default_factory=list)
    rows: object = None
    written: object = None
    ann_note: str | None = None


def row_order(videos: dict[str, Video], found: Sequence[str], previous: PreviousIndex | None):
    """(paths in row order, how many leading rows are the previous index's rows unchanged, or None).

    ``found``: every path the job saw, sorted. The previous index's videos come first, in their order,
    while their files are unchanged; new and changed videos follow in ``found`` order. With moments a
    video has several rows, consecutive; the previous rows stay in place when every video of them is
    unchanged (same stats, same number of windows).
    """
    if previous is None:
        return [path for path in found if path in videos], None
    order_before = list(dict.fromkeys(path for path, _, _ in previous.rows))  # once each
    stats = {path: (size, mtime) for path, size, mtime in previous.rows}
    unchanged = [
        path
        for path in order_before
        if path in videos and (videos[path].size, videos[path].mtime_ns) == stats[path]
    ]
    kept = set(unchanged)
    order = unchanged + [path for path in found if path in videos and path not in kept]
    kept_rows = sum(len(videos[path].rows) for path in unchanged)
    in_place = kept_rows == len(previous.rows) and len(unchanged) == len(order_before)
    return order, kept_rows if in_place else None


def dropped_videos(previous: PreviousIndex | None, videos: dict[str, Video], found: set[str]) -> list[dict]:
    """Videos of the earlier index whose rows the new one no longer holds as they were: the file was
    deleted, changed (its rows replaced by new ones), or cannot be read any more. One entry a video
    (a video of moments has several rows: ``rows`` says how many)."""
    counts: dict[tuple, int] = {}
    for path, size, mtime in previous.rows if previous else []:
        counts[(path, size, mtime)] = counts.get((path, size, mtime), 0) + 1
    dropped = []
    for (path, size, mtime), rows in counts.items():
        if path not in found:
            why = "deleted"
        elif path not in videos:
            why = "unreadable now"
        elif (videos[path].size, videos[path].mtime_ns) != (size, mtime):
            why = "changed (encoded again)"
        else:
            continue
        dropped.append({"path": path, "why": why} | ({"rows": rows} if rows > 1 else {}))
    return dropped


def update_index(
    path,
    videos: dict[str, Video],
    found: Sequence[str],
    previous: PreviousIndex | None,
    dim: int,
    described: dict,
    failures: list[dict],
) -> UpdatedIndex:
    """Write the index at ``path`` from ``videos`` (exact path -> ``Video``; ``found``: every path the
    job saw, sorted), growing ``previous`` (``read_previous``, or None for a new index): the row order
    and dropped rows as ``row_order``/``dropped_videos`` say, the files written atomically
    (``store.write_index_files``: ``described`` are the sidecar's descriptive fields, ``failures`` the
    failures file's records), read back and compared (``IndexFileError`` naming what differs), then
    the approximate index brought up to date from the rows kept in place (never failing the update).
    OSError from the disk passes through.
    """
    from .build import row_table
    from .store import write_index_files

    files = IndexFiles.of(path)
    order, kept = row_order(videos, found, previous)
    blocks = [videos[p].rows for p in order]
    embeddings = np.concatenate(blocks).astype(np.float32) if blocks else np.zeros((0, dim), np.float32)
    paths, sizes, mtimes, starts, ends, facts = _row_columns(order, videos)
    rows = row_table(
        paths, len(embeddings), sizes=sizes, mtimes_ns=mtimes, start_s=starts, end_s=ends, facts=facts
    )
    write_index_files(files.npy, [embeddings], len(embeddings), dim, rows, described, failures)
    written = _read_back(files, len(embeddings), rows, failures)
    note = _refresh_ann(written, previous, kept)
    dropped = dropped_videos(previous, videos, set(found))
    return UpdatedIndex(order, dropped, rows, written, note)


def _row_columns(order: list[str], videos: dict[str, Video]) -> tuple:
    """(paths, sizes, mtimes, starts, ends, facts) a row: a row a video, or a row a window of moments;
    each row with its video's facts ({name: values}; null where not recorded)."""
    from .store import FACT_COLUMNS

    paths, sizes, mtimes, starts, ends = [], [], [], [], []
    facts: dict[str, list] = {name: [] for name in FACT_COLUMNS}
    for path in order:
        video = videos[path]
        spans = video.spans if video.spans is not None else [(None, None)]
        paths += [path] * len(spans)
        sizes += [video.size] * len(spans)
        mtimes += [video.mtime_ns] * len(spans)
        starts += [start for start, _ in spans]
        ends += [end for _, end in spans]
        for name, values in facts.items():
            values += [(video.facts or {}).get(name)] * len(spans)
    moments = any(start is not None for start in starts)
    return paths, sizes, mtimes, starts if moments else None, ends if moments else None, facts


def _read_back(files: IndexFiles, count: int, rows, failures: list[dict]):
    """The index just written, opened with every check (each chunk hash, the whole rows table, the
    failures file) and compared with what was written; ``IndexFileError`` saying what differs."""
    from .embedding_index import EmbeddingIndex
    from .store import failure_line

    try:
        index = EmbeddingIndex.load(files.npy, verify=True, ann=False)
        written_failures = files.failures.read_text(encoding="ascii")
    except (MuseError, OSError, UnicodeDecodeError) as error:
        raise IndexFileError(f"{error}") from None
    if len(index) != count:
        raise IndexFileError(f"{len(index)} rows instead of {count}")
    if not index.rows.equals(rows):  # every column decoded from the file, compared value by value
        raise IndexFileError("the row records differ")
    if written_failures != "".join(failure_line(f) for f in failures):
        raise IndexFileError("the failures file differs")
    return index


def _refresh_ann(written, previous: PreviousIndex | None, kept: int | None) -> str | None:
    """Bring the ANN index up to date (never failing the update), or hint at building one."""
    from .ann import plan_ann
    from .build import refresh_opened_ann

    npy = written.location
    try:
        note = refresh_opened_ann(written, previous.content_id if previous else None, kept)
    except MuseError as error:
        return (
            f"approximate index not updated ({error}); searches are exact until: muse-infer index build {npy}"
        )
    rows = len(written)
    if note is None and rows and plan_ann(rows, written.dim).kind != "flat":
        return f"hint: {rows} rows search faster with an approximate index: muse-infer index build {npy}"
    return note
