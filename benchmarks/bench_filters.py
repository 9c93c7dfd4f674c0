"""Benchmark filtered search and search by example row: recall against the exact filtered search, latency
against the unfiltered search of the same queries, in the same run.

Rows: ``ClusteredRows(N, 512)`` written with ``write_index`` (as bench_index.py), each row with a path in
one of 1,000 folders (``fNNN/``), a duration (log-uniform 5 s to 2 h) and an mtime (a year), drawn
independently of the vectors, so a filter is uncorrelated with where rows lie. Filters keep about 50 %
(``--min-duration`` at the median), 5 % (``--under`` 50 folders), 0.5 % (5 folders: just above
``filtered.EXACT_ROWS``, where the ANN search is hardest) and 0.1 % (``--under`` one folder) of the rows. Queries: ``shifted_queries`` (offset 1.2, noise 0.8, seed 1), as in bench_index.py.

For each filter: the rows it keeps and the time to compute them (once a filter: the index keeps the
selection); for each approximate mode (``selector``: faiss IDSelectorBitmap with the search effort
raised by 1/fraction; ``overfetch``: unfiltered candidates / fraction, then the allowed ones kept),
recall@10 against ``exact_selected`` (the exact filtered search of the same rows) and the thread CPU
time of one search (p50/p99, one thread), as a ratio to the unfiltered approximate search's p50 measured
just before (the same queries, the same minutes of a shared machine). ``--like-row``: the CPU time of
``index.search(RowQuery(n))`` (no model) in-process, and the wall time of ``muse-infer search
--like-row N --json`` from a new process (median of 3). ``--powers``: the selector's recall and latency
at several search-effort powers (``filtered.IVF_POWER``).

    python benchmarks/bench_filters.py --rows 1000000 --dir /tmp/bench_filters \\
        --json docs/results/filters_bench_2026-12-07.json
    python benchmarks/bench_filters.py --rows 1000000 --dir /tmp/bench_filters --queries 150 \\
        --powers 0.5,0.75,1 --json docs/results/filters_powers_2026-12-07.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

FOLDERS = 1000
YEAR_NS = 365 * 86400 * 10**9
START_NS = 1_700_000_000 * 10**9


def row_records(count: int, seed: int = 3) -> dict:
    """Paths (1,000 folders), durations and mtimes drawn independently of the vectors."""
    rng = np.random.default_rng(seed)
    folders = rng.integers(0, FOLDERS, count)
    paths = [f"f{folder:03d}/v{row:07d}.mp4" for row, folder in enumerate(folders.tolist())]
    durations = np.exp(rng.uniform(np.log(5), np.log(7200), count))
    mtimes = START_NS + rng.integers(0, YEAR_NS, count)
    return {"paths": paths, "durations": durations, "mtimes": mtimes}


def build(npy: Path, count: int, dim: int, threads: int) -> dict:
    from muse_infer.data.vectors import ClusteredRows
    from muse_infer.index import build_ann, write_index

    if npy.exists():
        return {"reused": True}
    records = row_records(count)
    started = time.perf_counter()
    write_index(
        npy,
        ClusteredRows(count, dim, seed=0),
        records["paths"],
        sizes=[1000] * count,
        mtimes_ns=records["mtimes"].tolist(),
        facts={"duration_s": records["durations"].tolist()},
    )
    written = time.perf_counter() - started
    meta = build_ann(npy, kind="auto", threads=threads)
    return {"write_s": written, "build_s": time.perf_counter() - started - written, "kind": meta["kind"]}


def filters_to_measure(index) -> dict:
    from muse_infer.index.arrow_columns import numpy_values
    from muse_infer.index.filters import SearchFilter

    durations = numpy_values(index.row_column("duration_s"), np.float64, np.nan)
    return {
        "50%": SearchFilter.make(min_duration=float(np.median(durations))),
        "5%": SearchFilter.make(under=[f"f{n:03d}" for n in range(0, FOLDERS, 20)]),
        "1%": SearchFilter.make(under=[f"f{n:03d}" for n in range(0, FOLDERS, 100)]),
        "0.5%": SearchFilter.make(under=[f"f{n:03d}" for n in range(0, FOLDERS, 200)]),
        "0.1%": SearchFilter.make(under=["f500"]),
    }


def timed_search(function, queries) -> tuple[list, list[float]]:
    results, times = [], []
    for query in queries:
        started = time.thread_time()
        results.append(function(query))
        times.append(time.thread_time() - started)
    return results, times


def summary(times: list[float]) -> dict:
    values = np.asarray(times) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


def recall(found: list, truth: list) -> float:
    hits = sum(len(np.intersect1d(f[0], t[0])) for f, t in zip(found, truth, strict=True))
    return hits / max(1, sum(len(t[0]) for t in truth))


def measure_filters(index, queries: np.ndarray) -> dict:
    from muse_infer.index import filtered

    faiss_index = index._faiss_index()
    warm = queries[:20]
    for query in warm:
        index.search_rows(query[None], 10)
    _, plain = timed_search(lambda q: index.search_rows(q[None], 10)[0], queries)
    out = {"unfiltered": summary(plain), "filters": {}}
    for name, filters in filters_to_measure(index).items():
        _, plain = timed_search(lambda q: index.search_rows(q[None], 10)[0], queries)  # the same minutes
        base = summary(plain)["p50_ms"]
        started = time.perf_counter()
        selection = index.selection(filters)
        built = time.perf_counter() - started
        truth = [
            filtered.exact_selected(index.embeddings, q[None], 10, selection, index.inverse_norms)[0]
            for q in queries
        ]
        entry = {"filter": filters.describe(), "kept_rows": selection.count, "selection_s": built}
        entry["unfiltered_p50_ms"] = base
        for mode in filtered.MODES:

            def search(query, mode=mode, selection=selection):
                return filtered.approximate_selected(
                    faiss_index, index.ann_meta, index._scattered, query, 10, selection, None, mode
                )

            for query in warm:
                search(query)
            found, times = timed_search(search, queries)
            entry[mode] = {"recall@10": recall(found, truth), **summary(times)}
            entry[mode]["x_unfiltered_p50"] = entry[mode]["p50_ms"] / base
        out["filters"][name] = entry
        print(json.dumps({name: entry}), flush=True)
    return out


def sweep_powers(index, queries: np.ndarray, powers: list[float]) -> dict:
    """Recall and p50 of the selector mode at each search-effort power (``filtered.IVF_POWER`` /
    ``HNSW_POWER``): the measurement behind the power chosen."""
    from muse_infer.index import filtered

    faiss_index, saved = index._faiss_index(), (filtered.IVF_POWER, filtered.HNSW_POWER)
    out = {}
    try:
        for name, filters in filters_to_measure(index).items():
            selection = index.selection(filters)
            if selection.count <= filtered.EXACT_ROWS:
                continue
            truth = [filtered.exact_selected(index.embeddings, q[None], 10, selection)[0] for q in queries]
            for power in powers:
                filtered.IVF_POWER = filtered.HNSW_POWER = power

                def search(query, selection=selection):
                    return filtered.approximate_selected(
                        faiss_index, index.ann_meta, index._scattered, query, 10, selection
                    )

                found, times = timed_search(search, queries)
                out[f"{name} power {power}"] = {"recall@10": recall(found, truth), **summary(times)}
                print(json.dumps({f"{name} power {power}": out[f"{name} power {power}"]}), flush=True)
    finally:
        filtered.IVF_POWER, filtered.HNSW_POWER = saved
    return out


def measure_like_row(index, npy: Path, rows: list[int]) -> dict:
    from muse_infer.index import RowQuery

    _, times = timed_search(lambda row: index.search(RowQuery(row), 10), rows)
    walls = []
    for row in rows[:3]:
        started = time.perf_counter()
        command = [sys.executable, "-m", "muse_infer", "search", "--like-row", str(row), "--index", str(npy)]
        subprocess.run([*command, "--json"], check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    return {"in_process": summary(times), "cli_wall_median_s": statistics.median(walls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dir", default="/tmp/bench_filters")
    parser.add_argument("--threads", type=int, default=2, help="threads for the ANN build")
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip-like-row", action="store_true")
    parser.add_argument("--powers", default=None, help="e.g. 0.5,0.75,1: sweep the search-effort power only")
    args = parser.parse_args()
    import faiss

    from muse_infer.data.vectors import shifted_queries
    from muse_infer.index import EmbeddingIndex

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    npy = folder / f"rows_{args.rows}.npy"
    made = build(npy, args.rows, args.dim, args.threads)
    faiss.omp_set_num_threads(1)
    index = EmbeddingIndex.load(npy)
    queries = shifted_queries(index.embeddings, args.queries, offset=1.2, noise=0.8, seed=1)
    if args.powers:
        sweep = sweep_powers(index, queries, [float(p) for p in args.powers.split(",")])
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": args.rows, "powers": sweep}, indent=1) + "\n")
        return
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "rows": args.rows,
        "dim": args.dim,
        "queries": args.queries,
        "index": made,
        "ann": {"kind": index.ann_meta["kind"], "search": index.ann_meta["search"]},
        **measure_filters(index, queries),
    }
    if not args.skip_like_row:
        result["like_row"] = measure_like_row(index, npy, list(range(0, args.rows, max(1, args.rows // 200))))
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
