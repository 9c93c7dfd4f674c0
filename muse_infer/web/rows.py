"""Plain data the pages are built from, and the one adapter from an index to it.

The pages never look inside an index: ``IndexRows`` reads, once, what they need of each row (its
relative path, file size and mtime, time range when the row is a moment, and the folder it lives
under), with defaults for fields an index may not have (``start_s``/``end_s`` exist only for
moments). ``hits_for`` turns search results into ``Hit`` records holding what a card shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..video.thumbnails import ThumbnailSource, ThumbnailStore, thumbnail_sources


@dataclass(frozen=True)
class Hit:
    """One search result as a card shows it.

    path: relative POSIX path under the index's root, exact (shown as ``filenames.display_name`` of
    it: a name's bytes that are not UTF-8 as ``\\xNN``); video: the file on disk
    (absolute), None when unknown; start_s/end_s: the moment's range in seconds, None for a whole
    video; thumbnails: keyframe image files (absolute), empty when there are none; similar: the
    results most like it (a search by its row), for the page's "more like this".
    """

    rank: int
    score: float
    row: int
    path: str
    video: Path | None = None
    start_s: float | None = None
    end_s: float | None = None
    thumbnails: tuple[Path, ...] = ()
    similar: tuple[Hit, ...] | None = None  # the results most like this one ("more like this"); None: no list


@dataclass(frozen=True)
class QueryHits:
    """A query and its hits, best first."""

    query: str
    hits: list[Hit] = field(default_factory=list)


class IndexRows:
    """Per-row facts of an ``EmbeddingIndex`` (or anything shaped like one): sources of thumbnails,
    the root folder, and the row number of a search result.

    Reads ``paths``, ``root``, the file stats (``size`` and ``mtime_ns`` columns of the index's row
    records, else the sidecar's ``file_stats`` of format 1) and ``start_s``/``end_s``, each a column of
    ``index.rows``, an attribute of the index or a key of its metadata; a missing field gets its default. The one place to adapt when the index's storage changes.
    """

    def __init__(self, index):
        metadata = getattr(index, "metadata", None) or {}
        paths = [str(path) for path in index.paths]
        stats = _column(index, "file_stats", None) or list(
            zip(
                _column(index, "size", None) or [-1] * len(paths),
                _column(index, "mtime_ns", None) or [-1] * len(paths),
                strict=True,
            )
        )
        self.sources = thumbnail_sources(
            paths,
            [size for size, _ in stats],
            [mtime for _, mtime in stats],
            _column(index, "start_s", None),
            _column(index, "end_s", None),
        )
        root = getattr(index, "root", None) or metadata.get("root")
        self.root = Path(root) if root else None
        self._rows = {(s.path, s.start_s, s.end_s): row for row, s in enumerate(self.sources)}

    def __len__(self) -> int:
        return len(self.sources)

    def row_of(self, result) -> int:
        """The row number of a ``SearchResult`` (its ``row`` when it has one, else found by path and range)."""
        row = getattr(result, "row", None)
        if row is not None:
            return int(row)
        key = (
            result.path,
            _seconds(getattr(result, "start_s", None)),
            _seconds(getattr(result, "end_s", None)),
        )
        return self._rows[key]

    def video_path(self, row: int) -> Path | None:
        """The row's file on disk (root / relative path), None when the index records no root."""
        return self.root / self.sources[row].path if self.root is not None else None


def _column(index, name: str, default):
    table = getattr(index, "rows", None)  # an index of format 2: its Parquet row records
    if table is not None and hasattr(table, "column_names") and name in table.column_names:
        return table.column(name).to_pylist()
    value = getattr(index, name, None)
    if value is None:
        value = (getattr(index, "metadata", None) or {}).get(name)
    return list(value) if value is not None else default


def _seconds(value) -> float | None:
    return None if value is None else float(value)


def hits_for(
    results: Sequence, rows: IndexRows, store: ThumbnailStore | None = None, make_missing: bool = True
) -> list[Hit]:
    """``Hit`` records for one query's search results.

    store: where thumbnails live; with ``make_missing``, a row without them gets them now (an index
    encoded with --no-thumbnails, or before thumbnails existed). A row whose video cannot be read
    gets none; nothing here raises for it.
    """
    hits = []
    for result in results:
        row = rows.row_of(result)
        source, video = rows.sources[row], rows.video_path(row)
        thumbnails: list[Path] = []
        if store is not None:
            if store.has(source):
                thumbnails = store.files(source)
            elif make_missing and video is not None:
                thumbnails = store.ensure(video, source)
        hits.append(
            Hit(
                rank=int(result.rank),
                score=float(result.score),
                row=row,
                path=source.path,
                video=_absolute(getattr(result, "absolute_path", None)) or video,
                start_s=moment_span(result, source)[0],
                end_s=moment_span(result, source)[1],
                thumbnails=tuple(thumbnails),
            )
        )
    return hits


def moment_span(result, source: ThumbnailSource) -> tuple[float | None, float | None]:
    """A hit's time range: the result's own (a moment merged from several windows), else its row's."""
    start, end = getattr(result, "start_s", None), getattr(result, "end_s", None)
    if start is not None and end is not None:
        return float(start), float(end)
    return source.start_s, source.end_s


def _absolute(path) -> Path | None:
    return Path(os.path.abspath(path)) if path else None
