"""Several indexes (shards, e.g. written by several machines) searched as one, or merged into one.

    shards = ShardedIndex.load(["part0.npy", "part1.npy"])
    hits = shards.search(vector, top_k=10)          # = one index holding part0's rows then part1's
    merge_indexes("all.npy", ["part0.npy", "part1.npy"], kind="auto")   # = muse-infer index merge

Each shard is searched on its own (approximately where it has an ANN index) and the per-shard best
are merged by score, ties by shard then row: exactly what one index of the same rows, shard after
shard, returns with exact search. Shards must share the embedding size and the model (or all have none).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np

from ..errors import IndexInputError
from ..loading.identity import describe_identity, same_model
from .arrow_columns import numbers, numpy_values, texts
from .embedding_index import EmbeddingIndex, SearchResult, above, search_one
from .search import select_top


def check_compatible(shards: Sequence[EmbeddingIndex], names: Sequence[str]) -> None:
    """IndexInputError unless the shards share dimension, model and settings."""
    if not shards:
        raise IndexInputError("no index given: list at least one")
    first = shards[0]
    for shard, name in zip(shards[1:], names[1:], strict=True):
        if shard.dim != first.dim:
            raise IndexInputError(f"{name}: rows of {shard.dim}, but {names[0]} has rows of {first.dim}")
        models_differ = bool(first.identity) != bool(shard.identity) or (
            first.identity and not same_model(first.identity, shard.identity)
        )
        if models_differ:
            raise IndexInputError(
                f"{name}: made with {describe_identity(shard.identity)}, {names[0]} with "
                f"{describe_identity(first.identity)}: only indexes of one model search as one"
            )
        if (shard.metadata.get("settings") or {}) != (first.metadata.get("settings") or {}):
            raise IndexInputError(
                f"{name}: encoded with other settings than {names[0]} ({shard.settings} vs {first.settings})"
            )


class ShardedIndex:
    """Indexes searched as one; the API of ``EmbeddingIndex`` for searching (rows numbered end to end)."""

    def __init__(self, shards: Sequence[EmbeddingIndex]):
        self.shards = list(shards)
        check_compatible(self.shards, [str(s.location or f"shard {i}") for i, s in enumerate(self.shards)])
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])  # (S + 1,)

    @classmethod
    def load(
        cls, paths: Sequence[str | os.PathLike], verify: bool | str = "auto", ann: bool | str = "auto"
    ) -> ShardedIndex:
        """Open every index of ``paths`` (see ``EmbeddingIndex.load``)."""
        return cls([EmbeddingIndex.load(path, verify=verify, ann=ann) for path in paths])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return self.shards[0].dim

    @property
    def identity(self) -> dict | None:
        return self.shards[0].identity

    @property
    def model_source(self) -> dict:
        return self.shards[0].model_source

    @property
    def settings(self) -> dict:
        return self.shards[0].settings

    @property
    def search_method(self) -> str:
        methods = sorted({shard.search_method for shard in self.shards})
        return methods[0] if len(methods) == 1 else "mixed (" + ", ".join(methods) + ")"

    def check_model(self, identity: dict, given: str | None = None) -> None:
        self.shards[0].check_model(identity, given)

    def load_ann(self) -> None:
        """Each shard's ``EmbeddingIndex.load_ann``."""
        for shard in self.shards:
            shard.load_ann()

    def _no_model_message(self) -> str:
        return self.shards[0]._no_model_message()

    def row_vector(self, row: int) -> np.ndarray:
        """Row ``row`` (counted end to end) as a unit vector (C,): its shard's stored row."""
        from .queries import check_row

        row = check_row(row, len(self), "counted end to end over the shards, ")
        shard = int(np.searchsorted(self.offsets, row, side="right") - 1)
        return self.shards[shard].row_vector(row - int(self.offsets[shard]))

    def query_vectors(self, queries, text_encoder=None, video_encoder=None) -> np.ndarray:
        from .queries import unit_vectors

        return unit_vectors(self, queries, text_encoder, video_encoder)

    def search(
        self,
        query,
        top_k: int = 10,
        text_encoder=None,
        exact: bool = False,
        per_video: int | None = None,
        **options,
    ) -> list[SearchResult]:
        """Top ``top_k`` results of all shards for one query (see ``EmbeddingIndex.search``)."""
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
        """Top ``top_k`` results of all shards for each query; ``SearchResult.row`` counts rows end to end.

        per_video: as ``EmbeddingIndex.search_batch`` (grouped when any shard holds moments); a video
        is one file of one shard, so each shard's best videos are merged by score. Queries, filters
        and ``video_encoder`` as there; each shard applies the filters to its own rows (``under``
        relative to its own root). ``dedup`` needs one index (merge the shards first).
        """
        from .filters import filter_of

        filters = filter_of(filters, **filter_options)
        if dedup is not False:
            raise IndexInputError(
                "dedup searches one index: merge the shards first (muse-infer index merge), then search it"
            )
        vectors = self.query_vectors(queries, text_encoder, video_encoder)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        selections = [shard.selection(filters) for shard in self.shards]
        group = self._per_video(per_video)
        if group is not None:
            found = [self._merge_moments(vector, top_k, group, exact, selections) for vector in vectors]
        else:
            per_shard = [
                shard.search_rows(vectors, top_k, exact, selection)
                for shard, selection in zip(self.shards, selections, strict=True)
            ]  # [S][Q]
            found = [self._merge([rows[q] for rows in per_shard], top_k) for q in range(len(vectors))]
        return [above(results, filters) for results in found]

    def _per_video(self, per_video: int | None) -> int | None:
        if per_video is None and any(shard.has_moments for shard in self.shards):
            per_video = 1
        return self.shards[0].moments_per_video(per_video if per_video is not None else 0)

    def _merge_moments(
        self, vector, top_k: int, per_video: int, exact: bool, selections
    ) -> list[SearchResult]:
        found = []  # (score, shard, row, moment)
        for number, shard in enumerate(self.shards):
            for moment in shard.search_moments(vector, top_k, per_video, exact, selections[number]):
                found.append((-moment.score, number, moment.row, moment))
        found.sort(key=lambda item: item[:3])
        videos, results = set(), []
        for _, number, _, moment in found:
            if (number, moment.path) not in videos:
                if len(videos) == top_k:  # a video past the top_k best; the best's later moments still count
                    continue
                videos.add((number, moment.path))
            hit = self.shards[number].moment_results([moment], number, int(self.offsets[number]))[0]
            results.append(SearchResult(len(results) + 1, *_fields_after_rank(hit)))
        return results

    def _merge(self, per_shard: list[tuple[np.ndarray, np.ndarray]], top_k: int) -> list[SearchResult]:
        rows = np.concatenate([r + self.offsets[i] for i, (r, _) in enumerate(per_shard)])
        scores = np.concatenate([s for _, s in per_shard])
        best_rows, best_scores = select_top(rows, scores, top_k)
        results = []
        for rank, (row, score) in enumerate(zip(best_rows.tolist(), best_scores.tolist(), strict=True)):
            shard = int(np.searchsorted(self.offsets, row, side="right") - 1)
            local = np.array([row - self.offsets[shard]])
            hit = self.shards[shard].results(
                local, np.array([score], np.float32), shard, int(self.offsets[shard])
            )[0]
            results.append(SearchResult(rank + 1, *_fields_after_rank(hit)))
        return results


def _fields_after_rank(hit: SearchResult) -> tuple:
    return hit.path, hit.score, hit.row, hit.absolute_path, hit.start_s, hit.end_s, hit.shard


# --- merging ------------------------------------------------------------------------------------


def merge_indexes(
    out: str | os.PathLike,
    shards: Sequence[str | os.PathLike],
    kind: str | None = None,
    memory: str | int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one index ``out`` holding the rows of ``shards`` (EMB.npy paths), shard after shard.

    Paths are made relative to the shards' common root folder. Failures lists are joined. kind: build
    an ANN index of that kind over the result ("auto", "flat", "hnsw", "ivf-pq"; None: none).
    ``out`` must not exist, unless ``overwrite`` and it is a muse-infer index (never another file).
    Raises ``IndexInputError`` for incompatible shards or a bad ``out``.
    """
    from .build import _index_target, build_ann, is_index
    from .store import DESCRIPTIVE_FIELDS, unit_blocks, write_index_files

    out = Path(out)
    names = [str(s) for s in shards]
    sources = {Path(s).absolute().resolve() for s in shards}
    if out.absolute().resolve() in sources:
        raise IndexInputError(f"{out}: is one of the shards; write the merged index to a new file")
    if out.exists() and not (overwrite and is_index(out)):
        reason = (
            "add --overwrite to replace it"
            if is_index(out)
            else "it is not a muse-infer index: not replacing it"
        )
        raise IndexInputError(f"{out}: already exists; {reason}")
    out = _index_target(out)
    indexes = [EmbeddingIndex.load(s, ann=False) for s in shards]
    check_compatible(indexes, names)
    root, prefixes = common_root(indexes, names)
    rows = merged_rows(indexes, prefixes)
    check_unique(rows, names)
    failures = [
        {**f, "path": prefix + f["path"]}
        for index, prefix in zip(indexes, prefixes, strict=True)
        for f in _failures(index)
    ]
    first = indexes[0]
    fields = {key: first.metadata.get(key) for key in DESCRIPTIVE_FIELDS} | {"root": root}
    windows = {json.dumps(index.metadata.get("windows"), sort_keys=True) for index in indexes}
    if len(windows) == 1 and first.metadata.get("windows"):  # moments cut alike: the merge says how
        fields["windows"] = first.metadata["windows"]
    blocks = chain.from_iterable(unit_blocks(index.embeddings) for index in indexes)
    write_index_files(out, blocks, len(rows), first.dim, rows, fields, failures)
    if kind is not None:
        build_ann(out, kind=kind, **({"memory": memory} if memory is not None else {}))
    return out


def common_root(indexes: Sequence[EmbeddingIndex], names: Sequence[str]) -> tuple[str | None, list[str]]:
    """(merged root, the prefix each shard's paths get): the shards' deepest common folder."""
    roots = [index.metadata.get("root") for index in indexes]
    if all(r is None for r in roots):
        return None, [""] * len(indexes)
    if any(r is None for r in roots):
        missing = names[roots.index(None)]
        raise IndexInputError(
            f"{missing}: has no root folder while other shards have one; cannot merge their paths"
        )
    root = os.path.commonpath(roots)
    prefixes = [Path(os.path.relpath(r, root)).as_posix() + "/" if r != root else "" for r in roots]
    return root, [p if p != "./" else "" for p in prefixes]


def merged_rows(indexes: Sequence[EmbeddingIndex], prefixes: Sequence[str]):
    """The shards' rows tables end to end: paths prefixed, rows renumbered, unknown columns kept."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..filenames import is_utf8
    from .store import exact_paths, path_arrays, row_schema

    tables, offset = [], 0
    for index, prefix in zip(indexes, prefixes, strict=True):
        table = index.rows
        table = table.set_column(
            0, "row", numbers(np.arange(offset, offset + table.num_rows, dtype=np.int64), pa.int64())
        )
        raw = table.column("path_bytes") if "path_bytes" in table.column_names else None
        if prefix and is_utf8(prefix) and not exact_paths(raw):  # text joined in Arrow: the usual case
            where = table.column_names.index("path")
            before, separator = texts([prefix, ""])  # Arrow scalars: pc makes a str one by pa.scalar (pandas)
            joined = pc.binary_join_element_wise(before, table.column("path"), separator)
            table = table.set_column(where, "path", joined)
        elif prefix:  # a name (or the prefix) not UTF-8: both columns made again from the exact paths
            shown, raw = path_arrays(prefix + path for path in index.paths)
            table = _with_column(
                table.set_column(table.column_names.index("path"), "path", shown), "path_bytes", raw
            )
        tables.append(table)
        offset += table.num_rows
    merged = pa.concat_tables(tables, promote_options="default")
    for field in row_schema():  # the fixed columns keep their exact types and nullability
        if field.name not in merged.column_names:  # shards written before the column existed
            merged = merged.append_column(field, pa.nulls(merged.num_rows, field.type))
        merged = merged.set_column(
            merged.column_names.index(field.name), field, merged.column(field.name).cast(field.type)
        )
    return merged


def _with_column(table, name: str, values):
    """``table`` with its column ``name`` set to ``values`` (added at the end when it has none)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def first_repeated_row(table, keys: Sequence[str]) -> int | None:
    """A row of ``table`` whose ``keys`` (nulls equal to nulls) another row has too; None when none has.

    Each key column is dictionary-encoded (equal values, equal codes) and the (N, keys) codes sorted:
    ``group_by`` would do it in one call but loads Acero, whose import imports pandas."""
    import pyarrow.compute as pc

    if table.num_rows < 2:
        return None
    codes = [
        numpy_values(pc.dictionary_encode(table.column(key).combine_chunks()).indices, np.int64, -1)
        for key in keys
    ]
    order = np.lexsort(codes[::-1])
    ordered = np.stack(codes, axis=1)[order]
    same = np.all(ordered[1:] == ordered[:-1], axis=1)
    return int(order[np.argmax(same) + 1]) if same.any() else None


def check_unique(rows, names: Sequence[str]) -> None:
    """IndexInputError when two rows are the same video (path) and time range."""
    from ..filenames import display_name

    keys = ["path", "path_bytes", "start_s", "end_s"]  # path_bytes: two names that only look alike differ
    repeated = first_repeated_row(rows, [key for key in keys if key in rows.column_names])
    if repeated is not None:
        path = display_name(rows.column("path")[repeated].as_py())
        raise IndexInputError(
            f"{path!r} is in more than one of the shards {', '.join(names)}: each row must be in one"
        )


def _failures(index: EmbeddingIndex) -> list[dict]:
    from .store import read_failures

    return read_failures(index.location)
