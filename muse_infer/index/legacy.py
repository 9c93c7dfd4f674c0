"""Format version 1: the index muse-infer wrote before format 2 (paths in the sidecar, one hash).

    {"format": "muse-infer-index", "format_version": 1, "count": N, "dim": C, "dtype": "float32",
     "embeddings_file": "EMB.npy", "embeddings_sha256": "<SHA-256 of all rows>", "root": "/abs/videos",
     "paths": ["a/x.mp4", ...], "file_stats": [[size, mtime_ns], ...],
     "model": {identity}, "model_source": {...}, "settings": {...}, "failures_file": ..., "failed": M}

Such an index opens as it is (its rows' norms are computed, so scores stay cosines even if rows
drifted from unit length); rewriting it (``muse-infer index build``, ``encode-videos``) makes it format 2.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from ..errors import IndexFileError
from .arrow_columns import array
from .store import AUTO_VERIFY_BYTES, FIX, OpenedIndex, path_arrays, pyarrow_modules, row_schema

logger = logging.getLogger(__name__)


def embeddings_sha256(embeddings: np.ndarray) -> str:
    """SHA-256 of all rows' bytes (C order, float32 little-endian): format 1's tie from sidecar to .npy."""
    digest = hashlib.sha256()
    for start in range(0, len(embeddings), 65536):
        block = np.ascontiguousarray(embeddings[start : start + 65536], dtype="<f4")
        digest.update(memoryview(block).cast("B"))
    return digest.hexdigest()


def open_v1(npy: Path, sidecar: Path, metadata: dict, embeddings: np.ndarray, verify) -> OpenedIndex:
    """A format-1 index: rows from the sidecar's lists, inverse norms computed from the rows."""
    count, paths = int(metadata["count"]), metadata["paths"]
    stats = metadata.get("file_stats", [[None, None]] * len(paths))
    if len(paths) != count or len(stats) != count:
        raise IndexFileError(
            f"{npy}: has {count} rows but the sidecar lists {len(paths)} paths and {len(stats)} file stats; "
            f"the pair is inconsistent: {FIX}"
        )
    if verify is True or (verify == "auto" and embeddings.nbytes <= AUTO_VERIFY_BYTES):
        if not all(np.all(np.isfinite(embeddings[s : s + 65536])) for s in range(0, count, 65536)):
            raise IndexFileError(f"{npy}: contains NaN or infinite values; {FIX}")
        if embeddings_sha256(embeddings) != metadata["embeddings_sha256"]:
            raise IndexFileError(
                f"{npy}: does not match its sidecar {sidecar.name} (different SHA-256: from another run?); {FIX}"
            )
    elif verify == "auto":
        logger.info("%s: a large format-1 index: its rows are not hashed on open (verify=True does)", npy)
    return OpenedIndex(npy, sidecar, metadata, embeddings, v1_rows(paths, stats), inverse_norms(embeddings))


def v1_rows(paths: list[str], stats: list):
    """The rows table of a format-1 index's lists."""
    pa, _ = pyarrow_modules()
    sizes = [s[0] if s and s[0] is not None and s[0] >= 0 else None for s in stats]
    mtimes = [s[1] if s and s[1] is not None and s[1] >= 0 else None for s in stats]
    count = len(paths)
    texts, raw = path_arrays(paths)  # format 1 kept names of any bytes in JSON (\udcXX escapes)
    columns = [np.arange(count, dtype=np.int64), texts, sizes, mtimes, [None] * count, [None] * count, raw]
    columns += [[None] * count] * 5  # duration_s, width, height, fps, codec: format 1 knew none
    arrays = [
        c if isinstance(c, pa.Array) else array(c, f.type) for c, f in zip(columns, row_schema(), strict=True)
    ]
    return pa.table(arrays, schema=row_schema())


def inverse_norms(embeddings: np.ndarray) -> np.ndarray:
    """(N,) float32 1 / |row| (rows read block by block)."""
    out = np.empty(len(embeddings), np.float32)
    for start in range(0, len(embeddings), 65536):
        block = np.asarray(embeddings[start : start + 65536], dtype=np.float32)
        out[start : start + len(block)] = 1.0 / np.maximum(np.linalg.norm(block, axis=1), 1e-12)
    return out
