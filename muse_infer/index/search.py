"""Exact search: the oracle of the approximate index, its fallback, and the default for small indexes.

Rows are scanned block by block (a memory map is never read whole at once) and each block keeps only
its best candidates (``np.argpartition``, not a full sort). Scores are cosines: rows are unit length
(format 2) or scaled by their inverse norms (format 1); queries are unit length. Ties are broken by row
number, lowest first, everywhere: in a block, across blocks and across shards.

A row's score is computed by ``row_scores`` (``np.einsum``), whose result for a row does not depend on
where the row sits in the block: a BLAS matrix-vector product groups rows, and a row at the end of a
group rounds differently (equal rows then score unequally). So a row scores the same bits in any block,
in a re-ranked candidate set and in any shard, and equal rows tie. The scan is memory-bound: einsum
runs it at the speed of the BLAS product on one thread.
"""

from __future__ import annotations

import numpy as np

BLOCK_BYTES = 4 << 20  # a block of rows stays in cache while every query of a batch scores it
MATMUL_BLOCK_BYTES = 64 << 20


def row_scores(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """rows (n, C) float32 . query (C,) -> (n,) float32, each row's dot product independent of its position."""
    return np.einsum("ij,j->i", rows, query)


def select_top(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (rows, scores) of candidates: highest score first, equal scores by lowest row.

    rows (n,) int64 distinct, scores (n,) float32 -> ((k',), (k',)) with k' = min(k, n).
    """
    count = len(scores)
    k = min(k, count)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if k < count:
        part = np.argpartition(-scores, k - 1)[:k]
        kth = scores[part].min()
        above = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)
        tied = tied[np.argsort(rows[tied], kind="stable")][: k - len(above)]  # lowest rows win a tie
        chosen = np.concatenate([above, tied])
    else:
        chosen = np.arange(count)
    order = np.lexsort((rows[chosen], -scores[chosen]))
    picked = chosen[order]
    return rows[picked].astype(np.int64, copy=False), scores[picked]


def exact_search(
    embeddings: np.ndarray,
    queries: np.ndarray,
    top_k: int,
    inverse_norms: np.ndarray | None = None,
    matmul: bool = False,
    block_rows: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Top ``top_k`` rows of ``embeddings`` (N, C) for each unit query of ``queries`` (Q, C).

    Returns Q pairs (rows (k,) int64, scores (k,) float32), k = min(top_k, N), best first.
    matmul=False scores each query alone (``row_scores``), so a query's results are bit-identical
    whatever else is in the batch and however rows are blocked; matmul=True scores a block against all
    queries at once (BLAS: faster for many queries, last bits may differ: for ground truth and tuning).
    """
    queries = np.asarray(queries, dtype=np.float32)
    count, dim = embeddings.shape
    block_rows = block_rows or max(1, (MATMUL_BLOCK_BYTES if matmul else BLOCK_BYTES) // (4 * max(dim, 1)))
    found_rows = [[] for _ in queries]
    found_scores = [[] for _ in queries]
    for start in range(0, count, block_rows):
        block = np.asarray(embeddings[start : start + block_rows])
        scale = None if inverse_norms is None else inverse_norms[start : start + len(block)]
        scored = (block @ queries.T).T if matmul else (row_scores(block, query) for query in queries)
        local = np.arange(start, start + len(block), dtype=np.int64)
        for number, scores in enumerate(scored):
            scores = scores if scale is None else scores * scale
            rows, best = select_top(local, np.ascontiguousarray(scores, dtype=np.float32), top_k)
            found_rows[number].append(rows)
            found_scores[number].append(best)
    return [
        select_top(np.concatenate(r), np.concatenate(s), top_k) if r else select_top(*_empty(), top_k)
        for r, s in zip(found_rows, found_scores, strict=True)
    ]


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.float32)


def rerank(
    embeddings: np.ndarray,
    candidates: np.ndarray,
    query: np.ndarray,
    top_k: int,
    inverse_norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_k`` best of ``candidates`` (row numbers; -1 = none) by exact cosine with ``query`` (C,).

    Only the candidate rows are read (in row order, which keeps a memory map's reads local).
    """
    rows = np.unique(candidates[candidates >= 0]).astype(np.int64)
    scores = row_scores(np.asarray(embeddings[rows]), query)
    if inverse_norms is not None:
        scores = scores * inverse_norms[rows]
    return select_top(rows, np.ascontiguousarray(scores, dtype=np.float32), top_k)


def all_scores(
    embeddings: np.ndarray, query: np.ndarray, inverse_norms: np.ndarray | None = None
) -> np.ndarray:
    """Every row's exact cosine with a unit ``query`` (C,): (N,) float32, the bits ``exact_search`` scores.

    For grouped (moments) search, which may need more of the ranking than the first top_k rows: scanned
    once, then ranked as far as needed with ``select_top``.
    """
    count, dim = embeddings.shape
    block_rows = max(1, BLOCK_BYTES // (4 * max(dim, 1)))
    out = np.empty(count, np.float32)
    for start in range(0, count, block_rows):
        block = np.asarray(embeddings[start : start + block_rows])
        scores = row_scores(block, query)
        if inverse_norms is not None:
            scores = scores * inverse_norms[start : start + len(block)]
        out[start : start + len(block)] = scores
    return out
