"""Benchmark the embedding index: exact scan vs the approximate kinds, recall against latency.

Rows: a mixture on the sphere (``muse_infer.data.vectors.ClusteredRows``: a shared mean direction,
uneven clusters), written with the public ``write_index``. Queries: a shifted distribution (a shared
offset plus noise, as text queries sit apart from video rows: ``shifted_queries``, offset 1.2, noise
0.8, seed 1), which is not the one ``build_ann`` tunes on (offset 1.0, noise 1.0, seed 7).

For each size: exact top-10 of every query (ground truth); the exact scan's latency on one thread;
for each kind: build time, tuned search settings, recall@10 and p50/p99 latency on one thread at
those settings and along a sweep (the recall-latency curve), file sizes, and the memory of a fresh
process that opens the index and searches (RssAnon: private memory; RssFile: mapped file pages);
opening time in a fresh process; with ``--model``, `muse-infer search` from a cold process against
the model's load time. Latency is the thread's CPU time (``time.thread_time``) of
``EmbeddingIndex.search_rows`` for one query (faiss search + exact re-ranking + reading the rows), so a
busy shared machine does not inflate it; wall time is recorded too.

    python benchmarks/bench_index.py --rows 100000,1000000 --json docs/results/index_bench.json \\
        --plot docs/index_recall_latency.png --model ViT-B-32
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS on one thread: the flat scan and re-ranking
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HNSW_SWEEP = [
    {"ef_search": ef, "candidates": 40} for ef in (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
]
IVF_SWEEP = [
    {"nprobe": p, "candidates": c} for p in (4, 8, 16, 32, 64, 128) for c in (100, 200, 400, 800, 1600)
]

PROBE = r"""
import json, sys, time
def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith("Rss"))
    return {k: int(v.split()[0]) / 1024 for k, v in fields.items()}
started = time.perf_counter()
import numpy as np
from muse_infer.index import EmbeddingIndex
imported, before = time.perf_counter(), rss()
index = EmbeddingIndex.load(sys.argv[1])
opened, after_open = time.perf_counter(), rss()
index._faiss_index()
ann_loaded, after_ann = time.perf_counter(), rss()
rng = np.random.default_rng(5)
queries = rng.standard_normal((int(sys.argv[2]), index.dim)).astype(np.float32)
index.search(queries[0], 10)
first = time.perf_counter()
for query in queries[1:]:
    index.search(query, 10)
done, after_search = time.perf_counter(), rss()
print(json.dumps({
    "import_s": imported - started, "open_s": opened - imported, "ann_load_s": ann_loaded - opened,
    "first_query_s": first - ann_loaded, "search_method": index.search_method,
    "rss_mb_before": before, "rss_mb_open": after_open, "rss_mb_ann": after_ann, "rss_mb_searched": after_search,
}))
"""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure(index, queries: np.ndarray, truth: list[np.ndarray], exact: bool = False) -> dict:
    """Recall@10 against ``truth`` and per-query latency (thread CPU and wall, ms) of ``search_rows``."""
    cpu, wall, hits = [], [], 0
    for query, expected in zip(queries, truth, strict=True):
        started_cpu, started_wall = time.thread_time(), time.perf_counter()
        rows, _ = index.search_rows(query[None], 10, exact=exact)[0]
        cpu.append((time.thread_time() - started_cpu) * 1e3)
        wall.append((time.perf_counter() - started_wall) * 1e3)
        hits += len(np.intersect1d(rows, expected))
    return {
        "recall_at_10": hits / (10 * len(queries)),
        "p50_ms": percentile(cpu, 50),
        "p99_ms": percentile(cpu, 99),
        "mean_ms": float(np.mean(cpu)),
        "wall_p50_ms": percentile(wall, 50),
        "wall_p99_ms": percentile(wall, 99),
        "queries": len(queries),
    }


def probe(npy: Path, queries: int = 200, cold: bool = False) -> dict:
    """Open + search in a fresh process: times and memory (see PROBE); cold: the index's files dropped
    from the page cache first."""
    if cold:
        drop_cached(npy)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(npy), str(queries)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_rows(npy: Path, count: int, dim: int, model) -> float:
    """Write the synthetic index with the public ``write_index``; returns seconds."""
    from muse_infer.data.vectors import ClusteredRows
    from muse_infer.index import write_index

    paths = [f"videos/{i // 1000:05d}/clip_{i:08d}.mp4" for i in range(count)]
    sizes = np.random.default_rng(3).integers(10**5, 10**9, count)
    started = time.perf_counter()
    write_index(npy, ClusteredRows(count, dim, seed=0), paths, model=model, root="/data", sizes=sizes)
    return time.perf_counter() - started


def file_sizes(npy: Path) -> dict:
    names = [npy, npy.with_suffix(".rows.parquet"), npy.with_suffix(".json"), npy.with_suffix(".ann.faiss")]
    return {p.name: p.stat().st_size for p in names if p.exists()}


def bench_kind(npy: Path, kind: str, queries, truth, threads: int) -> dict:
    import faiss

    from muse_infer.index import EmbeddingIndex, build_ann

    started, started_cpu, load_before = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    meta = build_ann(npy, kind=kind, threads=threads)
    build_wall, build_cpu = time.perf_counter() - started, time.process_time() - started_cpu
    faiss.omp_set_num_threads(1)
    tuned, sweep = sweep_settings(EmbeddingIndex.load(npy, ann=True), queries, truth)
    gc.collect()  # the index is closed: its pages are no longer mapped here, so the cold probe can drop them
    return {
        "kind": kind,
        "params": meta["params"],
        "search": meta["search"],
        "tuning": {k: v for k, v in meta["tuning"].items() if k != "tried"},
        "build_s": meta["build_seconds"],
        "build_and_tune_wall_s": build_wall,
        "build_and_tune_cpu_s": build_cpu,
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "estimated_bytes": meta["estimated_bytes"],
        "index_bytes": meta["index_bytes"],
        "tuned": tuned,
        "sweep": sweep,
        "process": probe(npy),
        "process_cold_files": probe(npy, cold=True),
        "files": file_sizes(npy),
    }


def sweep_settings(index, queries, truth) -> tuple[dict, list[dict]]:
    """(the tuned settings' measures, the measures of each swept setting) of an index with its ANN index."""
    meta = index.ann_meta
    measure(index, queries[:50], truth[:50])  # warm: pages of the ANN file and of re-ranked rows
    tuned = measure(index, queries, truth)
    sweep = []
    for setting in HNSW_SWEEP if meta["kind"] == "hnsw" else IVF_SWEEP:
        index.ann_meta = {**meta, "search": setting}
        sweep.append({**setting, **measure(index, queries, truth)})
    return tuned, sweep


def drop_cached(npy: Path) -> None:
    """Drop this index's own files from the page cache (POSIX_FADV_DONTNEED: no other file is touched)."""
    for path in npy.parent.glob(npy.stem + ".*"):
        with open(path, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def cli_cold(npy: Path, model: str, repeats: int = 5) -> dict:
    """`muse-infer search` from a cold process against a process that only loads the model, and one
    that loads it and encodes the query (median wall seconds of ``repeats``, interleaved); the search
    also with the index's files dropped from the page cache first (a cold disk too)."""
    query = "a dog runs on a beach"
    search = [sys.executable, "-m", "muse_infer.cli", "search", query, "--index", str(npy), "--json"]
    load = (
        f"from muse_infer import TextEncoder; e = TextEncoder({model!r}, clip_weights='random', device='cpu')"
    )
    runs = {"search_s": search, "model_load_s": [sys.executable, "-c", load]}
    runs["model_load_and_encode_s"] = [sys.executable, "-c", load + f"; e.encode([{query!r}])"]
    runs["search_cold_files_s"] = search
    times, methods = {name: [] for name in runs}, set()
    for _ in range(repeats):
        for name, command in runs.items():
            if name == "search_cold_files_s":
                drop_cached(npy)
            started = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            times[name].append(time.perf_counter() - started)
            if name.startswith("search"):
                methods |= {row["search"] for row in json.loads(result.stdout)}
    out = {name: statistics.median(values) for name, values in times.items()}
    out["search_minus_model_load_s"] = out["search_s"] - out["model_load_s"]
    out["search_minus_model_and_encode_s"] = out["search_s"] - out["model_load_and_encode_s"]
    return out | {"search": sorted(methods), "repeats": repeats, "all_s": times}


def exact_baseline(npy: Path, args) -> tuple[np.ndarray, list[np.ndarray], dict]:
    """(shifted queries, their exact top-10 rows, {"truth_s", "flat"}): the exact scan measured."""
    from muse_infer.data.vectors import shifted_queries
    from muse_infer.index import EmbeddingIndex, exact_search

    index = EmbeddingIndex.load(npy, ann=False)
    queries = shifted_queries(index.embeddings, args.queries, offset=1.2, noise=0.8, seed=1)
    started = time.perf_counter()
    truth = [rows for rows, _ in exact_search(index.embeddings, queries, 10, matmul=True)]
    truth_s = time.perf_counter() - started
    flat = measure(index, queries[: args.flat_queries], truth[: args.flat_queries], exact=True)
    return queries, truth, {"truth_s": truth_s, "flat": flat}


def bench_size(count: int, args, model) -> dict:
    folder = Path(args.workdir) / str(count)
    folder.mkdir(parents=True, exist_ok=True)
    npy = folder / "emb.npy"
    write_s = write_rows(npy, count, args.dim, model)
    queries, truth, result = exact_baseline(npy, args)
    result = {"rows": count, "dim": args.dim, "write_s": write_s, **result, "kinds": []}
    gc.collect()  # the exact index is closed (see bench_kind)
    for kind in args.kinds.split(","):
        result["kinds"].append(bench_kind(npy, kind, queries, truth, args.build_threads))
        print(
            json.dumps({"rows": count, **{k: v for k, v in result["kinds"][-1].items() if k != "sweep"}}),
            flush=True,
        )
        if model is not None and kind == "hnsw":
            result["cli_cold_hnsw"] = cli_cold(npy, args.model)
    if model is not None:
        result["cli_cold_last_kind"] = cli_cold(npy, args.model)
    result["files"] = file_sizes(npy)
    if not args.keep:
        shutil.rmtree(folder)
    return result


def projection(sizes: list[dict], target: int) -> dict:
    """Disk and memory at ``target`` rows from the largest measured size's per-row costs."""
    from muse_infer.index import plan_ann

    largest = max(sizes, key=lambda s: s["rows"])
    rows, dim = largest["rows"], largest["dim"]
    out = {
        "rows": target,
        "from_rows": rows,
        "auto_choice_4G": plan_ann(target, dim, 4 << 30).kind,
        "kinds": {},
    }
    npy_row = largest["files"]["emb.npy"] / rows
    meta_row = largest["files"]["emb.rows.parquet"] / rows
    for kind in largest["kinds"]:
        proc = kind["process"]
        anon = (proc["rss_mb_searched"]["RssAnon"] - proc["rss_mb_before"]["RssAnon"]) * 2**20 / rows
        out["kinds"][kind["kind"]] = {
            "disk_gib": target * (npy_row + meta_row + kind["index_bytes"] / rows) / 2**30,
            "ann_file_gib": target * kind["index_bytes"] / rows / 2**30,
            "private_memory_gib": target * anon / 2**30,
            "build_hours_linear": target * kind["build_s"] / rows / 3600,
        }
    return out


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"]
    figure, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.6), squeeze=False)
    colours = {"hnsw": "tab:blue", "ivf-pq": "tab:orange"}
    for axis, size in zip(axes[0], sizes, strict=True):
        for kind in size["kinds"]:
            points = sorted((p["p50_ms"], p["recall_at_10"]) for p in kind["sweep"])
            front, best = [], -1.0
            for latency, recall in points:  # the Pareto front: best recall at each latency
                if recall > best:
                    front.append((latency, recall))
                    best = recall
            colour = colours.get(kind["kind"], "tab:green")
            axis.scatter(*zip(*points, strict=True), s=8, color=colour, alpha=0.25)
            axis.plot(
                *zip(*front, strict=True),
                "-o",
                ms=3,
                color=colour,
                label=f"{kind['kind']} ({kind['params']['factory']})",
            )
            tuned = kind["tuned"]
            axis.plot(
                tuned["p50_ms"], tuned["recall_at_10"], "*", ms=14, color=colour, markeredgecolor="black"
            )
        flat = size["flat"]
        axis.plot(flat["p50_ms"], flat["recall_at_10"], "s", ms=8, color="black", label="flat (exact scan)")
        axis.axhline(0.95, color="grey", lw=0.8, ls="--")
        axis.axvline(5.0, color="grey", lw=0.8, ls=":")
        axis.set_xscale("log")
        axis.set_xlabel("p50 latency a query, ms (one thread, CPU time; log scale)")
        axis.set_ylabel("recall@10 vs exact search")
        axis.set_title(f"{size['rows']:,} rows x {size['dim']}: shifted queries")
        axis.set_ylim(min(0.5, axis.get_ylim()[0]), 1.01)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    figure.suptitle(
        "Recall@10 vs latency (star: the settings index build tuned; dashed: 0.95; dotted: 5 ms)", fontsize=10
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="100000,1000000", help="Comma-separated row counts.")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000, help="Shifted queries a size (ANN kinds).")
    parser.add_argument("--flat-queries", type=int, default=30, help="Queries timed on the exact scan.")
    parser.add_argument("--kinds", default="hnsw,ivf-pq")
    parser.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--model",
        default=None,
        help="Record this model (random CLIP weights) and time a cold `muse-infer search`.",
    )
    parser.add_argument("--workdir", default="/tmp/muse_bench_index")
    parser.add_argument("--keep", action="store_true", help="Keep the written indexes.")
    parser.add_argument("--project", type=int, default=10_000_000, help="Rows to project disk and memory to.")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    model = None
    if args.model:
        import torch

        from muse_infer import TextEncoder

        torch.set_num_threads(1)
        model = TextEncoder(args.model, clip_weights="random", device="cpu")
    import faiss

    results = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
        },
        "sizes": [bench_size(int(n), args, model) for n in args.rows.split(",")],
    }
    results["projection"] = projection(results["sizes"], args.project)
    text = json.dumps(results, indent=1)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    if args.plot:
        plot(results, args.plot)
    print(text)


if __name__ == "__main__":
    main()
