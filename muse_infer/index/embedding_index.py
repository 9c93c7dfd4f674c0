"""``EmbeddingIndex``: an opened index, searched approximately when an ANN index is beside it.

    index = EmbeddingIndex.load("emb.npy")                  # memory-mapped; opens in well under a second
    hits = index.search("a dog catches a frisbee", text_encoder=TextEncoder.for_index(index))
    hits = index.search(vector)                               # a (C,) vector: no model needed
    hits = index.search(vector, exact=True)                   # the exact scan, whatever is beside it

Search is cosine similarity, best first, ties broken by row number. With an ANN index (``EMB.ann.faiss``,
``muse-infer index build``) candidates come from it and are re-ranked with the exact rows; without one
(or when it is missing, damaged or stale: a warning says so) every row is scanned exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
from pathlib import Path

import numpy as np

from ..errors import IndexFileError, IndexInputError, ModelMismatchError
from ..loading.identity import describe_identity, identity_difference, same_model
from . import ann as ann_files
from .arrow_columns import numpy_values
from .paths import PathColumn
from .results import SearchResult
from .search import exact_search, rerank
from .store import exact_paths, random_access_view

logger = logging.getLogger(__name__)
_COMPUTE = object()


class EmbeddingIndex:
    """Embeddings (N, C) of videos (or moments), each row's metadata, and the model that made them.

    Usually opened with ``EmbeddingIndex.load``. Built directly, ``EmbeddingIndex(embeddings, metadata,
    rows)`` takes rows (N, C), a sidecar-like dict and an Arrow table of ``store.row_schema``'s columns
    (or ``metadata["paths"]``: format-1 style) and searches exactly.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        metadata: dict,
        rows=None,
        inverse_norms=_COMPUTE,
        location=None,
        rows_data: bytes | None = None,
    ):
        from .legacy import inverse_norms as compute_norms
        from .legacy import v1_rows

        self.embeddings, self.metadata = embeddings, metadata
        if rows is None:
            if "paths" not in metadata:
                raise IndexInputError("EmbeddingIndex(embeddings, metadata): give rows= or metadata['paths']")
            rows = v1_rows(
                metadata["paths"], metadata.get("file_stats", [[None, None]] * len(metadata["paths"]))
            )
        if rows.num_rows != len(embeddings):
            raise IndexInputError(f"{rows.num_rows} rows of metadata for {len(embeddings)} embeddings")
        self._rows, self._rows_data = rows, rows_data  # the search columns, the file to decode the rest
        self.paths = PathColumn(rows.column("path"), exact_paths(_path_bytes(rows)))
        self.inverse_norms = compute_norms(embeddings) if inverse_norms is _COMPUTE else inverse_norms
        self._scattered = random_access_view(embeddings)  # the same rows, for re-ranking
        self.location = Path(location) if location is not None else None
        self.ann_meta: dict | None = None
        self.ann_problem: str | None = None
        self._ann_required = False
        self._faiss = None
        self._spans: tuple[np.ndarray, np.ndarray] | None = None  # start_s, end_s (N,), NaN: none
        self._video_rows: dict[str, int] | None = None
        self._selections: dict = {}  # SearchFilter -> RowSelection, the latest few
        self._extra_columns: dict = {}  # row-record columns read on demand (row_column)

    @classmethod
    def load(
        cls, path: str | os.PathLike, verify: bool | str = "auto", ann: bool | str = "auto"
    ) -> EmbeddingIndex:
        """Open ``EMB.npy`` (or its sidecar ``EMB.json``), memory-mapped, checked (see ``opening.open_index``).

        verify: "auto" (chunk hashes of small indexes, first/last chunk of large ones), True (every
        chunk, and the ANN file whole), False. ann: "auto" uses the ANN index beside the index when it
        fits, else searches exactly with a warning; True requires it (IndexFileError otherwise); False
        ignores it. Raises ``IndexFileError`` naming the file and what to do.
        """
        from .opening import open_index

        files = open_index(path, verify)
        index = cls(
            files.embeddings, files.metadata, files.rows, files.inverse_norms, files.npy, files.rows_data
        )
        if ann is not False:
            index._attach_ann(required=ann is True, full_check=verify is True)
        return index

    # --- what the index is ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def rows(self):
        """The rows table, every column (``store.row_schema`` and any added ones); decoded on first use."""
        if self._rows_data is not None:
            from .store import decode_rows

            self._rows, self._rows_data = decode_rows(self._rows_data), None
        return self._rows

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def identity(self) -> dict | None:
        """The model identity the rows were encoded with (None: written without a model)."""
        return self.metadata.get("model") or None

    @property
    def model_source(self) -> dict:
        """How to load the model again: {"model": name or absolute path, "clip_weights": ...}."""
        if not self.metadata.get("model_source") or not self.identity:
            raise ModelMismatchError(self._no_model_message())
        return self.metadata["model_source"]

    @property
    def settings(self) -> dict:
        return self.metadata.get("settings") or {}

    @property
    def root(self) -> Path | None:
        """The folder ``paths`` are relative to (None: paths are as given to ``write_index``)."""
        root = self.metadata.get("root")
        return Path(root) if root else None

    @property
    def content_id(self) -> str | None:
        if self.metadata.get("format_version") == 1:
            return "v1:" + self.metadata["embeddings_sha256"]
        return self.metadata.get("content_id")

    @property
    def search_method(self) -> str:
        """ "hnsw" or "ivf-pq" when searches use the ANN index, else "exact"."""
        usable = self.ann_meta is not None and self.ann_problem is None
        return self.ann_meta["kind"] if usable and self.ann_meta["kind"] != "flat" else "exact"

    @functools.cached_property
    def thumbnail_sources(self) -> list:
        """What each row's keyframes show (``video.thumbnails.ThumbnailSource``: exact path, size and
        mtime when indexed, a moment's range), in row order: what pages and the service name them by."""
        from ..video.thumbnails import thumbnail_sources
        from .store import row_paths

        columns = [
            self.rows.column(c).to_pylist() if c in self.rows.column_names else None
            for c in ("size", "mtime_ns", "start_s", "end_s")
        ]
        return thumbnail_sources(row_paths(self.rows), *columns)

    def absolute_path(self, row: int) -> str | None:
        """The file of ``row``: root / path (None when the index has no root and the path is relative)."""
        path = self.paths[row]
        if os.path.isabs(path):
            return path
        return os.path.join(self.root, path) if self.root is not None else None

    def check_model(self, identity: dict, given: str | None = None) -> None:
        """Raise ``ModelMismatchError`` unless ``identity`` is the model this index was built with; its
        one sentence says which model the index needs (``given``: the other model as the user named it)."""
        if not self.identity:
            raise ModelMismatchError(self._no_model_message())
        if not same_model(self.identity, identity):
            logger.debug("model identities differ: %s", identity_difference(self.identity, identity))
            raise ModelMismatchError(model_mismatch_message(self, identity, given))

    def _no_model_message(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return (
            f"{where}this index records no model (written by write_index without model=): search it with "
            "vectors (index.search(vector)); to search it with text, write it with model= the encoder "
            "that made the rows"
        )

    # --- the ANN index -------------------------------------------------------------------------

    def _attach_ann(self, required: bool, full_check: bool = False) -> None:
        npy = self.location
        meta, problem = ann_files.read_ann_meta(npy)
        if meta is not None:
            problem = ann_files.check_ann(npy, meta, self.content_id, len(self), self.dim)
        if meta is not None and problem is None and full_check:
            problem = ann_files.verify_ann(npy, meta)
        if meta is None and problem is None and required:
            problem = f"{npy}: no ANN index beside it"
        self.ann_meta, self._ann_required = meta, required
        if problem is not None:
            self._ann_failed(problem)

    def _ann_failed(self, problem: str) -> None:
        self.ann_problem = problem
        advice = f"rebuild it: muse-infer index build {self.location}"
        if self._ann_required:
            raise IndexFileError(f"{problem}; {advice}")
        logger.warning("%s; searching exactly (slower) until you %s", problem, advice)

    def load_ann(self) -> None:
        """Read the approximate index's file now rather than at the first search (nothing for an index
        searched exactly). Its problems are reported as a search would report them."""
        self._faiss_index()

    def _faiss_index(self):
        """The faiss index to search, loaded on first use, or None (exact search)."""
        if self.search_method == "exact":
            return None
        if self._faiss is None:
            try:
                self._faiss = ann_files.load_faiss(self.location, self.ann_meta, len(self), self.dim)
            except IndexFileError as error:
                self._ann_failed(str(error))
                return None
        return self._faiss

    # --- search --------------------------------------------------------------------------------

    def search(
        self,
        query,
        top_k: int = 10,
        text_encoder=None,
        exact: bool = False,
        per_video: int | None = None,
        **options,
    ) -> list[SearchResult]:
        """Top ``top_k`` results for one query: text (needs ``text_encoder``), an example file as a
        ``Path`` (needs ``video_encoder``), a ``RowQuery`` or a vector (C,).

        options: ``search_batch``'s keywords (video_encoder, filters, dedup and the filters by name:
        under, min_duration, max_duration, modified_after, modified_before, min_score).
        """
        return search_one(self.search_batch, query, top_k, text_encoder, exact, per_video, **options)

    def search_batch(
        self,
        queries,
        top_k: int = 10,
        text_encoder=None,
        exact: bool = False,
        per_video: int | None = None,
        *,
        video_encoder=None,
        filters=None,
        dedup: bool | float = False,
        **filter_options,
    ) -> list[list[SearchResult]]:
        """Top ``top_k`` results for each of Q queries: strings, example files (``Path``), ``RowQuery``s
        or vectors, or an array (Q, C) (``muse_infer.index.queries``).

        per_video: moments shown a video. None (default): 1 for an index of moments (rows with time
        ranges: the ``top_k`` best videos, each with its best moment, overlapping windows that score
        alike merged into one range; ``muse_infer.index.moments``), every row as it is for an index of
        whole videos (as before moments existed); K >= 1: up to K moments of each of the ``top_k``
        best videos, best first; 0: the ``top_k`` best rows, not grouped.
        Each query is encoded and searched on its own, so its results are bit-identical to ``search``
        with that query alone. exact=True scans every row even when an ANN index is beside the index.
        filters: a ``SearchFilter``, or its fields as keywords (under, min_duration, max_duration,
        modified_after, modified_before, min_score; ``muse_infer.index.filters``): rows that fail are
        never ranked, and results below ``min_score`` are left out (fewer than ``top_k`` then).
        dedup: one result per group of duplicates (``muse_infer.index.duplicates``; a float: the
        threshold, else the default).
        """
        from .filters import filter_of

        filters = filter_of(filters, **filter_options)
        vectors = self.query_vectors(queries, text_encoder, video_encoder)  # (Q, C)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        selection = self.selection(filters)
        group = self.moments_per_video(per_video)
        if dedup is not False:
            from .duplicates import deduplicated_search

            found = [deduplicated_search(self, v, top_k, group, exact, selection, dedup) for v in vectors]
        elif group is not None:
            found = [
                self.moment_results(self.search_moments(v, top_k, group, exact, selection)) for v in vectors
            ]
        else:
            found = [self.results(r, s) for r, s in self.search_rows(vectors, top_k, exact, selection)]
        return [above(results, filters) for results in found]

    def selection(self, filters):
        """The ``filters.RowSelection`` of a ``SearchFilter``'s row conditions (None: every row),
        computed once per filter and kept."""
        if filters is None or not filters.filters_rows:
            return None
        from .filters import RowSelection

        key = dataclasses.replace(filters, min_score=None)  # rows do not depend on the cut-off
        if key not in self._selections:
            if len(self._selections) >= 8:
                self._selections.pop(next(iter(self._selections)))
            self._selections[key] = RowSelection.build(self, filters)
        return self._selections[key]

    def row_vector(self, row: int) -> np.ndarray:
        """Row ``row``'s stored vector (C,) float32 at unit length (``RowQuery``: no model needed)."""
        from .queries import check_row

        row = check_row(row, len(self))
        vector = np.asarray(self.embeddings[row], dtype=np.float32)
        return vector * self.inverse_norms[row] if self.inverse_norms is not None else vector.copy()

    @property
    def path_column(self):
        """The rows' ``path`` Arrow column (display text where ``paths.exact_names`` holds the name)."""
        return self._rows.column("path")

    def row_column(self, name: str):
        """One column of the row records (Arrow), read alone from the rows file when the whole table is
        not decoded; None when the index has no such column (older indexes)."""
        if name in self._rows.column_names:
            return self._rows.column(name)
        if self._rows_data is None:
            return None
        if name not in self._extra_columns:
            from .store import read_column

            self._extra_columns[name] = read_column(self._rows_data, name)
        return self._extra_columns[name]

    # --- moments -------------------------------------------------------------------------------

    @property
    def has_moments(self) -> bool:
        """Whether rows are time ranges of videos (``encode-videos --window``): then search groups them."""
        if "start_s" not in self._rows.column_names:
            return False
        return self._rows.column("start_s").null_count < self._rows.num_rows

    def moments_per_video(self, per_video: int | None) -> int | None:
        """Moments a video ``search`` shows for ``per_video`` (see ``search_batch``); None: not grouped."""
        if per_video is None:
            return 1 if self.has_moments else None
        if not isinstance(per_video, int) or per_video < 0:
            raise ValueError(f"per_video must be a whole number >= 0, got {per_video!r}")
        return per_video or None

    def search_moments(
        self, vector: np.ndarray, top_k: int, per_video: int, exact: bool = False, selection=None
    ) -> list:
        """The moments (``moments.Moment``) of one unit query (C,): the best rows grouped per video.

        Fetches the best k rows (approximately, re-ranked exactly, when an ANN index is used), doubling
        k until the groups cannot change with more rows (``moments.settled``) or k covers every row.
        selection: only these rows (``filters.RowSelection``; filters hold for every row of a video).
        """
        from collections import Counter

        from .moments import first_fetch, group_moments, settled

        fetch = self._fetcher(vector, exact, selection)
        available = len(self) if selection is None else selection.count
        k = first_fetch(top_k, per_video)
        while True:
            k = min(k, available)
            rows, scores = fetch(k)
            moments = group_moments(rows, scores, self.paths.__getitem__, self.span, top_k, per_video)
            if k >= available or len(rows) < k:
                return moments
            fetched = Counter(self.paths[row] for row in rows.tolist())
            threshold = float(scores[-1])
            if settled(moments, threshold, top_k, per_video, fetched.__getitem__, self.video_row_count):
                return moments
            k *= 2

    def _fetcher(self, vector: np.ndarray, exact: bool, selection=None):
        """fetch(k) -> the best k (rows, scores) for a unit query (C,): from the ANN index (re-ranked
        exactly), or from every (allowed) row's exact score, computed once whatever k comes next."""
        if not exact and self._faiss_index() is not None:
            return lambda k: self.search_rows(vector[None], k, selection=selection)[0]
        from .filtered import selected_scores
        from .search import all_scores, select_top

        if selection is not None:
            rows, scores = selected_scores(self.embeddings, vector, selection, self.inverse_norms)
            return lambda k: select_top(rows, scores, k)
        scores = all_scores(self.embeddings, vector, self.inverse_norms)
        rows = np.arange(len(scores), dtype=np.int64)
        return lambda k: select_top(rows, scores, k)

    def span(self, row: int) -> tuple[float | None, float | None]:
        """(start_s, end_s) of ``row``; (None, None) for a whole video."""
        if self._spans is None:
            self._spans = tuple(self._span_column(name) for name in ("start_s", "end_s"))
        start, end = (float(column[row]) for column in self._spans)
        return (None, None) if math.isnan(start) or math.isnan(end) else (start, end)

    def _span_column(self, name: str) -> np.ndarray:
        """A time-range column as float64 (N,), NaN where null (or when the index has no such column)."""
        if name not in self._rows.column_names:
            return np.full(len(self), np.nan)
        return numpy_values(self._rows.column(name), np.float64, np.nan)

    def video_row_count(self, path: str) -> int:
        """How many rows the video ``path`` has (its windows)."""
        if self._video_rows is None:
            self._video_rows = self.paths.counts()
        return self._video_rows.get(path, 0)

    def moment_results(self, moments: list, shard: int | None = None, offset: int = 0) -> list[SearchResult]:
        """``SearchResult``s of ``moments`` (ranked in their order); ``offset`` is added to row numbers."""
        return [
            SearchResult(
                rank, m.path, m.score, m.row + offset, self.absolute_path(m.row), m.start_s, m.end_s, shard
            )
            for rank, m in enumerate(moments, start=1)
        ]

    def search_rows(
        self, vectors: np.ndarray, top_k: int, exact: bool = False, selection=None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For unit query vectors (Q, C): Q pairs (rows (k,) int64, exact cosines (k,)), best first.

        selection: only these rows (``filters.RowSelection``; ``muse_infer.index.filtered``)."""
        faiss_index = None if exact else self._faiss_index()
        if selection is not None:
            from .filtered import approximate_selected, exact_selected

            if faiss_index is None:
                return exact_selected(self.embeddings, vectors, top_k, selection, self.inverse_norms)
            return [
                approximate_selected(
                    faiss_index, self.ann_meta, self._scattered, v, top_k, selection, self.inverse_norms
                )
                for v in vectors
            ]
        if faiss_index is None:
            return exact_search(self.embeddings, vectors, top_k, self.inverse_norms)
        return [self._search_one_approximately(faiss_index, vector, top_k) for vector in vectors]

    def _search_one_approximately(self, faiss_index, vector: np.ndarray, top_k: int):
        kind, search = self.ann_meta["kind"], self.ann_meta["search"]
        wanted = min(top_k, len(self))
        candidates = ann_files.candidate_count(kind, search, top_k)
        if candidates >= len(self):
            return exact_search(self.embeddings, vector[None], top_k, self.inverse_norms)[0]
        params = ann_files.search_params(kind, search, candidates)
        _, ids = faiss_index.search(vector[None], candidates, params=params)
        rows, scores = rerank(self._scattered, ids[0], vector, top_k, self.inverse_norms)
        if len(rows) < wanted:  # the ANN index found too few rows (tiny lists): never return fewer
            return exact_search(self.embeddings, vector[None], top_k, self.inverse_norms)[0]
        return rows, scores

    def query_vectors(self, queries, text_encoder=None, video_encoder=None) -> np.ndarray:
        """Queries (strings, example files, ``RowQuery``s, vectors (Q, C); ``muse_infer.index.queries``)
        -> unit vectors (Q, C)."""
        from .queries import unit_vectors

        return unit_vectors(self, queries, text_encoder, video_encoder)

    def results(
        self, rows: np.ndarray, scores: np.ndarray, shard: int | None = None, offset: int = 0
    ) -> list[SearchResult]:
        """``SearchResult``s of (rows, scores); ``offset`` is added to row numbers (shards)."""
        columns = set(self._rows.column_names)
        out = []
        for rank, (row, score) in enumerate(zip(rows.tolist(), scores.tolist(), strict=True)):
            start = self._value("start_s", row) if "start_s" in columns else None
            end = self._value("end_s", row) if "end_s" in columns else None
            out.append(
                SearchResult(
                    rank + 1, self.paths[row], score, row + offset, self.absolute_path(row), start, end, shard
                )
            )
        return out

    def _value(self, column: str, row: int):
        value = self._rows.column(column)[row].as_py()
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

    # --- checking and describing ---------------------------------------------------------------

    def verify(self) -> None:
        """The full check: every chunk hash of the rows and the whole ANN file; IndexFileError if one differs."""
        EmbeddingIndex.load(self.location, verify=True, ann="auto" if self.ann_meta is None else True)

    def describe(self) -> dict:
        """What ``muse-infer index info`` prints: rows, model, settings, files and sizes, ANN index."""
        from .filters import supported_filters
        from .store import failures_path, rows_path, sidecar_path

        npy = self.location
        self._faiss_index()  # an ANN file faiss cannot read is reported too
        files = [npy, sidecar_path(npy), rows_path(npy), failures_path(npy)]
        files += [ann_files.ann_path(npy), ann_files.ann_meta_path(npy)]
        sizes = {p.name: p.stat().st_size for p in files if p is not None and p.is_file()}
        return {
            "index": str(npy),
            "format_version": self.metadata.get("format_version"),
            "rows": len(self),
            "dim": self.dim,
            "model": describe_identity(self.identity) if self.identity else None,
            "model_source": self.metadata.get("model_source"),
            "settings": self.metadata.get("settings"),
            "windows": self.metadata.get("windows"),  # moments: window, stride, cuts (None: a row a video)
            "root": self.metadata.get("root"),
            "failed": self.metadata.get("failed", 0),
            "files": sizes,
            "bytes_on_disk": sum(sizes.values()),
            "search": self.search_method,
            "ann": self.ann_meta,
            "ann_problem": self.ann_problem,
            "filters": supported_filters(self),
        }


def _path_bytes(rows):
    """The rows table's ``path_bytes`` column, None when it has none (indexes written before it)."""
    return rows.column("path_bytes") if "path_bytes" in rows.column_names else None


@contextlib.contextmanager
def ann_read_meanwhile(index, exact: bool = False):
    """Read ``index``'s approximate index file (``load_ann``) in a thread while the block runs: a search
    loading its query model meanwhile (torch's import holds the interpreter; faiss reads its file without
    it) starts that much sooner. Nothing for an index searched exactly (or ``exact``). The reading's
    errors are raised when the block ends; an error of the block itself comes first.
    """
    if exact or index.search_method == "exact":
        yield
        return
    from concurrent.futures import ThreadPoolExecutor

    try:
        ann_files.faiss_module()  # imported here: imports in two threads at once can wait on each other
    except IndexFileError:  # no faiss: the search reports it as it always has (a warning, or the error)
        yield
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="muse-ann") as thread:
        reading = thread.submit(index.load_ann)
        yield
    reading.result()


def search_one(
    search_batch, query, top_k: int, text_encoder, exact: bool, per_video: int | None, **options
) -> list:
    """``search``'s body for any index: one query (a string, an example ``Path``, a ``RowQuery`` or a
    vector (C,)) through ``search_batch``."""
    from .queries import RowQuery

    if isinstance(query, (str, os.PathLike, RowQuery)):
        return search_batch([query], top_k, text_encoder, exact, per_video, **options)[0]
    vector = np.asarray(query, dtype=np.float32)
    if vector.ndim != 1:
        raise ValueError(f"a query vector must be (C,), got shape {vector.shape}; use search_batch")
    return search_batch(vector[None], top_k, text_encoder, exact, per_video, **options)[0]


def above(results: list, filters) -> list:
    """``results`` (best first) without those scoring below ``filters.min_score`` (all when None)."""
    if filters is None or filters.min_score is None:
        return results
    return [hit for hit in results if hit.score >= filters.min_score]


def model_mismatch_message(index, identity: dict, given: str | None = None) -> str:
    """One sentence: the model ``index`` was built with, the one given, and the options that search it."""
    source = index.metadata.get("model_source") or {}
    needs = f"--model {source.get('model')}" if source.get("model") else "its own model"
    if source.get("clip_weights"):
        needs += f" --clip-weights {source['clip_weights']}"
    other = f"{given} ({describe_identity(identity)})" if given else describe_identity(identity)
    return (
        f"the index was built with {describe_identity(index.identity)}, not with {other}: search it with "
        f"{needs} (or leave --model out), or encode the videos again with the other model"
    )
