"""Search results as moments: a moments index's rows (windows of videos) grouped per video and merged.

Rule (``group_moments``), over rows in search order (score descending, ties by lowest row):
  - a row of a video already shown whose time range overlaps (by more than an instant) one of that
    video's moments belongs to it: it widens the moment to the union of both ranges when its score is
    within ``merge_gap`` (cosine) of the moment's, else it is dropped (a weaker view of the same moment);
  - any other row starts a new moment of its video, when the video has fewer than ``per_video``
    moments and is one of the ``top_k`` best videos (a video's rank is its best row's);
  - a moment keeps its best row's score and row number.
So a video's moments never start inside one another, the windows around a clear hit (overlapping,
scoring alike) come back as one time range, and the list holds at most ``top_k`` videos with at most
``per_video`` moments each, sorted by score. Rows without a time range (whole videos) never overlap.

Exact over any candidate list (``settled``): the groups formed from the best k rows are those of all
rows when top_k videos were found, no row below the k-th could widen a moment (every moment's score
minus ``merge_gap`` lies above the k-th score) and every video with fewer than ``per_video`` moments
had all its rows among the k. ``EmbeddingIndex.search`` fetches k = ``first_fetch`` rows (exactly, or
from the ANN index re-ranked exactly) and doubles k until the groups are settled or k covers the index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

MERGE_GAP = 0.02  # cosine: windows scoring this close to a moment's best and overlapping it join it
FETCH_FACTOR = 8  # rows first fetched per wanted moment


@dataclass
class Moment:
    """One result: a video's time range (None for a whole video), its best score and row, and the rows it holds."""

    path: str
    start_s: float | None
    end_s: float | None
    score: float
    row: int
    rows: list[int] = field(default_factory=list)

    def overlaps(self, start: float | None, end: float | None) -> bool:
        if start is None or end is None or self.start_s is None or self.end_s is None:
            return False
        return start < self.end_s and end > self.start_s


def first_fetch(top_k: int, per_video: int) -> int:
    """Rows fetched first: ``FETCH_FACTOR`` a wanted moment (a video's windows crowd its neighbours out)."""
    return max(32, FETCH_FACTOR * top_k * per_video)


def group_moments(
    rows: np.ndarray,
    scores: np.ndarray,
    path_of: Callable[[int], str],
    span_of: Callable[[int], tuple[float | None, float | None]],
    top_k: int,
    per_video: int,
    merge_gap: float = MERGE_GAP,
) -> list[Moment]:
    """The moments of rows (k,) with scores (k,) in search order (see the module docstring), best first."""
    videos: dict[str, list[Moment]] = {}
    for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
        path = path_of(row)
        start, end = span_of(row)
        moments = videos.get(path)
        if moments is None:
            if len(videos) == top_k:
                continue
            moments = videos[path] = []
        home = next((m for m in moments if m.overlaps(start, end)), None)
        if home is not None:
            if score >= home.score - merge_gap:
                home.start_s, home.end_s = min(home.start_s, start), max(home.end_s, end)
                home.rows.append(row)
        elif len(moments) < per_video:
            moments.append(Moment(path, start, end, score, row, [row]))
    found = [m for moments in videos.values() for m in moments]
    return sorted(found, key=lambda m: (-m.score, m.row))


def settled(
    moments: list[Moment],
    threshold: float,
    top_k: int,
    per_video: int,
    fetched_of: Callable[[str], int],
    total_of: Callable[[str], int],
    merge_gap: float = MERGE_GAP,
) -> bool:
    """Whether ``moments`` grouped from the rows scoring at least ``threshold`` (the last fetched row's
    score; rows not fetched score at most that) are those of every row (see the module docstring).

    fetched_of / total_of: a video's rows among those fetched / in the index.
    """
    counts: dict[str, int] = {}
    for moment in moments:
        counts[moment.path] = counts.get(moment.path, 0) + 1
        if moment.score - merge_gap <= threshold and moment.start_s is not None:
            return False
    if len(counts) < top_k:
        return False
    return all(n >= per_video or fetched_of(path) >= total_of(path) for path, n in counts.items())
