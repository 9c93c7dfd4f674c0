"""The approximate-nearest-neighbour (ANN) index beside an index: ``EMB.ann.faiss`` + ``EMB.ann.json``.

Kinds (``plan_ann`` chooses one; ``build_ann`` builds, tunes and writes it):

- ``flat``: no approximate structure; search scans every row exactly (``search.exact_search``).
- ``hnsw``: faiss ``IndexHNSWSQ``: an HNSW graph (M = 32 links, efConstruction 100) over rows
  compressed to 8-bit scalar codes, inner product. Rows can be added later; removing rows rebuilds it.
- ``ivf-pq``: faiss ``IVF{nlist},PQ{m}x4fs``: rows assigned to ``nlist`` k-means lists and compressed
  to ``m`` 4-bit codes scanned with SIMD ("fast scan"), inner product. Rows can be added later (the
  lists are kept); removing rows re-adds every row to the trained lists.

Whatever the kind, the approximate index only proposes candidates: they are re-ranked with the exact
float32 rows of the memory-mapped ``EMB.npy``, so every reported score is the exact cosine.

``auto`` rules (``plan_ann``; N rows of C floats, memory budget B, default 4 GiB):
1. N * C * 4 bytes <= 64 MiB (32k rows of 512): ``flat`` -- an exact scan of that takes a few ms.
2. else, below ``HNSW_MAX_ROWS`` (250k) rows, ``hnsw`` if its estimated memory (``estimate_bytes``:
   N * (C + 8 M + 16) bytes) <= B: no training, and as fast as ivf-pq at that size;
3. else ``ivf-pq`` with the most codes a row whose estimate (N * (m / 2 + 8) bytes plus the lists'
   centroids) fits B: m = C/4, C/8 or C/16. At 1M rows of 512 (docs/benchmarks.md) it reached the
   same recall as hnsw at a quarter of the latency, with a tenth of the memory and an eighth of the
   build time, and removing rows only re-adds rows to trained lists, where hnsw rebuilds;
4. else an error saying how much memory the smallest index needs.
Only the ANN structure counts against B: the rows stay on disk, memory-mapped, and re-ranking reads
a few hundred of them a query (hnsw: 40).

Tuning: search effort (HNSW's efSearch; IVF's nprobe and candidate count) is chosen at build time as
the cheapest setting whose recall@10 against exact search reaches the target (0.95 default) on query-
like vectors: real text-query embeddings if given (``tune_queries``), else vectors built from the rows
the way text queries sit apart from videos (a shared offset plus noise: ``data.vectors.shifted_queries``).

``EMB.ann.json``::

    {"format": "muse-infer-ann", "format_version": 1, "kind": "hnsw" | "ivf-pq" | "flat",
     "requested": "auto" | kind, "memory_budget": B, "count": N, "dim": C, "metric": "inner_product",
     "content_id": <the index's content_id when built>, "params": {...}, "search": {...},
     "index_file": "EMB.ann.faiss", "index_bytes": ..., "index_sha256": ..., "sample_sha256": ...,
     "estimated_bytes": ..., "tuning": {...}, "build_seconds": ..., "faiss_version": ...}

A missing, truncated, foreign or stale ``EMB.ann.faiss`` (its size, a hash of its first and last MiB,
its ``content_id``, row count and dimension are checked) is reported by ``check_ann``; the index then
searches exactly (``EmbeddingIndex.load(ann="auto")``, with a warning) or refuses (``ann=True``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import IndexFileError, IndexInputError
from ..filenames import c_library_path
from .files import IndexFiles
from .store import file_sha256, sidecar_text

logger = logging.getLogger(__name__)

ANN_FORMAT, ANN_FORMAT_VERSION = "muse-infer-ann", 1
KINDS = ("auto", "flat", "hnsw", "ivf-pq")
DEFAULT_MEMORY = 4 << 30
DEFAULT_TARGET_RECALL = 0.95
FLAT_MAX_BYTES = 64 << 20
HNSW_MAX_ROWS = 250_000
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_CANDIDATES = 32, 100, 40
HNSW_EF_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
IVF_NPROBE_GRID = (2, 4, 8, 16, 32, 64, 128, 256, 512)
IVF_CANDIDATE_GRID = (100, 200, 400, 800, 1600, 3200)
IVF_MIN_ROWS = 1000  # fewer rows cannot train 16 codes a sub-vector and a few lists
MIN_ROWS_PER_LIST, TRAIN_ROWS_PER_LIST = 50, 64  # faiss's k-means asks for >= 39 training rows a list
TUNING_QUERIES, TUNING_K, TUNING_MARGIN = 256, 10, 0.01
SAMPLE_BYTES = 1 << 20
ADD_BLOCK_ROWS = 65536


def ann_path(npy_path) -> Path:
    """EMB.npy -> EMB.ann.faiss (``IndexFiles``)"""
    return IndexFiles.of(npy_path).ann


def ann_meta_path(npy_path) -> Path:
    """EMB.npy -> EMB.ann.json (``IndexFiles``)"""
    return IndexFiles.of(npy_path).ann_meta


def faiss_module():
    # faiss's loader logs, at INFO, each SIMD build it looks for (the pip wheel dispatches at run time)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError:
        raise IndexFileError("approximate search needs faiss: pip install faiss-cpu") from None
    return faiss


# --- planning (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnPlan:
    """What to build: ``kind``, its faiss ``params``, the memory it is estimated to need, and why."""

    kind: str
    params: dict
    estimated_bytes: int
    reason: str


def parse_memory(text: str | int) -> int:
    """ "4G", "512M", "1.5GiB", "800000000" -> bytes (K/M/G/T are powers of 1024)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if not match or float(match.group(1)) <= 0:
        raise IndexInputError(f"memory budget {text!r}: give a size such as 4G, 512M or 1.5G")
    return int(float(match.group(1)) * 1024 ** " KMGT".index(match.group(2) or " "))


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1024
    raise AssertionError


def hnsw_params(dim: int) -> dict:
    return {
        "factory": f"HNSW{HNSW_M},SQ8",
        "M": HNSW_M,
        "ef_construction": HNSW_EF_CONSTRUCTION,
        "codes": "SQ8",
    }


def ivf_lists(rows: int) -> int:
    """nlist: the power of two nearest 2 sqrt(N), at most N / 50 (so k-means has 50 rows a list)."""
    target = 2 ** round(math.log2(max(2.0 * math.sqrt(rows), 1.0)))
    ceiling = 2 ** int(math.log2(max(rows // MIN_ROWS_PER_LIST, 1)))
    return int(max(1, min(target, ceiling)))


def ivf_pq_params(rows: int, dim: int, m: int) -> dict:
    nlist = ivf_lists(rows)
    return {"factory": f"IVF{nlist},PQ{m}x4fs", "nlist": nlist, "m": m, "nbits": 4}


def estimate_bytes(kind: str, rows: int, dim: int, params: dict) -> int:
    """Memory the faiss structure of ``kind`` needs for ``rows`` of ``dim`` (what it writes to disk too)."""
    if kind == "flat":
        return 0
    if kind == "hnsw":
        links = params["M"] * 2 + params["M"] / (params["M"] - 1)  # level 0 + expected upper levels
        return int(rows * (dim + 4 * links + 12) + 8 * dim + 1024)  # codes, links, level + offset, SQ ranges
    if kind == "ivf-pq":
        nlist, m = params["nlist"], params["m"]
        codes = rows * (m / 2 + 8)  # 4-bit codes + an int64 id a row
        padding = nlist * 32 * (m / 2 + 8) / 2  # fast-scan lists are stored in blocks of 32 rows
        return int(codes + padding + nlist * dim * 4 + 16 * dim * 4 + 4096)  # + centroids, PQ tables
    raise IndexInputError(f"unknown index kind {kind!r}; one of {', '.join(KINDS)}")


def plan_ann(rows: int, dim: int, memory: int = DEFAULT_MEMORY, kind: str = "auto") -> AnnPlan:
    """The index to build for ``rows`` x ``dim`` within ``memory`` bytes (see the module docstring)."""
    if kind not in KINDS:
        raise IndexInputError(f"--kind {kind!r}: one of {', '.join(KINDS)}")
    scan = rows * dim * 4
    if rows == 0 and kind not in ("auto", "flat"):
        raise IndexInputError(f"the index has no rows: nothing for an {kind} index to hold")
    if kind == "flat" or (kind == "auto" and scan <= FLAT_MAX_BYTES):
        why = (
            "asked for" if kind == "flat" else f"{rows} rows ({format_bytes(scan)}) scan exactly in a few ms"
        )
        return AnnPlan("flat", {}, 0, why)
    hnsw = hnsw_params(dim)
    hnsw_bytes = estimate_bytes("hnsw", rows, dim, hnsw)
    if kind == "hnsw" or (kind == "auto" and rows < HNSW_MAX_ROWS and hnsw_bytes <= memory):
        if hnsw_bytes > memory:
            raise IndexInputError(
                f"an hnsw index of {rows} rows needs ~{format_bytes(hnsw_bytes)}, more than the memory budget "
                f"{format_bytes(memory)}: raise --memory or use --kind ivf-pq"
            )
        return AnnPlan(
            "hnsw", hnsw, hnsw_bytes, f"hnsw needs ~{format_bytes(hnsw_bytes)} <= {format_bytes(memory)}"
        )
    if rows < IVF_MIN_ROWS:
        raise IndexInputError(
            f"ivf-pq needs at least {IVF_MIN_ROWS} rows to train, the index has {rows}: use flat"
        )
    choices = [m for m in (dim // 4, dim // 8, dim // 16) if m >= 2 and dim % m == 0 and m % 2 == 0]
    for m in choices:
        params = ivf_pq_params(rows, dim, m)
        needed = estimate_bytes("ivf-pq", rows, dim, params)
        if needed <= memory:
            why = f"ivf-pq with {m} codes a row needs ~{format_bytes(needed)}" + (
                f" (hnsw would need ~{format_bytes(hnsw_bytes)})"
                if rows < HNSW_MAX_ROWS
                else f" ({rows} rows >= {HNSW_MAX_ROWS})"
            )
            return AnnPlan("ivf-pq", params, needed, why if kind == "auto" else "asked for")
    smallest = estimate_bytes("ivf-pq", rows, dim, ivf_pq_params(rows, dim, choices[-1])) if choices else None
    raise IndexInputError(
        f"no index of {rows} rows of {dim} fits the memory budget {format_bytes(memory)}"
        + (
            f": the smallest (ivf-pq, {choices[-1]} codes a row) needs ~{format_bytes(smallest)}"
            if choices
            else ""
        )
        + "; raise --memory or split the rows into shards"
    )


# --- faiss structures ---------------------------------------------------------------------------


def new_faiss_index(plan: AnnPlan, dim: int):
    faiss = faiss_module()
    index = faiss.index_factory(dim, plan.params["factory"], faiss.METRIC_INNER_PRODUCT)
    if plan.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = plan.params["ef_construction"]
    return index


def train_and_add(index, embeddings: np.ndarray, plan: AnnPlan, seed: int = 0) -> None:
    """Train ``index`` on a sample of ``embeddings`` (N, C) (memory-mapped is fine), then add every row."""
    count = len(embeddings)
    if not index.is_trained:
        wanted = count if plan.kind == "hnsw" else plan.params["nlist"] * TRAIN_ROWS_PER_LIST
        size = min(count, max(wanted, 2000), 262144)
        sample = np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))
        logger.info("training %s on %d of the %d rows", plan.params["factory"], size, count)
        index.train(np.ascontiguousarray(embeddings[sample], dtype=np.float32))
    logger.info("adding %d rows to %s", count, plan.params["factory"])
    add_rows(index, embeddings, 0)


def add_rows(index, embeddings: np.ndarray, start: int) -> None:
    """Add rows ``start``.. of ``embeddings`` to ``index`` (whose ids are row numbers), block by block."""
    for first in range(start, len(embeddings), ADD_BLOCK_ROWS):
        index.add(np.ascontiguousarray(embeddings[first : first + ADD_BLOCK_ROWS], dtype=np.float32))


def search_params(kind: str, search: dict, candidates: int):
    """The faiss search parameters for one search of ``candidates`` rows (no shared state is changed)."""
    faiss = faiss_module()
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=max(int(search["ef_search"]), candidates))
    return faiss.SearchParametersIVF(nprobe=int(search["nprobe"]))


def candidate_count(kind: str, search: dict, top_k: int) -> int:
    """Candidates to fetch for ``top_k`` results: the tuned count for 10, scaled with top_k."""
    return int(math.ceil(search["candidates"] * max(top_k, TUNING_K) / TUNING_K))


# --- tuning -------------------------------------------------------------------------------------


@dataclass
class Tuning:
    """Query-like vectors (Q, C) and their exact top-10 rows (Q, 10), against which settings are measured."""

    queries: np.ndarray
    truth: list[np.ndarray]
    source: str
    results: list[dict] = field(default_factory=list)


def tuning_set(embeddings: np.ndarray, queries: np.ndarray | None = None, seed: int = 7) -> Tuning:
    """Tuning queries: ``queries`` (Q, C) if given, else ``TUNING_QUERIES`` shifted from sampled rows."""
    from ..data.vectors import shifted_queries
    from .search import exact_search

    if queries is not None:
        source = f"{len(queries)} given query vectors"
        vectors = np.asarray(queries, dtype=np.float32)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    else:
        count = min(TUNING_QUERIES, len(embeddings))
        source = f"{count} synthetic query-like vectors (rows + shared offset 1.0 + noise 1.0)"
        vectors = shifted_queries(embeddings, count, offset=1.0, noise=1.0, seed=seed)
    truth = [rows for rows, _ in exact_search(embeddings, vectors, TUNING_K, matmul=True)]
    return Tuning(vectors, truth, source)


def measure_recall(index, kind: str, search: dict, embeddings: np.ndarray, tuning: Tuning) -> float:
    """Mean recall@10 of ``search`` settings (after exact re-ranking) on the tuning queries."""
    from .search import rerank

    candidates = candidate_count(kind, search, TUNING_K)
    params = search_params(kind, search, candidates)
    _, found = index.search(tuning.queries, candidates, params=params)
    hits = 0
    for query, ids, truth in zip(tuning.queries, found, tuning.truth, strict=True):
        rows, _ = rerank(embeddings, ids, query, TUNING_K)
        hits += len(np.intersect1d(rows, truth))
    return hits / max(1, sum(len(t) for t in tuning.truth))


def search_grid(kind: str, params: dict, rows: int, dim: int) -> list[tuple[float, dict]]:
    """Search settings to try, each with a cost proxy (bytes touched a query), cheapest first."""
    if kind == "hnsw":
        grid = [(float(ef), {"ef_search": ef, "candidates": HNSW_CANDIDATES}) for ef in HNSW_EF_GRID]
    else:
        per_list = rows / params["nlist"] * params["m"] / 2
        grid = [
            (nprobe * per_list + 4 * candidates * dim * 4, {"nprobe": nprobe, "candidates": candidates})
            for nprobe in IVF_NPROBE_GRID
            if nprobe <= params["nlist"]
            for candidates in IVF_CANDIDATE_GRID
            if candidates < rows
        ]
    return sorted(grid, key=lambda pair: pair[0])


def tune(index, plan: AnnPlan, embeddings: np.ndarray, tuning: Tuning, target: float) -> tuple[dict, float]:
    """The cheapest search settings reaching ``target`` + a margin (else ``target``, else the best seen)."""
    grid = search_grid(plan.kind, plan.params, len(embeddings), embeddings.shape[1])
    best = (grid[-1][1], -1.0)
    reached = None
    for _, search in grid:
        recall = measure_recall(index, plan.kind, search, embeddings, tuning)
        tuning.results.append({**search, "recall": round(recall, 4)})
        if recall > best[1]:
            best = (search, recall)
        if recall >= target and reached is None:
            reached = (search, recall)
        if recall >= min(1.0, target + TUNING_MARGIN):
            return search, recall
        if plan.kind == "hnsw" and recall >= 0.9999:
            break
    if reached is None:
        logger.warning("tuning reached recall@10 %.3f, below the target %.3f", best[1], target)
    return reached or best


# --- building and writing -----------------------------------------------------------------------


def build_faiss(embeddings: np.ndarray, plan: AnnPlan, target: float, tune_queries=None, threads=None):
    """(faiss index, search settings, tuning report) for ``embeddings`` (N, C) as ``plan`` says.

    threads: OpenMP threads for the build, the process's count restored after it (faiss and torch share
    one OpenMP runtime: left set, it would change torch's threads for the rest of the process)."""
    faiss = faiss_module()
    previous = faiss.omp_get_max_threads()
    if threads:
        faiss.omp_set_num_threads(int(threads))
    try:
        index = new_faiss_index(plan, embeddings.shape[1])
        started = time.perf_counter()
        train_and_add(index, embeddings, plan)
        built = time.perf_counter() - started
        tuning = tuning_set(embeddings, tune_queries)
        logger.info("tuning search effort to recall@10 %.2f on %s", target, tuning.source)
        search, recall = tune(index, plan, embeddings, tuning, target)
    finally:
        faiss.omp_set_num_threads(previous)
    report = {
        "source": tuning.source,
        "target_recall": target,
        "recall": round(recall, 4),
        "rows": len(embeddings),
        "tried": tuning.results,
        "seconds": round(time.perf_counter() - started - built, 2),
    }
    return index, search, report, built


def write_ann(npy: Path, index, meta: dict) -> dict:
    """Write ``EMB.ann.faiss`` (when ``index`` is not None) and ``EMB.ann.json``, the description last."""
    faiss = faiss_module() if index is not None else None
    target, description = ann_path(npy), ann_meta_path(npy)
    with ExitStack() as stack:  # the .json is renamed last; the old one goes first
        tmp_meta = stack.enter_context(atomic_path(description))
        if index is not None:
            tmp_index = stack.enter_context(atomic_path(target))
            with c_library_path(tmp_index, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) as name:
                faiss.write_index(index, name)
            meta |= {
                "index_file": target.name,
                "index_bytes": tmp_index.stat().st_size,
                "index_sha256": file_sha256(tmp_index),
                "sample_sha256": sample_sha256(tmp_index),
            }
        else:
            meta |= {"index_file": None, "index_bytes": 0}
        tmp_meta.write_text(sidecar_text(meta))
        description.unlink(missing_ok=True)
    if index is None and owned_ann_file(npy):
        target.unlink(missing_ok=True)  # a flat index has no faiss file: drop the one we wrote before
    return meta


def owned_ann_file(npy: Path) -> bool:
    """Whether ``EMB.ann.faiss`` exists and looks like ours (a faiss file beside an index)."""
    target = ann_path(npy)
    try:
        with open(target, "rb") as handle:
            return handle.read(4) in FAISS_MAGICS
    except OSError:
        return False


FAISS_MAGICS = (b"IHNs", b"IwPf")  # IndexHNSWSQ, IndexIVFPQFastScan: the kinds written here


def sample_sha256(path: Path) -> str:
    """SHA-256 of a file's first and last MiB and its size: a cheap check that it is the file described."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        handle.seek(max(0, size - SAMPLE_BYTES))
        digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def ann_meta(plan: AnnPlan, requested: str, memory: int, count: int, dim: int, content_id: str) -> dict:
    faiss = faiss_module() if plan.kind != "flat" else None
    return {
        "format": ANN_FORMAT,
        "format_version": ANN_FORMAT_VERSION,
        "kind": plan.kind,
        "requested": requested,
        "memory_budget": memory,
        "count": count,
        "dim": dim,
        "metric": "inner_product",
        "content_id": content_id,
        "params": plan.params,
        "estimated_bytes": plan.estimated_bytes,
        "reason": plan.reason,
        "faiss_version": faiss.__version__ if faiss else None,
    }


# --- reading and checking -----------------------------------------------------------------------


def read_ann_meta(npy: Path) -> tuple[dict | None, str | None]:
    """(the ``EMB.ann.json`` dict, None), (None, None) when there is no ANN index, or (None, problem)."""
    description, target = ann_meta_path(npy), ann_path(npy)
    if not description.exists():
        if target.exists():
            return None, f"{target} has no description {description.name} (an interrupted build?)"
        return None, None
    try:
        meta = json.loads(description.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"{description}: unreadable ({error})"
    if not isinstance(meta, dict) or meta.get("format") != ANN_FORMAT:
        return None, f'{description}: not a muse-infer ANN description (no "format": "{ANN_FORMAT}")'
    if meta.get("format_version") != ANN_FORMAT_VERSION or meta.get("kind") not in KINDS[1:]:
        return (
            None,
            f"{description}: ANN format {meta.get('format_version')!r} / kind {meta.get('kind')!r} unknown",
        )
    return meta, None


def check_ann(npy: Path, meta: dict, content: str, count: int, dim: int) -> str | None:
    """None when ``EMB.ann.faiss`` fits the index as ``meta`` describes it, else what is wrong."""
    if meta.get("content_id") != content:
        return f"{ann_meta_path(npy)}: built for other rows (the index changed since it was built)"
    if (meta.get("count"), meta.get("dim")) != (count, dim):
        return f"{ann_meta_path(npy)}: describes {meta.get('count')} rows of {meta.get('dim')}, not {count} of {dim}"
    if meta["kind"] == "flat":
        return None
    target = npy.parent / str(meta.get("index_file"))
    if not target.is_file():
        return f"{target}: ANN index file not found"
    size = target.stat().st_size
    if size != meta.get("index_bytes"):
        what = "truncated" if size < (meta.get("index_bytes") or 0) else "of another size"
        return f"{target}: {what} ({size} bytes, {meta.get('index_bytes')} expected)"
    if sample_sha256(target) != meta.get("sample_sha256"):
        return f"{target}: does not match {ann_meta_path(npy).name} (different content)"
    return None


def load_faiss(npy: Path, meta: dict, count: int, dim: int, writable: bool = False):
    """The faiss index of ``EMB.ann.faiss`` (memory-mapped where faiss allows), or IndexFileError."""
    faiss = faiss_module()
    target = npy.parent / meta["index_file"]
    flags = 0 if writable else faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
    try:
        with c_library_path(target) as name:  # faiss takes UTF-8 names only
            index = faiss.read_index(name, flags)
    except OSError as error:
        raise IndexFileError(f"{target}: cannot open the ANN index ({error.strerror or error})") from None
    except RuntimeError as error:
        raise IndexFileError(f"{target}: unreadable ANN index ({str(error).splitlines()[0]})") from None
    if index.ntotal != count or index.d != dim:
        raise IndexFileError(f"{target}: holds {index.ntotal} rows of {index.d}, the index {count} of {dim}")
    return index


def verify_ann(npy: Path, meta: dict) -> str | None:
    """The full check (whole-file hash) of ``EMB.ann.faiss``: None when it matches its description."""
    if meta["kind"] == "flat":
        return None
    target = npy.parent / meta["index_file"]
    if file_sha256(target) != meta.get("index_sha256"):
        return f"{target}: does not match {ann_meta_path(npy).name} (different SHA-256)"
    return None
