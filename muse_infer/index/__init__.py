"""The embedding index: files on disk, exact and approximate search, shards, and writing one.

    from muse_infer.index import EmbeddingIndex, write_index, build_ann, merge_indexes, ShardedIndex
    write_index("emb.npy", embeddings, paths, root="/videos")   # (N, C) rows you already have
    build_ann("emb.npy")                                          # the ANN index beside it (optional)
    hits = EmbeddingIndex.load("emb.npy").search(vector, top_k=10)

Modules, by concern: ``files`` (``IndexFiles``: the one place that names an index's files),
``store`` (the file format, version 2: see its docstring; ``legacy``: version 1; ``opening``: either),
``update`` (growing an index in place: the front the encode jobs use),
``search`` (exact search: the oracle), ``ann`` (the approximate index: kinds, the auto rules, tuning,
its files), ``embedding_index`` (``EmbeddingIndex``, ``SearchResult``), ``build`` (``write_index``,
``build_ann``, ``refresh_ann``, ``upgrade_index``), ``shards`` (``ShardedIndex``, ``merge_indexes``),
``queries`` (what a query can be: text, an example file, a ``RowQuery``, a vector), ``filters`` and
``filtered`` (``SearchFilter``: the rows a search may return, and searching only those),
``duplicates`` (groups of videos that are the same content, and ``dedup`` for search results).
pyarrow and faiss are imported when an index is opened or built, not with this package.
"""

from __future__ import annotations

from ..errors import IndexFileError, IndexInputError, ModelMismatchError
from .ann import (
    DEFAULT_MEMORY,
    KINDS,
    AnnPlan,
    ann_meta_path,
    ann_path,
    estimate_bytes,
    parse_memory,
    plan_ann,
)
from .build import build_ann, refresh_ann, upgrade_index, write_index
from .embedding_index import EmbeddingIndex, SearchResult, ann_read_meanwhile
from .files import IndexFiles
from .filters import SearchFilter
from .opening import open_index
from .queries import RowQuery
from .search import exact_search
from .shards import ShardedIndex, merge_indexes
from .store import (
    INDEX_FORMAT,
    INDEX_FORMAT_VERSION,
    failures_path,
    read_failures,
    read_sidecar,
    row_paths,
    rows_path,
    sidecar_path,
)
from .update import PreviousIndex, Video, discard_index, is_our_index, read_previous, update_index

__all__ = [
    "IndexFiles",
    "PreviousIndex",
    "Video",
    "read_previous",
    "update_index",
    "discard_index",
    "is_our_index",
    "read_failures",
    "read_sidecar",
    "row_paths",
    "EmbeddingIndex",
    "SearchResult",
    "SearchFilter",
    "RowQuery",
    "ShardedIndex",
    "ann_read_meanwhile",
    "write_index",
    "build_ann",
    "refresh_ann",
    "upgrade_index",
    "merge_indexes",
    "exact_search",
    "open_index",
    "plan_ann",
    "estimate_bytes",
    "parse_memory",
    "AnnPlan",
    "KINDS",
    "DEFAULT_MEMORY",
    "INDEX_FORMAT",
    "INDEX_FORMAT_VERSION",
    "sidecar_path",
    "failures_path",
    "rows_path",
    "ann_path",
    "ann_meta_path",
    "IndexFileError",
    "IndexInputError",
    "ModelMismatchError",
]
