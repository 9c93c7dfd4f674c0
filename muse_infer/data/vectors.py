"""Synthetic embeddings for index tests and benchmarks: clustered rows, and queries that sit apart.

Real video embeddings are not uniform noise: they crowd around a shared mean direction and form
clusters (topics, scenes, near-duplicates), which is what makes approximate search hard or easy. Text
queries sit apart from the videos they match (CLIP's "modality gap": a text embedding's cosine with its
best video is typically 0.3-0.5, and all texts share an offset from all videos). These generators give
both, reproducibly from a seed:

    rows = clustered_rows(100_000, 512, seed=0)          # (N, C) float32, unit rows
    queries = shifted_queries(rows, 200, seed=1)           # (Q, C) float32, unit rows
    lazy = ClusteredRows(10_000_000, 512)                  # the same rows, made block by block on slicing

Rows are generated in blocks of ``BLOCK`` rows, each from its own seed, so any slice of a huge set can
be made (and written with ``write_index``) without holding the whole set.
"""

from __future__ import annotations

import numpy as np

BLOCK = 65536


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


class ClusteredRows:
    """(count, dim) float32 unit rows, a mixture on the sphere, made lazily: ``rows[a:b]`` is an array.

    Each row is ``unit(shared * m + c_k + spread * g)``: ``m`` a mean direction all rows share, ``c_k``
    the unit centre of its cluster (``clusters`` of them, sizes drawn unevenly, default ~count/500),
    ``g`` Gaussian noise of norm ~1. ``spread`` 1 puts a row at cosine ~0.6 from its centre.
    """

    def __init__(
        self,
        count: int,
        dim: int,
        clusters: int | None = None,
        spread: float = 1.0,
        shared: float = 0.6,
        seed: int = 0,
    ):
        rng = np.random.default_rng(seed)
        self.shape, self.dtype = (int(count), int(dim)), np.dtype(np.float32)
        self.clusters, self.spread, self.seed = clusters or max(1, count // 500), spread, seed
        self.mean = (shared * _unit(rng.standard_normal(dim))).astype(np.float32)
        self.centres = _unit(rng.standard_normal((self.clusters, dim))).astype(np.float32)
        self.weights = rng.dirichlet(np.full(self.clusters, 0.7))  # uneven cluster sizes, as topics are

    def __len__(self) -> int:
        return self.shape[0]

    def block(self, number: int) -> np.ndarray:
        """Rows [number * BLOCK, (number + 1) * BLOCK) (fewer at the end)."""
        size = min(BLOCK, self.shape[0] - number * BLOCK)
        rng = np.random.default_rng([self.seed, number])
        owner = rng.choice(self.clusters, size=size, p=self.weights)
        noise = rng.standard_normal((size, self.shape[1]), dtype=np.float32) / np.float32(
            np.sqrt(self.shape[1])
        )
        return _unit(self.mean + self.centres[owner] + np.float32(self.spread) * noise).astype(np.float32)

    def __getitem__(self, item) -> np.ndarray:
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError("ClusteredRows supports contiguous slices rows[a:b]")
        start, stop, _ = item.indices(self.shape[0])
        if stop <= start:
            return np.zeros((0, self.shape[1]), np.float32)
        parts = [self.block(b) for b in range(start // BLOCK, (stop - 1) // BLOCK + 1)]
        offset = (start // BLOCK) * BLOCK
        return np.concatenate(parts)[start - offset : stop - offset]


def clustered_rows(
    count: int, dim: int, clusters: int | None = None, spread: float = 1.0, shared: float = 0.6, seed: int = 0
) -> np.ndarray:
    """(count, dim) float32 unit rows: ``ClusteredRows`` made whole."""
    return ClusteredRows(count, dim, clusters, spread, shared, seed)[:]


def shifted_queries(rows, count: int, offset: float = 1.2, noise: float = 0.8, seed: int = 1) -> np.ndarray:
    """(count, dim) float32 unit queries from a distribution shifted away from ``rows`` (N, C).

    Query i is ``unit(r_i + offset * o + noise * g_i)``: ``r_i`` a random row (the video it is
    "about"), ``o`` one unit offset direction shared by every query (the modality gap), ``g_i``
    Gaussian noise of norm ~1. With the defaults a query's cosine with its own row is ~0.55.
    ``rows`` may be a memory map: only the chosen rows are read.
    """
    rng = np.random.default_rng(seed)
    dim = rows.shape[1]
    direction = _unit(rng.standard_normal(dim))
    chosen = np.sort(rng.choice(len(rows), size=count, replace=count > len(rows)))
    targets = np.asarray(rows[chosen], dtype=np.float64)
    jitter = rng.standard_normal((count, dim)) / np.sqrt(dim)
    return _unit(targets + offset * direction + noise * jitter).astype(np.float32)
