"""The embedding index: ``EMB.npy`` (N, C) float32 rows + its sidecar ``EMB.json``.

Files beside ``EMB.npy`` (written by ``muse-infer encode-videos`` / ``muse_infer.jobs.encode``):
- ``EMB.npy``: (N, C) float32, row i the L2-normalised embedding of ``paths[i]``;
- ``EMB.json`` (the sidecar, written last, so its presence means the set is complete)::

    {"format": "muse-infer-index", "format_version": 1, "count": N, "dim": C, "dtype": "float32",
     "embeddings_file": "EMB.npy", "embeddings_sha256": "...", "root": "/abs/videos",
     "paths": ["a/x.mp4", ...],            # relative POSIX paths, sorted, one per row
     "file_stats": [[size, mtime_ns], ...],  # of each file when encoded: changed files are redone
     "model": {identity}, "model_source": {"model": ..., "clip_weights": ...},
     "backend": "torch", "precision": "bf16",  # how the rows were computed (not checked on search)
     "settings": {"max_frames": 12, "framerate": 1.0, "slice_mode": "uniform", "image_size": 224},
     "failures_file": "EMB.failures.jsonl", "failed": M}

- ``EMB.failures.jsonl``: one JSON object a line, ``{"path", "reason", "size", "mtime_ns"}``, for each
  file that could not be encoded (empty when none).

Search is cosine similarity (rows and query normalised), best first, ties broken by row order.

``precision``, like ``backend``, says how the run that wrote the index computed its rows; neither is
part of the model identity. Rows computed in bf16 lie within cosine 0.999 of fp32 ones, so queries in
any precision search any index, and a resumed run may add rows in another precision.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import IndexFileError, ModelMismatchError
from ..loading.identity import describe_identity, identity_difference, same_model

INDEX_FORMAT, INDEX_FORMAT_VERSION = "muse-infer-index", 1
REQUIRED_KEYS = ("format", "count", "dim", "paths", "model", "model_source", "settings", "embeddings_sha256")


@dataclass(frozen=True)
class SearchResult:
    """One hit: ``rank`` 1 = best, ``path`` relative to the index's root, ``score`` the cosine."""

    rank: int
    path: str
    score: float

    def to_dict(self) -> dict:
        return {"path": self.path, "score": self.score, "rank": self.rank}


def sidecar_path(npy_path: str | os.PathLike) -> Path:
    """EMB.npy -> EMB.json"""
    return Path(npy_path).with_suffix(".json")


def failures_path(npy_path: str | os.PathLike) -> Path:
    """EMB.npy -> EMB.failures.jsonl"""
    return Path(npy_path).with_suffix(".failures.jsonl")


class EmbeddingIndex:
    """Embeddings (N, C) of videos, the relative path of each row, and the model that made them.

    Typical use::

        index = EmbeddingIndex.load("emb.npy")
        hits = index.search("a dog catches a frisbee", text_encoder=TextEncoder.for_index(index))
    """

    def __init__(self, embeddings: np.ndarray, metadata: dict):
        self.embeddings, self.metadata = embeddings, metadata  # (N, C) float32, the sidecar dict
        self.paths: list[str] = list(metadata["paths"])
        norms = np.linalg.norm(embeddings, axis=1) if len(embeddings) else np.zeros(0)
        self._inverse_norms = 1.0 / np.maximum(norms, 1e-12)  # (N,) cosine even if rows drifted

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> EmbeddingIndex:
        """Load ``EMB.npy`` (or its sidecar ``EMB.json``) and check that the pair is complete and consistent.

        verify: also check the embeddings' SHA-256 recorded in the sidecar (reads the whole file).
        Raises ``IndexFileError`` naming the file and what to do.
        """
        npy, sidecar = _resolve_pair(Path(path))
        metadata = read_sidecar(sidecar)
        embeddings = _read_embeddings(npy, sidecar)
        _check_consistent(embeddings, metadata, npy, sidecar, verify)
        return cls(embeddings, metadata)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.metadata["dim"])

    @property
    def identity(self) -> dict:
        return self.metadata["model"]

    @property
    def model_source(self) -> dict:
        """How to load the model again: {"model": name or absolute path, "clip_weights": ...}."""
        return self.metadata["model_source"]

    @property
    def settings(self) -> dict:
        return self.metadata["settings"]

    def check_model(self, identity: dict) -> None:
        """Raise ``ModelMismatchError`` unless ``identity`` is the model this index was built with."""
        if not same_model(self.identity, identity):
            raise ModelMismatchError(
                f"the index was built with {describe_identity(self.identity)}, not with "
                f"{describe_identity(identity)} (differences: {identity_difference(self.identity, identity)}); "
                "search with the index's own model (omit --model) or re-encode the videos with this one"
            )

    def search(self, query, top_k: int = 10, text_encoder=None) -> list[SearchResult]:
        """Top ``top_k`` rows for one query: a string (needs ``text_encoder``) or a vector (C,)."""
        if isinstance(query, str):
            return self.search_batch([query], top_k, text_encoder)[0]
        vector = np.asarray(query, dtype=np.float32)
        if vector.ndim != 1:
            raise ValueError(f"a query vector must be (C,), got shape {vector.shape}; use search_batch")
        return self.search_batch(vector[None], top_k)[0]

    def search_batch(self, queries, top_k: int = 10, text_encoder=None) -> list[list[SearchResult]]:
        """Top ``top_k`` rows for each of Q queries: strings or vectors (Q, C).

        Each query is encoded and scored on its own (a matrix-vector product), so its results are
        bit-identical to ``search`` with that query alone: batched matrix products round differently,
        enough to swap near-ties.
        """
        vectors = self._query_vectors(queries, text_encoder)  # (Q, C)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        return [self._top((self.embeddings @ vector) * self._inverse_norms, top_k) for vector in vectors]

    def _query_vectors(self, queries, text_encoder) -> np.ndarray:
        if isinstance(queries, str):
            queries = [queries]
        if isinstance(queries, Sequence) and queries and all(isinstance(q, str) for q in queries):
            if text_encoder is None:
                raise ValueError("string queries need text_encoder= (e.g. TextEncoder.for_index(index))")
            self.check_model(text_encoder.identity)
            vectors = np.concatenate([text_encoder.encode([query]) for query in queries])
        else:
            vectors = np.asarray(queries, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"query vectors must be (Q, {self.dim}), got shape {vectors.shape}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def _top(self, scores: np.ndarray, top_k: int) -> list[SearchResult]:
        order = np.argsort(-scores, kind="stable")[:top_k]  # stable: equal scores keep row order
        return [SearchResult(rank + 1, self.paths[row], float(scores[row])) for rank, row in enumerate(order)]


def _resolve_pair(path: Path) -> tuple[Path, Path]:
    """(EMB.npy, EMB.json) from either file's name."""
    if path.suffix == ".json":
        sidecar = path
        try:
            npy = path.parent / json.loads(path.read_text()).get(
                "embeddings_file", path.with_suffix(".npy").name
            )
        except (OSError, ValueError, AttributeError):
            npy = path.with_suffix(".npy")
        return npy, sidecar
    if path.suffix != ".npy":
        raise IndexFileError(f"{path}: an index is an EMB.npy file (with its EMB.json sidecar)")
    return path, sidecar_path(path)


def read_sidecar(sidecar: Path) -> dict:
    """The sidecar dict, checked for the fields every index has."""
    if not sidecar.is_file():
        raise IndexFileError(
            f"{sidecar}: sidecar not found; it is written beside the .npy by `muse-infer encode-videos` "
            "when a run finishes: run that command again to complete the index"
        )
    try:
        metadata = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFileError(
            f"{sidecar}: unreadable or truncated sidecar ({error}); re-run encode-videos"
        ) from None
    if not isinstance(metadata, dict) or metadata.get("format") != INDEX_FORMAT:
        raise IndexFileError(f'{sidecar}: not a muse-infer index sidecar (no "format": "{INDEX_FORMAT}")')
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise IndexFileError(f"{sidecar}: sidecar lacks {missing}; re-run encode-videos to rebuild it")
    if metadata.get("format_version") != INDEX_FORMAT_VERSION:
        raise IndexFileError(
            f"{sidecar}: index format version {metadata.get('format_version')!r}, this muse-infer reads "
            f"version {INDEX_FORMAT_VERSION}; re-encode the videos"
        )
    if not metadata["model"] or not isinstance(metadata["model"], dict):
        raise IndexFileError(f"{sidecar}: no model identity recorded; re-run encode-videos")
    return metadata


def _read_embeddings(npy: Path, sidecar: Path) -> np.ndarray:
    if not npy.is_file():
        raise IndexFileError(
            f"{npy}: embeddings file not found (its sidecar {sidecar.name} exists); re-run encode-videos"
        )
    try:
        return np.load(npy, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise IndexFileError(
            f"{npy}: unreadable or truncated .npy file ({error}); re-run encode-videos"
        ) from None


def _check_consistent(embeddings: np.ndarray, metadata: dict, npy: Path, sidecar: Path, verify: bool) -> None:
    count, dim, paths = metadata["count"], metadata["dim"], metadata["paths"]
    problem = None
    if embeddings.dtype != np.float32 or embeddings.ndim != 2:
        problem = f"holds {embeddings.dtype} of shape {embeddings.shape}, expected float32 (N, C)"
    elif embeddings.shape != (count, dim) or len(paths) != count:
        problem = f"has shape {embeddings.shape} but the sidecar says {count} rows of {dim} and lists {len(paths)} paths"
    elif len(metadata.get("file_stats", paths)) != count:
        problem = f"has {count} rows but the sidecar lists {len(metadata['file_stats'])} file stats"
    elif not np.all(np.isfinite(embeddings)):
        problem = "contains NaN or infinite values"
    elif verify and embeddings_sha256(embeddings) != metadata["embeddings_sha256"]:
        problem = f"does not match its sidecar {sidecar.name} (different SHA-256: from another run?)"
    if problem:
        raise IndexFileError(
            f"{npy}: {problem}; the pair is inconsistent: re-run encode-videos to rebuild it"
        )


def embeddings_sha256(embeddings: np.ndarray) -> str:
    """SHA-256 of the rows' bytes (C order, float32 little-endian), tying an .npy to its sidecar."""
    data = np.ascontiguousarray(embeddings, dtype="<f4")
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()


def write_index(
    out: str | os.PathLike, embeddings: np.ndarray, metadata: dict, failures: list[dict]
) -> tuple[Path, Path, Path]:
    """Write EMB.npy, EMB.failures.jsonl, then EMB.json, each atomically (temporary file, fsync, rename).

    ``metadata`` holds the sidecar fields other than the ones derived here (format, count, dim, ...).
    Returns the three paths.
    """
    out = Path(out)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    sidecar = {
        "format": INDEX_FORMAT,
        "format_version": INDEX_FORMAT_VERSION,
        "count": int(embeddings.shape[0]),
        "dim": int(embeddings.shape[1]),
        "dtype": "float32",
        "embeddings_file": out.name,
        "embeddings_sha256": embeddings_sha256(embeddings),
        "failures_file": failures_path(out).name,
        "failed": len(failures),
        **metadata,
    }
    atomic_write(out, lambda handle: np.save(handle, embeddings, allow_pickle=False))
    lines = "".join(json.dumps(f, sort_keys=True) + "\n" for f in failures)
    atomic_write(failures_path(out), lambda handle: handle.write(lines.encode()))
    text = _sidecar_text(sidecar)
    atomic_write(sidecar_path(out), lambda handle: handle.write(text.encode()))
    return out, sidecar_path(out), failures_path(out)


def _sidecar_text(sidecar: dict) -> str:
    # One key a line, each value compact: readable, and a long path list stays one line.
    lines = [f" {json.dumps(key)}: {json.dumps(sidecar[key], sort_keys=True)}" for key in sorted(sidecar)]
    return "{\n" + ",\n".join(lines) + "\n}\n"
