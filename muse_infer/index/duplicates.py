"""Duplicates: groups of videos that are the same content (re-encoded, rescaled, in another container,
trimmed by a few seconds), and one result per group in search (``dedup``).

    found = find_duplicates(EmbeddingIndex.load("emb.npy"))        # = muse-infer duplicates --index emb.npy
    for group in found.groups: print([found.videos[v].path for v in group])

How (``find_duplicates``):
1. Candidates: every row's ``NEIGHBOURS`` nearest rows through the ANN index (``neighbours.close_pairs``:
   a million rows in minutes), kept when their exact cosine is >= ``CANDIDATE_COSINE``; rows of two
   different videos make the two videos a candidate pair. The bar is low on purpose: a trimmed copy's
   whole-video embedding can move far, and step 2 decides. A collection of at most
   ``FRAME_SCAN_VIDEOS`` videos whose files can be read also has every video's frames read first, and
   videos sharing a frame are candidates too (``frame_candidates``): a trimmed copy of a video of two
   scenes ended at cosine 0.28 from its original on the generated corpus, beyond any embedding bar.
2. Comparison of each candidate pair, by what the videos show over their length, not by one vector
   (a single frame or one embedding would group every pair of videos sharing an intro):
   - "frames" (``compare="auto"`` when the files can be read): ``video.signatures`` of 16 frames of
     each video (read once a video, in threads); the score is the share of each video's frames found
     in the other (``signatures.coverage``, frames matching at ``FRAME_MATCH``), the smaller share;
   - "moments" (an index of moments, when the files cannot be read or ``compare="moments"``): the same
     coverage over the videos' moment rows (matching at ``MOMENT_MATCH``);
   - "embeddings" (neither): the whole-video cosine, a duplicate at ``EMBEDDING_MATCH`` or above.
   A pair is a duplicate when its coverage is >= ``threshold`` (default ``DEFAULT_THRESHOLD``, chosen
   from the precision/recall curve on ``muse_infer.data.duplicates``' corpus: docs/benchmarks.md).
3. Groups: the connected sets of duplicate pairs (a copy of a copy is in its original's group).

Search (``deduplicated_search``): the ranked results are walked best first and a video is dropped
when a better-ranked one kept is its duplicate by the same test, fetching more results until
``top_k`` are kept or none are left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import IndexInputError, MuseError
from . import ann as ann_files

logger = logging.getLogger(__name__)
DEFAULT_THRESHOLD = 0.5
CANDIDATE_COSINE = 0.5
NEIGHBOURS = 10
FRAME_MATCH = 0.85
MOMENT_MATCH = 0.9
EMBEDDING_MATCH = 0.97
COMPARE = ("auto", "frames", "moments", "embeddings")
DEDUP_FETCH = 4  # search --dedup first fetches this many times top_k results
FRAME_SCAN_VIDEOS = 5000  # up to this many videos, every one's frames are read for candidates too
FRAME_NEIGHBOURS = 16


@dataclass
class Video:
    """A video of the index: its number, path (exact), rows (its moment rows, or its one row)."""

    number: int
    path: str
    rows: np.ndarray


@dataclass
class Pair:
    """A candidate pair of videos (numbers), their best row cosine, the comparison's score and kind."""

    first: int
    second: int
    cosine: float
    score: float
    compared: str
    duplicate: bool


@dataclass
class Duplicates:
    """What ``find_duplicates`` found: ``groups`` (lists of video numbers, largest first), the
    ``videos``, and every candidate pair as arrays (P,): videos ``first`` < ``second``, their best row
    ``cosine``, the comparison's ``score`` and kind (``compared``), and whether it is a ``duplicate``."""

    videos: list[Video]
    first: np.ndarray
    second: np.ndarray
    cosine: np.ndarray
    score: np.ndarray
    compared: np.ndarray
    duplicate: np.ndarray
    groups: list[list[int]]
    threshold: float
    seconds: float = 0.0
    unreadable: list[str] = field(default_factory=list)

    @property
    def pairs(self) -> list[Pair]:
        """Every candidate pair as a ``Pair`` (made on demand: a large index has millions)."""
        return [self._pair(i) for i in range(len(self.first))]

    def duplicate_pairs(self) -> list[Pair]:
        return [self._pair(i) for i in np.flatnonzero(self.duplicate).tolist()]

    def counts(self) -> dict[str, int]:
        """{how compared: candidate pairs}."""
        kinds, numbers = np.unique(self.compared, return_counts=True)
        return {str(k): int(n) for k, n in zip(kinds, numbers, strict=True)}

    def _pair(self, i: int) -> Pair:
        values = (self.first[i], self.second[i], self.cosine[i], self.score[i])
        first, second, cosine, score = int(values[0]), int(values[1]), float(values[2]), float(values[3])
        return Pair(first, second, cosine, score, str(self.compared[i]), bool(self.duplicate[i]))

    def to_dict(self, index) -> dict:
        """The JSON report (``muse-infer duplicates --json``): paths exact (\\udcXX where a name is not
        UTF-8), with display_path where the text differs."""
        from ..filenames import with_display

        def video(number: int) -> dict:
            item = self.videos[number]
            record = {"path": item.path, "absolute_path": index.absolute_path(int(item.rows[0]))}
            record["rows"] = item.rows.tolist()
            return with_display(with_display(record), "absolute_path", "display_absolute_path")

        duplicates = self.duplicate_pairs()
        grouped = []
        for number, members in enumerate(self.groups, start=1):
            inside = set(members)
            pairs = [p for p in duplicates if p.first in inside]
            grouped.append(
                {
                    "group": number,
                    "videos": [video(m) for m in members],
                    "pairs": [_pair_record(self.videos, p) for p in pairs],
                }
            )
        return {
            "index": str(index.location),
            "threshold": self.threshold,
            "videos": len(self.videos),
            "rows": len(index),
            "candidate_pairs": len(self.first),
            "compared": self.counts(),
            "duplicate_pairs": len(duplicates),
            "groups": grouped,
            "unreadable": self.unreadable,
            "seconds": round(self.seconds, 3),
        }


def _pair_record(videos: list[Video], pair: Pair) -> dict:
    from ..filenames import display_name

    return {
        "a": display_name(videos[pair.first].path),
        "b": display_name(videos[pair.second].path),
        "score": round(pair.score, 4),
        "cosine": round(pair.cosine, 4),
        "compared": pair.compared,
    }


def index_videos(index) -> tuple[list[Video], np.ndarray]:
    """(the videos of ``index`` in row order, the video number of each row (N,) int64).

    A video's rows are consecutive (one, or its moments); a path seen again later is another video."""
    owner = np.empty(len(index), np.int64)
    videos: list[Video] = []
    previous, first = None, 0
    for row, path in enumerate(index.paths):
        if path != previous:
            if previous is not None:
                videos.append(Video(len(videos), previous, np.arange(first, row, dtype=np.int64)))
            previous, first = path, row
        owner[row] = len(videos)
    if previous is not None:
        videos.append(Video(len(videos), previous, np.arange(first, len(index), dtype=np.int64)))
    return videos, owner


class PairJudge:
    """Compares two videos of an index (see the module docstring, step 2); frame signatures cached."""

    def __init__(self, index, compare: str = "auto", threshold: float = DEFAULT_THRESHOLD):
        if compare not in COMPARE:
            raise IndexInputError(f"compare {compare!r}: one of {', '.join(COMPARE)}")
        if not 0.0 < threshold <= 1.0:
            raise IndexInputError(
                f"threshold {threshold!r}: give a share in (0, 1], e.g. {DEFAULT_THRESHOLD}"
            )
        self.index, self.compare, self.threshold = index, compare, threshold
        self.signatures: dict[str, object] = {}  # path -> Signatures, or None when unreadable
        self.moments = bool(getattr(index, "has_moments", False))

    def prepare(self, videos: list[Video], workers: int = 2, progress: Callable | None = None) -> None:
        """Read the frame signatures of ``videos`` (threads: PyAV decodes without the GIL)."""
        if self.compare not in ("auto", "frames"):
            return
        todo = [v for v in videos if v.path not in self.signatures]
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for video, found in zip(todo, pool.map(self._read, todo), strict=True):
                self.signatures[video.path] = found
                if progress is not None:
                    progress(1)

    def _read(self, video: Video):
        from ..video.signatures import video_signatures

        location = self.index.absolute_path(int(video.rows[0]))
        if location is None:
            return None
        try:
            return video_signatures(location)
        except MuseError as error:
            logger.info("frames of %s not read (%s)", location, error)
            return None
        except Exception as error:  # noqa: BLE001 - a decoder bug on one file: compare it otherwise
            logger.warning("frames of %s not read (%s)", location, error)
            return None

    def judge(self, a: Video, b: Video, cosine: float) -> Pair:
        """Compare two videos whose best rows have ``cosine`` (see the module docstring)."""
        from ..video.signatures import coverage, similarity

        frames_a, frames_b = self.signatures.get(a.path), self.signatures.get(b.path)
        if self.compare in ("auto", "frames") and frames_a is not None and frames_b is not None:
            score = coverage(similarity(frames_a, frames_b), FRAME_MATCH)
            return Pair(a.number, b.number, cosine, score, "frames", score >= self.threshold)
        if self.compare in ("auto", "moments") and self.moments:
            rows_a, rows_b = (self._unit(v.rows) for v in (a, b))
            score = coverage(rows_a @ rows_b.T, MOMENT_MATCH)
            return Pair(a.number, b.number, cosine, score, "moments", score >= self.threshold)
        whole = float(self._mean(a.rows) @ self._mean(b.rows))
        return Pair(a.number, b.number, cosine, whole, "embeddings", whole >= EMBEDDING_MATCH)

    def _unit(self, rows: np.ndarray) -> np.ndarray:
        from .neighbours import _rows_of

        return _rows_of(self.index, rows)

    def _mean(self, rows: np.ndarray) -> np.ndarray:
        mean = self._unit(rows).mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)


def find_duplicates(
    index,
    threshold: float = DEFAULT_THRESHOLD,
    compare: str = "auto",
    candidate_cosine: float = CANDIDATE_COSINE,
    neighbours: int = NEIGHBOURS,
    workers: int = 2,
    progress: bool = False,
) -> Duplicates:
    """Groups of duplicate videos of ``index`` (an ``EmbeddingIndex``; see the module docstring).

    threshold: the coverage a pair needs; compare: "auto", "frames", "moments" or "embeddings";
    candidate_cosine / neighbours: step 1's bar and neighbour count; workers: threads reading frames.
    """
    from ..progress import progress_bar
    from .neighbours import close_pairs

    started = time.monotonic()
    judge = PairJudge(index, compare, threshold)
    videos, owner = index_videos(index)
    widest = max((len(v.rows) for v in videos), default=1)
    k = neighbours + min(64, widest - 1)  # a moment's nearest rows are often its own video's
    with progress_bar(len(index), "neighbours", enabled=progress) as bar:
        rows = close_pairs(index, k, candidate_cosine, bar.update)
    first, second, best = video_pairs(owner[rows[0]], owner[rows[1]], rows[2])
    if compare in ("auto", "frames") and len(videos) <= FRAME_SCAN_VIDEOS:
        with progress_bar(len(videos), "reading frames", enabled=progress) as bar:
            judge.prepare(videos, workers, bar.update)
        first, second, best = _with_frame_candidates(index, judge, videos, first, second, best)
    score = np.zeros(len(first), np.float32)
    compared = np.full(len(first), "embeddings", dtype=object)
    framed, unreadable = np.zeros(len(first), bool), []
    if compare in ("auto", "frames") and len(first):
        with progress_bar(len(first), "comparing frames", enabled=progress) as bar:
            framed, unreadable = _compare_frames(judge, videos, first, second, best, score, workers, bar)
        compared[framed] = "frames"
    rest = ~framed
    if compare in ("auto", "moments") and judge.moments:
        row_count = np.array([len(v.rows) for v in videos])
        score[rest] = moment_coverage(owner, rows, first[rest], second[rest], row_count)
        compared[rest] = "moments"
    elif rest.any():
        score[rest] = _whole_cosines(judge, videos, first[rest], second[rest], best[rest])
    duplicate = np.where(compared == "embeddings", score >= EMBEDDING_MATCH, score >= threshold)
    edges = list(zip(first[duplicate].tolist(), second[duplicate].tolist(), strict=True))
    groups = sorted(connected_groups(len(videos), edges), key=lambda g: (-len(g), videos[g[0]].path))
    seconds = time.monotonic() - started
    return Duplicates(
        videos, first, second, best, score, compared, duplicate, groups, threshold, seconds, unreadable
    )


def _compare_frames(judge, videos, first, second, best, score, workers: int, bar) -> tuple[np.ndarray, list]:
    """Fill ``score`` for the pairs whose videos both have frames (read here, in threads); returns
    (which pairs were compared by frames (P,) bool, the paths that could not be read)."""
    involved = np.unique(np.concatenate([first, second])).tolist()
    judge.prepare([videos[v] for v in involved], workers)
    readable = np.zeros(len(videos), bool)
    readable[involved] = [judge.signatures.get(videos[v].path) is not None for v in involved]
    framed = readable[first] & readable[second]
    for i in np.flatnonzero(framed).tolist():
        score[i] = judge.judge(videos[first[i]], videos[second[i]], float(best[i])).score
        bar.update(1)
    return framed, sorted(videos[v].path for v in involved if not readable[v])


def frame_candidates(
    judge: PairJudge, videos: list[Video], k: int = FRAME_NEIGHBOURS
) -> tuple[np.ndarray, np.ndarray]:
    """Video pairs (a < b) that share a frame: one of a's frame signatures (patterned, not flat) has one
    of b's among its ``k`` nearest at similarity >= ``FRAME_MATCH`` (exact inner products, faiss)."""
    faiss = ann_files.faiss_module()
    vectors, owners = [], []
    for video in videos:
        found = judge.signatures.get(video.path)
        if found is not None and len(found):
            patterned = found.vectors[~found.flat]
            vectors.append(patterned)
            owners.append(np.full(len(patterned), video.number, np.int64))
    if not vectors or sum(map(len, vectors)) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    matrix, owner = np.ascontiguousarray(np.concatenate(vectors), np.float32), np.concatenate(owners)
    flat = faiss.IndexFlatIP(matrix.shape[1])
    flat.add(matrix)
    scores, ids = flat.search(matrix, min(k, len(matrix)))
    keep = (ids >= 0) & (scores >= FRAME_MATCH)
    a = np.broadcast_to(owner[:, None], ids.shape)[keep]
    b = owner[ids[keep]]
    pairs = np.unique(np.minimum(a, b)[a != b] * len(videos) + np.maximum(a, b)[a != b])
    return pairs // len(videos), pairs % len(videos)


def _with_frame_candidates(index, judge, videos, first, second, best):
    """The candidate pairs and those sharing a frame (``frame_candidates``): a trimmed copy's whole-video
    embedding can move far from its original's (cosine 0.28 on the generated corpus), its frames do not.
    Pairs found only by their frames get the best cosine of their rows."""
    from .neighbours import exact_cosines

    extra_first, extra_second = frame_candidates(judge, videos)
    known = set(zip(first.tolist(), second.tolist(), strict=True))
    new = [
        (a, b)
        for a, b in zip(extra_first.tolist(), extra_second.tolist(), strict=True)
        if (a, b) not in known
    ]
    if not new:
        return first, second, best
    cosines = []
    for a, b in new:
        rows_a, rows_b = videos[a].rows, videos[b].rows
        pairs = exact_cosines(index, np.repeat(rows_a, len(rows_b)), np.tile(rows_b, len(rows_a)))
        cosines.append(float(pairs.max()))
    added = np.array(new, np.int64).reshape(-1, 2)
    order = np.lexsort((np.r_[second, added[:, 1]], np.r_[first, added[:, 0]]))
    merged = (np.r_[first, added[:, 0]], np.r_[second, added[:, 1]], np.r_[best, np.float32(cosines)])
    return tuple(values[order] for values in merged)


def moment_coverage(owner: np.ndarray, rows, first: np.ndarray, second: np.ndarray, row_count) -> np.ndarray:
    """For candidate video pairs (P,): the smaller share of either video's moment rows that has a
    close row (cosine >= ``MOMENT_MATCH``) in the other, found among the row pairs ``rows`` (first rows,
    second rows, exact cosines: ``neighbours.close_pairs``, each row's nearest rows)."""
    matched = rows[2] >= MOMENT_MATCH
    a, b = rows[0][matched], rows[1][matched]
    videos = len(row_count)
    # (row, the other video) for each direction, once each: a row counts once however many matches
    keys = np.unique(np.concatenate([a * videos + owner[b], b * videos + owner[a]]))
    row_of, other = keys // videos, keys % videos
    pair_keys, counts = np.unique(owner[row_of] * videos + other, return_counts=True)

    def share(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        wanted = x * videos + y
        where = np.clip(np.searchsorted(pair_keys, wanted), 0, max(len(pair_keys) - 1, 0))
        found = (pair_keys[where] == wanted) if len(pair_keys) else np.zeros(len(wanted), bool)
        return np.where(found, counts[where] if len(counts) else 0, 0) / row_count[x]

    return np.minimum(share(first, second), share(second, first)).astype(np.float32)


def _whole_cosines(judge: PairJudge, videos: list[Video], first, second, best) -> np.ndarray:
    """Whole-video cosines of pairs: the best row cosine for videos of one row, else of the mean rows."""
    one = np.array(
        [len(videos[a].rows) == 1 and len(videos[b].rows) == 1 for a, b in zip(first, second, strict=True)]
    )
    out = np.asarray(best, np.float32).copy()
    for i in np.flatnonzero(~one).tolist():
        out[i] = float(judge._mean(videos[first[i]].rows) @ judge._mean(videos[second[i]].rows))
    return out


def video_pairs(first: np.ndarray, second: np.ndarray, cosines: np.ndarray) -> tuple[np.ndarray, ...]:
    """(videos a (P,), videos b (P,), the best cosine of their rows (P,)), a < b, in (a, b) order, from
    row pairs given as their videos ``first``, ``second`` (R,) with ``cosines`` (R,); pairs of rows
    of one video are left out."""
    keep = first != second
    a, b = np.minimum(first[keep], second[keep]), np.maximum(first[keep], second[keep])
    cosines = cosines[keep]
    if not len(a):
        return a, b, cosines
    order = np.lexsort((-cosines, b, a))  # by pair, best cosine first
    a, b, cosines = a[order], b[order], cosines[order]
    starts = np.flatnonzero(np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])])
    return a[starts], b[starts], cosines[starts]


def connected_groups(count: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    """The connected sets (of at least 2 of ``count`` items) of ``edges``, each sorted."""
    parent = list(range(count))

    def root(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for item in sorted({i for edge in edges for i in edge}):
        groups.setdefault(root(item), []).append(item)
    return [members for members in groups.values() if len(members) > 1]


# --- search --dedup -------------------------------------------------------------------------------


def deduplicated_search(index, vector, top_k: int, per_video, exact: bool, selection, dedup) -> list:
    """``top_k`` results for a unit query (C,) with at most one video of each group of duplicates (the
    best ranked), as ``EmbeddingIndex.search_batch(..., dedup=...)`` returns them."""
    from .results import SearchResult

    threshold = DEFAULT_THRESHOLD if dedup is True else float(dedup)
    judge = _judge_of(index, threshold)
    available = len(index) if selection is None else selection.count
    fetch = DEDUP_FETCH * top_k
    while True:
        if per_video is not None:
            moments = index.search_moments(vector, fetch, per_video, exact, selection)
            results = index.moment_results(moments)
        else:
            rows, scores = index.search_rows(vector[None], fetch, exact, selection)[0]
            results = index.results(rows, scores)
        kept = _kept(index, judge, results, top_k)
        videos = len({hit.path for hit in results})
        if len({hit.path for hit in kept}) >= top_k or videos < fetch or fetch >= available:
            break
        fetch *= 2
    return [SearchResult(rank, *_after_rank(hit)) for rank, hit in enumerate(kept, start=1)]


def _after_rank(hit) -> tuple:
    return hit.path, hit.score, hit.row, hit.absolute_path, hit.start_s, hit.end_s, hit.shard


def _judge_of(index, threshold: float) -> PairJudge:
    """The index's judge for ``threshold``, kept so that frames are read once a process."""
    judges = index.__dict__.setdefault("_duplicate_judges", {})
    if threshold not in judges:
        judges[threshold] = PairJudge(index, "auto", threshold)
    return judges[threshold]


def _kept(index, judge: PairJudge, results: list, top_k: int) -> list:
    """Results (best first) whose video is no duplicate of a better one kept; at most ``top_k`` videos."""
    videos, owner = _videos_by_path(index)
    kept, kept_videos, dropped = [], [], set()
    for hit in results:
        if hit.path in dropped:
            continue
        video = videos[owner[hit.row]]
        if video.path not in {v.path for v in kept_videos}:
            if len(kept_videos) == top_k or _duplicate_of_any(index, judge, video, kept_videos):
                dropped.add(hit.path)
                continue
            kept_videos.append(video)
        kept.append(hit)
    return kept


def _duplicate_of_any(index, judge: PairJudge, video: Video, kept: list[Video]) -> bool:
    from .neighbours import exact_cosines

    for other in kept:
        first = np.repeat(video.rows, len(other.rows))
        second = np.tile(other.rows, len(video.rows))
        cosine = float(exact_cosines(index, first, second).max())
        if cosine < CANDIDATE_COSINE:
            continue
        judge.prepare([video, other])
        if judge.judge(video, other, cosine).duplicate:
            return True
    return False


def _videos_by_path(index) -> tuple[list[Video], np.ndarray]:
    cached = index.__dict__.get("_videos")
    if cached is None:
        cached = index.__dict__["_videos"] = index_videos(index)
    return cached
