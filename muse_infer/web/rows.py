"""Plain data the pages are built from, and the one adapter from an index to it.

The pages never look inside an index: ``IndexRows`` hands them what the index already carries of each
row (its thumbnail source: relative path, file size and mtime, a moment's range; its file; the folder
it lives under). ``hits_for`` turns search results into ``Hit`` records holding what a card shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..video.thumbnails import ThumbnailSource, ThumbnailStore


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
    """What the pages need of an ``EmbeddingIndex``, read from what it already carries: each row's
    thumbnail source (``EmbeddingIndex.thumbnail_sources``), its root folder, a result's row, a row's
    file."""

    def __init__(self, index):
        self.index = index
        self.sources = index.thumbnail_sources
        self.root = index.root

    def __len__(self) -> int:
        return len(self.sources)

    def row_of(self, result) -> int:
        """The row number of a ``SearchResult``."""
        return int(result.row)

    def video_path(self, row: int) -> Path | None:
        """The row's file on disk (root / relative path), None when the index records no root."""
        path = self.index.absolute_path(row)
        return Path(path) if path is not None else None


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
