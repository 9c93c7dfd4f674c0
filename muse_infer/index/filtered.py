"""Filtered search: the best rows among those a filter allows (``filters.RowSelection``), exactly or
through the ANN index, and never by cutting an unfiltered top k afterwards.

Exact (the oracle): only allowed rows are scored, with the same per-row arithmetic as the unfiltered
scan (``search.row_scores``), so a filtered exact search returns the bits an exact search of those rows
alone would. A sparse selection (at most ``GATHER_FRACTION`` of the rows) reads only its own rows
from the memory map; a dense one scans every block and drops the others' scores.

Approximate (an ANN index beside the index):
- a selection of at most ``EXACT_ROWS`` rows is searched exactly (reading a few thousand rows costs
  less than the ANN search itself, and is exact);
- a larger one is searched through faiss with the selection as an ``IDSelectorBitmap``, the search
  effort raised by fraction^-0.5 (IVF: lists probed; HNSW: efSearch; ``effort``), since the k-th best
  allowed row lies deeper in the unfiltered ranking; candidates are re-ranked exactly. ``mode="overfetch"`` instead asks faiss, unfiltered, for candidates / fraction rows and
  keeps the allowed ones (the alternative measured in docs/benchmarks.md, "Filtered search").
Either way, when fewer than the wanted rows come back the search falls back to the exact one.
"""

from __future__ import annotations

import math

import numpy as np

from . import ann as ann_files
from .filters import RowSelection
from .search import rerank, row_scores, select_top

GATHER_FRACTION = 0.25  # exact search of a selection: read only its rows when it holds at most this fraction
GATHER_ROWS = 16384  # rows read (and scored) at a time
EXACT_ROWS = (
    4096  # approximate search: a selection this small is scanned exactly (~2 ms at 512: docs/benchmarks.md)
)
MAX_EF_SEARCH = 16384
HNSW_POWER, IVF_POWER = 0.5, 0.5  # search effort raised by fraction ** -power (measured: docs/benchmarks.md)
MODES = ("selector", "overfetch")


def exact_selected(
    embeddings: np.ndarray,
    queries: np.ndarray,
    top_k: int,
    selection: RowSelection,
    inverse_norms: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For unit queries (Q, C): Q pairs (rows (k,) int64, exact cosines (k,)) among the allowed rows,
    best first, ties by lowest row (``search.select_top``)."""
    found = []
    for query in np.asarray(queries, dtype=np.float32):
        rows, scores = selected_scores(embeddings, query, selection, inverse_norms)
        found.append(select_top(rows, scores, top_k))
    return found


def selected_scores(
    embeddings: np.ndarray,
    query: np.ndarray,
    selection: RowSelection,
    inverse_norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(allowed rows (n,) int64, their exact cosines (n,) float32) for a unit query (C,)."""
    from .search import all_scores

    if selection.fraction > GATHER_FRACTION:
        scores = all_scores(embeddings, query, inverse_norms)
        return selection.rows, np.ascontiguousarray(scores[selection.mask])
    out = np.empty(selection.count, np.float32)
    for start in range(0, selection.count, GATHER_ROWS):
        rows = selection.rows[start : start + GATHER_ROWS]
        scores = row_scores(np.asarray(embeddings[rows], dtype=np.float32), query)
        out[start : start + len(rows)] = scores if inverse_norms is None else scores * inverse_norms[rows]
    return selection.rows, out


def approximate_selected(
    faiss_index,
    meta: dict,
    embeddings: np.ndarray,
    vector: np.ndarray,
    top_k: int,
    selection: RowSelection,
    inverse_norms: np.ndarray | None = None,
    mode: str = "selector",
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``top_k`` allowed rows for a unit query (C,) through the ANN index (see the module
    docstring): (rows (k,) int64, exact cosines (k,)), best first."""
    wanted = min(top_k, selection.count)
    if wanted == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if selection.count <= EXACT_ROWS:
        return exact_selected(embeddings, vector[None], top_k, selection, inverse_norms)[0]
    kind, search = meta["kind"], meta["search"]
    candidates = ann_files.candidate_count(kind, search, top_k)
    if mode == "selector":
        ids = _selector_candidates(faiss_index, kind, search, vector, candidates, selection)
    elif mode == "overfetch":
        ids = _overfetched_candidates(faiss_index, kind, search, vector, candidates, selection)
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rows, scores = rerank(embeddings, ids, vector, top_k, inverse_norms)
    if len(rows) < wanted:  # too few allowed rows reached: the exact search never returns fewer
        return exact_selected(embeddings, vector[None], top_k, selection, inverse_norms)[0]
    return rows, scores


def effort(kind: str, search: dict, fraction: float, candidates: int) -> dict:
    """The search settings raised for a selection holding ``fraction`` of the rows: IVF probes
    fraction^-IVF_POWER times the lists, HNSW explores fraction^-HNSW_POWER times the nodes (HNSW's
    graph still leads through the rows the filter leaves out). Power 0.5, measured against 0.75 and 1
    (docs/benchmarks.md, "Filtered search"): the same recall at 5 %, within the latency goal."""
    fraction = max(fraction, 1e-9)
    if kind == "hnsw":
        ef = max(int(search["ef_search"]), candidates)
        return {"ef_search": int(min(MAX_EF_SEARCH, math.ceil(ef * fraction**-HNSW_POWER)))}
    return {"nprobe": int(math.ceil(int(search["nprobe"]) * fraction**-IVF_POWER))}


def _params(faiss_index, kind: str, settings: dict, selector=None):
    faiss = ann_files.faiss_module()
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=settings["ef_search"], sel=selector)
    nprobe = min(settings["nprobe"], int(faiss.extract_index_ivf(faiss_index).nlist))
    return faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)


def _selector_candidates(faiss_index, kind, search, vector, candidates: int, selection: RowSelection):
    faiss = ann_files.faiss_module()
    bitmap = selection.bitmap  # kept alive while faiss reads it
    selector = faiss.IDSelectorBitmap(len(selection.mask), faiss.swig_ptr(bitmap))
    settings = effort(kind, search, selection.fraction, candidates)
    _, ids = faiss_index.search(
        vector[None], candidates, params=_params(faiss_index, kind, settings, selector)
    )
    return ids[0]


def _overfetched_candidates(faiss_index, kind, search, vector, candidates: int, selection: RowSelection):
    fetch = int(min(len(selection.mask), math.ceil(candidates / selection.fraction)))
    settings = effort(kind, search, selection.fraction, candidates)
    _, ids = faiss_index.search(vector[None], fetch, params=_params(faiss_index, kind, settings))
    ids = ids[0][ids[0] >= 0]
    return ids[selection.mask[ids]]
