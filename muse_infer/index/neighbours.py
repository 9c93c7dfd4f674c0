"""Every row's nearest neighbours, for duplicate detection: the pairs of rows whose cosine is high.

``close_pairs(index, k, min_cosine)`` asks the ANN index beside the index (``muse-infer index build``)
for each row's ``k`` nearest rows, a block of rows at a time (faiss searches a block on every core),
keeps those whose approximate score is within ``APPROXIMATE_MARGIN`` of ``min_cosine``, and scores them
again exactly from the rows (the float32 cosine), so every pair returned is exact. Without an ANN index:
a small index (``ann.FLAT_MAX_BYTES``) is compared exactly, block against all rows (matrix products);
a larger one gets a temporary IVF index in memory (trained on a sample, as ``index build`` would make
it, not tuned), and a hint to build one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from . import ann as ann_files
from .search import select_top

logger = logging.getLogger(__name__)
BLOCK_ROWS = 8192
APPROXIMATE_MARGIN = 0.25  # approximate scores (4-bit PQ, SQ8) stray from the exact cosine; exact ones decide
TEMPORARY_NPROBE = 16


def close_pairs(
    index, k: int, min_cosine: float, progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first rows (P,), second rows (P,), exact cosines (P,)): each pair of rows (first < second) of
    which one is among the other's ``k`` nearest, with cosine >= ``min_cosine``. progress: called with
    the rows done after each block."""
    count = len(index)
    if count < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    k = min(k + 1, count)  # a row finds itself first
    search = _searcher(index, k)
    firsts, seconds = [], []
    for start in range(0, count, BLOCK_ROWS):
        block = _unit_rows(index, start, min(count, start + BLOCK_ROWS))
        approximate, ids = search(block)
        rows = np.arange(start, start + len(block), dtype=np.int64)[:, None]
        keep = (ids >= 0) & (ids != rows) & (approximate >= min_cosine - APPROXIMATE_MARGIN)
        first, second = np.broadcast_to(rows, ids.shape)[keep], ids[keep].astype(np.int64)
        firsts.append(np.minimum(first, second))
        seconds.append(np.maximum(first, second))
        if progress is not None:
            progress(len(block))
    keys = np.unique(np.concatenate(firsts) * count + np.concatenate(seconds))  # each pair once, in order
    first, second = keys // count, keys % count
    cosines = exact_cosines(index, first, second)
    keep = cosines >= min_cosine
    return first[keep], second[keep], cosines[keep]


def exact_cosines(index, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The exact cosine of each pair of rows (P,), from the stored rows (read in row order)."""
    out = np.empty(len(first), np.float32)
    for start in range(0, len(first), BLOCK_ROWS):
        a, b = first[start : start + BLOCK_ROWS], second[start : start + BLOCK_ROWS]
        out[start : start + len(a)] = np.einsum("ij,ij->i", _rows_of(index, a), _rows_of(index, b))
    return out


def _rows_of(index, rows: np.ndarray) -> np.ndarray:
    """Rows (unit length) of ``index`` in any order, read sorted."""
    order = np.argsort(rows, kind="stable")
    read = np.asarray(index.embeddings[rows[order]], dtype=np.float32)
    if index.inverse_norms is not None:
        read = read * index.inverse_norms[rows[order], None]
    out = np.empty_like(read)
    out[order] = read
    return out


def _unit_rows(index, start: int, stop: int) -> np.ndarray:
    block = np.ascontiguousarray(index.embeddings[start:stop], dtype=np.float32)
    if index.inverse_norms is not None:
        block = block * index.inverse_norms[start:stop, None]
    return block


def _searcher(index, k: int):
    """search(block (b, C)) -> (approximate scores (b, k), row ids (b, k))."""
    faiss_index = index._faiss_index()
    if faiss_index is not None:
        kind, settings = index.ann_meta["kind"], index.ann_meta["search"]
        params = ann_files.search_params(kind, settings, k)
        return lambda block: faiss_index.search(block, k, params=params)
    if len(index) * index.dim * 4 <= ann_files.FLAT_MAX_BYTES:
        return lambda block: _exact_neighbours(index, block, k)
    logger.warning(
        "%s has no approximate index: building a temporary one for this run (muse-infer index build %s "
        "keeps one, which later runs and searches use)",
        index.location,
        index.location,
    )
    faiss_index, params = _temporary_ivf(index)
    return lambda block: faiss_index.search(block, k, params=params)


def _exact_neighbours(index, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``k`` of every row of ``block`` among all rows (matrix products a slice at a time)."""
    rows = np.arange(len(index), dtype=np.int64)
    scores = np.empty((len(block), len(index)), np.float32)
    step = max(1, (64 << 20) // (4 * index.dim))
    for start in range(0, len(index), step):
        scores[:, start : start + step] = block @ _unit_rows(index, start, min(len(index), start + step)).T
    found = [select_top(rows, line, k) for line in scores]
    return np.stack([s for _, s in found]), np.stack([r for r, _ in found])


def _temporary_ivf(index):
    faiss = ann_files.faiss_module()
    plan = ann_files.plan_ann(len(index), index.dim, kind="ivf-pq")
    faiss_index = ann_files.new_faiss_index(plan, index.dim)
    ann_files.train_and_add(faiss_index, index.embeddings, plan)
    return faiss_index, faiss.SearchParametersIVF(nprobe=TEMPORARY_NPROBE)
