"""What a search query can be, and how each becomes a unit vector (C,).

- a ``str``: text, encoded by a ``TextEncoder`` (``text_encoder=``);
- an ``os.PathLike`` (``pathlib.Path("clip.mp4")``): an example file, a video or an image, encoded by
  a ``VideoEncoder`` (``video_encoder=``; ``VideoEncoder.encode_example``): "more like this file";
- a ``RowQuery(n)``: row n of the index, its stored vector: "more like this row", no model at all;
- a vector (C,), e.g. from ``VideoEncoder.encode``; or all queries at once as an array (Q, C).

A str is always text: give a file as a ``Path``. Encoders are checked to be the index's model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import IndexInputError, ModelMismatchError


@dataclass(frozen=True)
class RowQuery:
    """Search by row ``row`` of the index: its stored vector (in a ``ShardedIndex``, rows counted end
    to end). The row itself scores 1.0, so it comes first unless a filter leaves it out."""

    row: int

    def label(self) -> str:
        return f"row {self.row}"


def query_label(query) -> str:
    """How a query is named in listings and pages: its text, "like FILE", "like row N", "vector"."""
    from ..filenames import display_name

    if isinstance(query, str):
        return query
    if isinstance(query, os.PathLike):
        return f"like {display_name(os.fspath(query))}"
    if isinstance(query, RowQuery):
        return f"like {query.label()}"
    return "vector"


def unit_vectors(index, queries, text_encoder=None, video_encoder=None) -> np.ndarray:
    """Queries (see the module docstring) -> unit vectors (Q, C) float32.

    ``index``: anything with ``dim``, ``identity``, ``check_model`` and ``row_vector`` (an
    ``EmbeddingIndex`` or ``ShardedIndex``). Raises ValueError for a malformed vector or a missing
    encoder, ``ModelMismatchError`` for an encoder of another model, ``IndexInputError`` for a row out
    of range, ``VideoDecodeError`` for an example file that cannot be read.
    """
    if isinstance(queries, (str, os.PathLike, RowQuery)):
        queries = [queries]
    if isinstance(queries, np.ndarray) and queries.ndim == 2:
        vectors = np.asarray(queries, dtype=np.float32)
    elif isinstance(queries, Sequence) and queries and not _is_number_list(queries):
        vectors = _each(index, queries, text_encoder, video_encoder)
    else:
        vectors = np.asarray(queries, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != index.dim:
        raise ValueError(f"query vectors must be (Q, {index.dim}), got shape {vectors.shape}")
    if not np.all(np.isfinite(vectors)):
        raise ValueError("query vectors hold NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _is_number_list(queries) -> bool:
    return all(isinstance(q, (int, float, np.number)) for q in queries)


def _each(index, queries, text_encoder, video_encoder) -> np.ndarray:
    """Each query of a list on its own: text and examples encoded one at a time (so a query's vector
    never depends on the others), rows read, vectors taken as given."""
    checked: set[int] = set()
    out = []
    for query in queries:
        if isinstance(query, str):
            encoder = _encoder(index, text_encoder, "text_encoder", "TextEncoder", checked)
            out.append(np.asarray(encoder.encode([query]), dtype=np.float32)[0])
        elif isinstance(query, os.PathLike):
            encoder = _encoder(index, video_encoder, "video_encoder", "VideoEncoder", checked)
            out.append(np.asarray(encoder.encode_example(query), dtype=np.float32))
        elif isinstance(query, RowQuery):
            out.append(index.row_vector(query.row))
        else:
            vector = np.asarray(query, dtype=np.float32)
            if vector.ndim != 1:
                raise ValueError(f"a query vector must be (C,), got shape {vector.shape}")
            out.append(vector)
    return np.stack(out) if out else np.zeros((0, index.dim), np.float32)


def _encoder(index, encoder, keyword: str, kind: str, checked: set[int]):
    if encoder is None:
        if not index.identity:
            raise ModelMismatchError(index._no_model_message())
        what = "text" if kind == "TextEncoder" else "example file"
        raise ValueError(f"{what} queries need {keyword}= (e.g. {kind}.for_index(index))")
    if id(encoder) not in checked:
        index.check_model(encoder.identity)
        checked.add(id(encoder))
    return encoder


def check_row(row, count: int, where: str = "") -> int:
    """``row`` as an int in [0, count), else IndexInputError saying the range."""
    if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
        raise IndexInputError(f"row {row!r}: give a row number (an int)")
    if not 0 <= int(row) < count:
        rows = f"rows 0 to {count - 1}" if count else "no rows"
        raise IndexInputError(f"row {row}: {where}the index has {rows}")
    return int(row)
