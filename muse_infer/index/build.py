"""Making indexes: ``write_index`` (from arrays you have), ``build_ann`` (the approximate index beside
one), ``refresh_ann`` (after the rows changed: add or rebuild), ``upgrade_index`` (format 1 -> 2).

    from muse_infer.index import write_index, build_ann, EmbeddingIndex
    write_index("emb.npy", embeddings, paths, root="/videos")     # (N, C) rows, N relative paths
    build_ann("emb.npy", kind="auto", memory="4G")                  # = muse-infer index build emb.npy
    hits = EmbeddingIndex.load("emb.npy").search(vector, top_k=10)
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import IndexFileError, IndexInputError
from . import ann as ann_files
from .arrow_columns import array, numbers
from .store import (
    FACT_COLUMNS,
    INDEX_FORMAT,
    ROW_COLUMNS,
    path_arrays,
    pyarrow_modules,
    read_failures,
    row_schema,
    rows_path,
    sidecar_path,
    unit_blocks,
    write_index_files,
)

logger = logging.getLogger(__name__)
V1_ONLY = ("paths", "file_stats", "embeddings_sha256")  # in the rows file and chunk hashes in format 2
FORMAT_KEYS = (
    "format",
    "format_version",
    "count",
    "dim",
    "dtype",
    "embeddings_file",
    "failures_file",
    "failed",
)
RETUNE_GROWTH, RETRAIN_GROWTH = 1.25, 4.0  # re-tune search effort / re-train IVF lists past these growths


def write_index(
    out: str | os.PathLike,
    embeddings,
    paths: Sequence[str],
    model=None,
    *,
    root: str | os.PathLike | None = None,
    sizes: Sequence[int] | None = None,
    mtimes_ns: Sequence[int] | None = None,
    start_s: Sequence[float] | None = None,
    end_s: Sequence[float] | None = None,
    facts: dict | None = None,
    columns: dict | None = None,
    settings: dict | None = None,
    failures: Sequence[dict] = (),
    clip_weights: str | os.PathLike | None = None,
    ann: str | None = None,
    memory: str | int = ann_files.DEFAULT_MEMORY,
) -> Path:
    """Write an index (format 2, see ``muse_infer.index.store``) from arrays you already have.

    out: ``EMB.npy`` (its sidecar and rows file go beside it; an earlier index there is replaced
    atomically, any other file there is refused). embeddings: (N, C) float array-like (a memory map is
    fine: it is read block by block); rows are stored at unit length (rows already unit length bit for
    bit); NaN, infinite or all-zero rows are refused. paths: N strings, one a row (POSIX, relative to
    ``root`` when given; a name that is not UTF-8 as the str ``os.walk`` gives, kept exactly:
    ``muse_infer.filenames``). model: None (the index is then searched with vectors only), a ``VideoEncoder``
    / ``TextEncoder`` / backend (its identity is recorded, so ``TextEncoder.for_index`` loads it), or a
    model name / checkpoint path (loaded once, with ``clip_weights``, to record its identity).
    sizes, mtimes_ns, start_s, end_s: optional per-row values (None / NaN = unknown / whole video).
    facts: the videos' facts, {name: N values} for any of "duration_s", "width", "height", "fps",
    "codec" (``muse_infer.video.facts``; None = unknown), which search filters use (``--min-duration``).
    columns: more per-row columns {name: N values}. ann: None (no ANN index; a stale one beside ``out``
    is removed), or a kind ("auto", "flat", "hnsw", "ivf-pq") to build one now with ``memory``.
    Returns ``out`` as a Path. Raises ``IndexInputError`` for bad arrays or arguments.
    """
    out = _index_target(Path(out))
    count, dim = _shape(embeddings)
    rows = row_table(
        paths,
        count,
        sizes=sizes,
        mtimes_ns=mtimes_ns,
        start_s=start_s,
        end_s=end_s,
        facts=facts,
        columns=columns,
    )
    identity, source, backend = model_record(model, clip_weights)
    fields = {"root": str(Path(root).absolute()) if root is not None else None, "model": identity}
    fields |= {"model_source": source, "backend": backend, "settings": settings}
    write_index_files(out, unit_blocks(embeddings), count, dim, rows, fields, [dict(f) for f in failures])
    if ann is not None:
        build_ann(out, kind=ann, memory=memory)
    else:
        _drop_stale_ann(out)
    return out


def _index_target(out: Path) -> Path:
    if out.suffix != ".npy":
        raise IndexInputError(f"{out}: an index file name ends with .npy (e.g. emb.npy)")
    if out.is_dir():
        raise IndexInputError(f"{out}: is a folder; give a file name such as {out / 'emb.npy'}")
    if out.exists() and not is_index(out):
        raise IndexInputError(
            f"{out}: exists and is not a muse-infer index; not replacing it (choose another name)"
        )
    return out.absolute()


def is_index(npy: Path) -> bool:
    """Whether ``npy`` has a muse-infer sidecar beside it (so this tool wrote it)."""
    try:
        return json.loads(sidecar_path(npy).read_text()).get("format") == INDEX_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _shape(embeddings) -> tuple[int, int]:
    shape = getattr(embeddings, "shape", None)
    if shape is None or len(shape) != 2 or shape[1] < 1:
        raise IndexInputError(f"embeddings must be an (N, C) array, got shape {shape}")
    return int(shape[0]), int(shape[1])


def row_table(
    paths, count: int, sizes=None, mtimes_ns=None, start_s=None, end_s=None, facts=None, columns=None
):
    """The Arrow rows table (``store.row_schema`` + ``columns``) for ``count`` rows, checked.

    facts: {name: ``count`` values} for any of ``store.FACT_COLUMNS`` (None = unknown)."""
    pa, _ = pyarrow_modules()
    values = {"path": paths, "size": sizes, "mtime_ns": mtimes_ns, "start_s": start_s, "end_s": end_s}
    for name, column in values.items():
        if column is not None and len(column) != count:
            raise IndexInputError(f"{name}: {len(column)} values for {count} rows of embeddings")
    if any(not isinstance(p, str) or not p for p in paths):
        raise IndexInputError("paths: every row needs a non-empty str path")
    try:
        texts, raw = path_arrays(paths)  # names of any bytes: see store.row_schema
    except ValueError as error:
        raise IndexInputError(f"paths: {error}") from None
    arrays = [numbers(np.arange(count, dtype=np.int64), pa.int64()), texts]
    arrays.append(numbers(_optional(values["size"], count, int), pa.int64()))
    arrays.append(numbers(_optional(values["mtime_ns"], count, int, unknown=-1), pa.int64()))
    starts, ends = (_optional(values[n], count, float) for n in ("start_s", "end_s"))
    bad = [
        i
        for i, (a, b) in enumerate(zip(starts, ends, strict=True))
        if a is not None and b is not None and b < a
    ]
    if bad:
        raise IndexInputError(f"row {bad[0]}: end_s {ends[bad[0]]} is before start_s {starts[bad[0]]}")
    arrays += [numbers(starts, pa.float64()), numbers(ends, pa.float64()), raw]
    arrays += fact_arrays(facts, count)
    table = pa.table(arrays, schema=row_schema())
    for name, column in (columns or {}).items():
        if name in ROW_COLUMNS or len(column) != count:
            raise IndexInputError(f"columns[{name!r}]: a reserved name or not {count} values")
        table = table.append_column(name, pa.array(list(column)))
    return table


def fact_arrays(facts: dict | None, count: int) -> list:
    """The Arrow arrays of ``store.FACT_COLUMNS`` (in that order) from {name: ``count`` values}; a
    column not given is all null. Raises IndexInputError for an unknown name, a wrong length or a
    value that is not a number (a str for "codec"), or a negative one."""
    pa, _ = pyarrow_modules()
    facts = dict(facts or {})
    unknown = sorted(set(facts) - set(FACT_COLUMNS))
    if unknown:
        raise IndexInputError(f"facts: unknown {unknown}; known: {', '.join(FACT_COLUMNS)}")
    types = {field.name: field.type for field in row_schema()}
    arrays = []
    for name in FACT_COLUMNS:
        values = facts.get(name)
        if values is not None and len(values) != count:
            raise IndexInputError(f"facts[{name!r}]: {len(values)} values for {count} rows of embeddings")
        kind = str if name == "codec" else (int if name in ("width", "height") else float)
        try:
            column = _optional(values, count, kind) if kind is not str else _texts(values, count)
        except (TypeError, ValueError):
            raise IndexInputError(f"facts[{name!r}]: values must be {kind.__name__}s or None") from None
        if kind is float and any(v is not None and not v >= 0 for v in column):
            raise IndexInputError(f"facts[{name!r}]: values must be >= 0 (None: unknown)")
        arrays.append(array(column, types[name]))
    return arrays


def _texts(values, count: int) -> list:
    if values is None:
        return [None] * count
    if any(v is not None and not isinstance(v, str) for v in values):
        raise TypeError("not a str")
    return list(values)


def _optional(values, count: int, kind, unknown: int | None = None) -> list:
    """Per-row values with None for missing: None, NaN, and for ints a negative value, or only
    ``unknown`` when given (an mtime before 1970 is negative: a real time, kept, so a rerun matches it)."""
    if values is None:
        return [None] * count
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(None)
        else:
            value = kind(value)
            missing = kind is int and (value < 0 if unknown is None else value == unknown)
            out.append(None if missing else value)
    return out


def model_record(model, clip_weights=None) -> tuple[dict | None, dict | None, str | None]:
    """(identity, model_source, backend name) of what ``write_index(model=...)`` was given: a model
    name or file, or a ``ModelSpec`` (neither is loaded), or an encoder or backend."""
    if model is None:
        return None, None, None
    from ..runtime.spec import ModelSpec

    if isinstance(model, (str, os.PathLike)):
        model = ModelSpec.resolve(model, clip_weights=clip_weights)
    if isinstance(model, ModelSpec):
        return model.identity, model.source, model.backend
    backend = getattr(model, "backend", model)  # an encoder holds its backend
    identity, source = getattr(backend, "identity", None), getattr(backend, "source", None)
    if not isinstance(identity, dict):
        raise IndexInputError(
            f"model: give None, a ModelSpec, an encoder (VideoEncoder/TextEncoder), a backend, or a model "
            f"name/path; got {type(model).__name__}"
        )
    return identity, source, backend.name


def _drop_stale_ann(out: Path) -> None:
    meta, _ = ann_files.read_ann_meta(out)
    if meta is not None or ann_files.owned_ann_file(out):
        ann_files.ann_meta_path(out).unlink(missing_ok=True)
        if ann_files.owned_ann_file(out):
            ann_files.ann_path(out).unlink(missing_ok=True)
        logger.info(
            "%s: removed the ANN index of the previous rows; build one with muse-infer index build", out
        )


# --- the approximate index ----------------------------------------------------------------------


def build_ann(
    index_path: str | os.PathLike,
    kind: str = "auto",
    memory: str | int = ann_files.DEFAULT_MEMORY,
    target_recall: float = ann_files.DEFAULT_TARGET_RECALL,
    tune_queries: np.ndarray | None = None,
    threads: int | None = None,
) -> dict:
    """Build the ANN index beside ``index_path`` (EMB.npy) and return its description (EMB.ann.json).

    kind: "auto" chooses by ``ann.plan_ann``'s rules, or "flat" / "hnsw" / "ivf-pq". memory: the budget
    for the ANN structure ("4G", bytes). target_recall: recall@10 the search effort is tuned to reach on
    ``tune_queries`` (Q, C) (e.g. text embeddings of typical queries) or on synthetic query-like vectors.
    A format-1 index is first rewritten as format 2. Replaces an earlier ANN index atomically.
    """
    from .embedding_index import EmbeddingIndex

    npy = Path(index_path)
    upgrade_index(npy)
    index = EmbeddingIndex.load(npy, ann=False)
    budget = ann_files.parse_memory(memory)
    if not 0 < target_recall <= 1:
        raise IndexInputError(f"target recall {target_recall}: give a value in (0, 1]")
    if tune_queries is not None:
        tune_queries = _check_queries(tune_queries, index.dim)
    plan = ann_files.plan_ann(len(index), index.dim, budget, kind)
    return _build_planned(index, plan, kind, budget, target_recall, tune_queries, threads)


def _build_planned(
    index, plan, requested: str, budget: int, target: float, tune_queries=None, threads=None
) -> dict:
    npy = index.location
    target_file = ann_files.ann_path(npy)
    if target_file.exists() and not ann_files.owned_ann_file(npy):
        raise IndexFileError(f"{target_file}: exists and is not an ANN index muse-infer wrote; move it away")
    meta = ann_files.ann_meta(plan, requested, budget, len(index), index.dim, index.content_id)
    logger.info("%s: building %s for %d rows (%s)", npy, plan.kind, len(index), plan.reason)
    if plan.kind == "flat":
        return ann_files.write_ann(npy, None, meta | {"search": {}})
    built, search, tuning, seconds = ann_files.build_faiss(
        index.embeddings, plan, target, tune_queries, threads
    )
    meta |= {
        "search": search,
        "tuning": tuning,
        "build_seconds": round(seconds, 2),
        "trained_rows": len(index),
    }
    return ann_files.write_ann(npy, built, meta)


def _check_queries(queries, dim: int) -> np.ndarray:
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim or len(queries) < 10:
        raise IndexInputError(f"tuning queries must be (Q >= 10, {dim}), got shape {queries.shape}")
    if not np.all(np.isfinite(queries)) or np.any(np.linalg.norm(queries, axis=1) == 0):
        raise IndexInputError("tuning queries hold NaN, infinite or all-zero rows")
    return queries


def describe_build(meta: dict) -> str:
    """One line about an ANN description, for people."""
    if meta["kind"] == "flat":
        return f"flat (exact search) for {meta['count']} rows: {meta['reason']}"
    tuning = meta.get("tuning", {})
    search = ", ".join(f"{k} {v}" for k, v in meta["search"].items())
    return (
        f"{meta['kind']} ({meta['params']['factory']}) for {meta['count']} rows in {meta.get('build_seconds', 0):.1f} s: "
        f"{ann_files.format_bytes(meta['index_bytes'])} (estimated {ann_files.format_bytes(meta['estimated_bytes'])}); "
        f"search {search}: recall@10 {tuning.get('recall', float('nan')):.3f} on {tuning.get('source', '?')}"
    )


# --- after the rows changed ---------------------------------------------------------------------


def refresh_ann(
    index_path: str | os.PathLike, previous_content_id: str | None, kept_rows: int | None
) -> str | None:
    """Bring the ANN index beside ``index_path`` up to date after its rows were rewritten
    (``refresh_opened_ann`` on the index opened here)."""
    from .embedding_index import EmbeddingIndex

    npy = Path(index_path)
    if ann_files.read_ann_meta(npy) == (None, None):
        return None
    return refresh_opened_ann(EmbeddingIndex.load(npy, ann=False), previous_content_id, kept_rows)


def refresh_opened_ann(index, previous_content_id: str | None, kept_rows: int | None) -> str | None:
    """Bring the ANN index beside ``index`` (an opened ``EmbeddingIndex``) up to date after its rows
    were rewritten.

    previous_content_id: the index's content id before the rewrite; kept_rows: how many leading rows
    are the previous index's rows, unchanged and in place (None when rows were removed, changed or
    reordered). Adds the new rows where the kind allows (hnsw, ivf-pq), re-adds every row to trained
    IVF lists or rebuilds otherwise. Returns what was done (None when there is no ANN index).
    """
    meta, problem = ann_files.read_ann_meta(index.location)
    if meta is None:
        return None if problem is None else f"approximate index ignored: {problem}"
    if meta.get("content_id") == index.content_id:
        return f"{meta['kind']} index unchanged"
    budget, requested = (
        int(meta.get("memory_budget", ann_files.DEFAULT_MEMORY)),
        meta.get("requested", meta["kind"]),
    )
    target = float(meta.get("tuning", {}).get("target_recall", ann_files.DEFAULT_TARGET_RECALL))
    plan = ann_files.plan_ann(len(index), index.dim, budget, requested)
    if plan.kind != meta["kind"]:
        _build_planned(index, plan, requested, budget, target)
        return f"approximate index rebuilt as {plan.kind} ({plan.reason}; was {meta['kind']})"
    if plan.kind == "flat":
        _build_planned(index, plan, requested, budget, target)
        return "flat index: exact search, nothing to update"
    in_place = meta.get("content_id") == previous_content_id and kept_rows == meta["count"]
    outgrown = plan.kind == "ivf-pq" and len(index) > RETRAIN_GROWTH * meta.get("trained_rows", meta["count"])
    if in_place and not outgrown:
        return _add_rows(index, meta, target)
    if plan.kind == "ivf-pq" and meta.get("content_id") == previous_content_id and not outgrown:
        return _readd_rows(index, meta, target)
    _build_planned(index, plan, requested, budget, target)
    return f"{plan.kind} index rebuilt ({len(index)} rows: rows were removed or changed, or it was stale)"


def _add_rows(index, meta: dict, target: float) -> str:
    faiss_index = ann_files.load_faiss(index.location, meta, meta["count"], index.dim, writable=True)
    added = len(index) - meta["count"]
    ann_files.add_rows(faiss_index, index.embeddings, meta["count"])
    _save_refreshed(index, faiss_index, meta, target)
    return f"added {added} rows to the {meta['kind']} index"


def _readd_rows(index, meta: dict, target: float) -> str:
    faiss_index = ann_files.load_faiss(index.location, meta, meta["count"], index.dim, writable=True)
    faiss_index.reset()  # keeps the trained lists and codebooks
    ann_files.add_rows(faiss_index, index.embeddings, 0)
    _save_refreshed(index, faiss_index, meta, target)
    return f"re-added all {len(index)} rows to the trained ivf-pq lists (rows were removed or changed)"


def _save_refreshed(index, faiss_index, meta: dict, target: float) -> None:
    tuned_rows = meta.get("tuning", {}).get("rows", meta["count"])
    meta = {**meta, "count": len(index), "content_id": index.content_id}
    if len(index) > RETUNE_GROWTH * tuned_rows:
        plan = ann_files.AnnPlan(
            meta["kind"], meta["params"], meta["estimated_bytes"], meta.get("reason", "")
        )
        tuning = ann_files.tuning_set(index.embeddings)
        search, recall = ann_files.tune(faiss_index, plan, index.embeddings, tuning, target)
        meta["search"] = search
        meta["tuning"] = {
            **meta.get("tuning", {}),
            "recall": round(recall, 4),
            "rows": len(index),
            "tried": tuning.results,
        }
    meta["estimated_bytes"] = ann_files.estimate_bytes(meta["kind"], len(index), index.dim, meta["params"])
    ann_files.write_ann(index.location, faiss_index, meta)


# --- format 1 -> 2 ------------------------------------------------------------------------------


def upgrade_index(index_path: str | os.PathLike) -> bool:
    """Rewrite a format-1 index as format 2 in place (rows kept, metadata moved to Parquet).

    Returns True when it did (and logs it), False when the index is already format 2.
    """
    from .opening import open_index
    from .store import read_sidecar, resolve_pair

    npy, sidecar = resolve_pair(Path(index_path))
    if read_sidecar(sidecar).get("format_version") != 1:
        return False
    files = open_index(npy, verify="auto")
    fields = {key: value for key, value in files.metadata.items() if key not in V1_ONLY + FORMAT_KEYS}
    failures = read_failures(npy)
    count, dim = files.embeddings.shape
    write_index_files(npy, unit_blocks(files.embeddings), count, dim, files.rows, fields, failures)
    logger.warning("%s: converted to index format 2 (row metadata now in %s)", npy, rows_path(npy).name)
    return True
