"""``SearchResult``: one hit of a search, as every kind of search (exact, approximate, filtered, by
example, deduplicated, over shards) returns it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SearchResult:
    """One hit.

    rank: 1 = best; path: as stored in the index (relative to its root), the exact name (a name that
    is not UTF-8 as the str ``os.walk`` gives: ``muse_infer.filenames``); score: the exact cosine;
    row: the row number (in a ``ShardedIndex``: the row in the shards taken end to end); absolute_path:
    the file to open (root joined with path; None when the index has no root and path is relative);
    start_s, end_s: the time range of a moment row (None for a whole video); shard: which of a
    ``ShardedIndex``'s indexes (None for a single index).
    """

    rank: int
    path: str
    score: float
    row: int = -1
    absolute_path: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    shard: int | None = None

    @property
    def display_path(self) -> str:
        """``path`` as text for people (``filenames.display_name``): bytes that are not UTF-8 as ``\\xNN``."""
        from ..filenames import display_name

        return display_name(self.path)

    def to_dict(self) -> dict:
        """The JSON record (``search --json``): ``path`` and ``absolute_path`` exact (``open`` them;
        written by ``json`` as ``\\udcXX`` escapes where a name is not UTF-8), and ``display_path`` /
        ``display_absolute_path`` (text for people) only where they differ from those."""
        from ..filenames import with_display

        out = {"path": self.path, "score": self.score, "rank": self.rank, "row": self.row}
        out["absolute_path"] = self.absolute_path
        for key in ("start_s", "end_s", "shard"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return with_display(with_display(out), "absolute_path", "display_absolute_path")
