"""Benchmark `muse-infer duplicates`: precision/recall on a generated corpus, time and memory at 1M rows.

corpus: ``muse_infer.data.duplicates.write_duplicate_corpus`` (originals; re-encoded, rescaled, trimmed
copies; different videos sharing an intro; "siblings", the same caption drawn twice), encoded with the
packaged ``demo`` model as whole videos and as moments (``--window 4 --stride 2``). ``find_duplicates``
compares the candidate pairs once per way (frames, moments, embeddings); groups are then formed at
each threshold of a grid from the same pair scores, and scored pairwise against the corpus's groups.
The chosen default is the middle of the widest run of thresholds with the best F1 (frames).

synthetic: ``--rows`` rows of 512 as an index of moments: videos of ``--windows`` rows each
(``ClusteredRows``), 1 % of the videos with a copy (each window + noise, cosine ~0.99),
0.5 % pairs sharing only their first window (an intro), written with ``write_index`` and an ANN index
(``build_ann``, auto). ``find_duplicates(compare="moments")`` runs in a fresh process: wall and CPU
time, peak RSS, and pairwise precision/recall against the planted groups.

    python benchmarks/bench_duplicates.py corpus --dir /tmp/dups --json docs/results/duplicates_corpus.json
    python benchmarks/bench_duplicates.py synthetic --rows 1000000 --dir /tmp/dups \\
        --json docs/results/duplicates_1m.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

THRESHOLDS = [round(0.05 * n, 2) for n in range(2, 20)]
COSINES = [0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99]


def curve(found, records, thresholds) -> list[dict]:
    """Pairwise precision/recall of the groups formed at each threshold from ``found``'s pair scores."""
    from muse_infer.data.duplicates import pair_scores
    from muse_infer.index.duplicates import connected_groups

    points = []
    for threshold in thresholds:
        edges = [(p.first, p.second) for p in found.pairs if p.score >= threshold]
        groups = connected_groups(len(found.videos), edges)
        scores = pair_scores([[found.videos[v].path for v in g] for g in groups], records)
        f1 = 2 * scores["precision"] * scores["recall"] / max(1e-9, scores["precision"] + scores["recall"])
        points.append({"threshold": threshold, **scores, "f1": round(f1, 4)})
    return points


def choose(points: list[dict]) -> dict:
    """The middle of the widest run of consecutive thresholds with the best F1."""
    best = max(p["f1"] for p in points)
    runs, run = [], []
    for point in points:
        if point["f1"] == best:
            run.append(point)
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    widest = max(runs, key=len)
    return {
        "f1": best,
        "from": widest[0]["threshold"],
        "to": widest[-1]["threshold"],
        "chosen": widest[len(widest) // 2]["threshold"],
    }


def run_corpus(args) -> dict:
    from muse_infer import VideoEncoder
    from muse_infer.data.duplicates import write_duplicate_corpus
    from muse_infer.index import EmbeddingIndex
    from muse_infer.index.duplicates import find_duplicates
    from muse_infer.jobs.encode import encode_folder
    from muse_infer.video.windows import WindowSettings

    folder = Path(args.dir) / f"corpus_seed{args.seed}"
    videos = folder / "videos"
    records = write_duplicate_corpus(videos, args.originals, args.intro_pairs, args.siblings, args.seed)
    encoder = VideoEncoder("demo", device="cpu")
    out = {"videos": len(records), "kinds": {}, "indexes": {}}
    for record in records:
        out["kinds"][record["kind"]] = out["kinds"].get(record["kind"], 0) + 1
    layouts = {"whole": None, "moments": WindowSettings(4.0, 2.0)}
    for name, windows in layouts.items():
        npy = folder / f"{name}.npy"
        started = time.process_time()
        encode_folder(videos, npy, encoder, workers=0, progress=False, thumbnails=False, windows=windows)
        index = EmbeddingIndex.load(npy)
        result = {"encode_cpu_s": round(time.process_time() - started, 1), "rows": len(index)}
        for compare in ("frames", "moments", "embeddings"):
            if compare == "moments" and windows is None:
                continue
            started = time.perf_counter()
            found = find_duplicates(index, compare=compare, workers=2)
            grid = COSINES if compare == "embeddings" else THRESHOLDS
            points = curve(found, records, grid)
            result[compare] = {
                "seconds": round(time.perf_counter() - started, 2),
                "candidate_pairs": len(found.pairs),
                "curve": points,
                "best": choose(points),
            }
            at_default = [p for p in points if p["threshold"] == 0.5]
            result[compare]["at_0.5"] = at_default[0] if at_default else None
            print(name, compare, result[compare]["best"], result[compare]["at_0.5"], flush=True)
        out["indexes"][name] = result
    return out


# --- 1M synthetic rows -----------------------------------------------------------------------------


def planted_rows(rows: int, windows: int, dim: int, seed: int = 11):
    """(rows (N, C) float32 memory-mappable generator output, paths, planted groups of paths)."""
    from muse_infer.data.vectors import ClusteredRows

    videos = rows // windows
    base = ClusteredRows(videos * windows, dim, seed=0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(videos)
    copies = order[: videos // 100]  # copies of these videos ...
    sources = order[videos // 100 : videos // 50]  # ... are made of these (each copy replaces one)
    intro_a = order[videos // 50 : videos // 50 + videos // 200]
    intro_b = order[videos // 50 + videos // 200 : videos // 50 + videos // 100]
    return base, videos, copies, sources, intro_a, intro_b


def write_synthetic(npy: Path, rows: int, windows: int, dim: int) -> dict:
    """Write the planted moments index (see the module docstring); returns its ground truth."""
    from muse_infer.index import build_ann, write_index

    base, videos, copies, sources, intro_a, intro_b = planted_rows(rows, windows, dim)
    embeddings = base[:]  # (N, C) in memory: 2 GiB at 1M x 512
    rng = np.random.default_rng(5)
    groups: dict[int, list[int]] = {}
    for copy, source in zip(copies.tolist(), sources.tolist(), strict=True):  # copy := source + noise
        block = embeddings[source * windows : (source + 1) * windows]
        noise = rng.standard_normal(block.shape).astype(np.float32) / np.sqrt(dim)
        embeddings[copy * windows : (copy + 1) * windows] = block + 0.15 * noise
        groups.setdefault(source, [source]).append(copy)
    for a, b in zip(intro_a.tolist(), intro_b.tolist(), strict=True):  # b's first window := a's
        noise = rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
        embeddings[b * windows] = embeddings[a * windows] + 0.05 * noise
    paths = [f"v{video:07d}.mp4" for video in range(videos) for _ in range(windows)]
    starts = [float(2 * w) for _ in range(videos) for w in range(windows)]
    started = time.perf_counter()
    write_index(npy, embeddings, paths, start_s=starts, end_s=[s + 4.0 for s in starts])
    written = time.perf_counter() - started
    del embeddings
    meta = build_ann(npy, kind="auto", threads=2)
    truth = [[f"v{v:07d}.mp4" for v in members] for members in groups.values()]
    intros = [
        [f"v{a:07d}.mp4", f"v{b:07d}.mp4"] for a, b in zip(intro_a.tolist(), intro_b.tolist(), strict=True)
    ]
    return {
        "groups": truth,
        "intro_pairs": intros,
        "write_s": written,
        "build_s": time.perf_counter() - started - written,
        "ann": meta["kind"],
    }


PROBE = r"""
import json, resource, sys, time
from muse_infer.index import EmbeddingIndex
from muse_infer.index.duplicates import find_duplicates
started, cpu = time.perf_counter(), time.process_time()
index = EmbeddingIndex.load(sys.argv[1])
found = find_duplicates(index, compare="moments", workers=2)
groups = [[found.videos[v].path for v in g] for g in found.groups]
print(json.dumps({"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "candidate_pairs": len(found.pairs), "groups": groups, "search": index.search_method}))
"""


def run_synthetic(args) -> dict:
    from muse_infer.data.duplicates import pair_scores

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    npy = folder / f"dups_{args.rows}.npy"
    truth_file = npy.with_suffix(".truth.json")
    if not truth_file.exists():
        truth_file.write_text(json.dumps(write_synthetic(npy, args.rows, args.windows, 512)))
    truth = json.loads(truth_file.read_text())
    done = subprocess.run([sys.executable, "-c", PROBE, str(npy)], capture_output=True, text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    records = [{"path": p, "group": g} for g, members in enumerate(truth["groups"]) for p in members]
    grouped = {p for members in truth["groups"] for p in members}
    found = measured.pop("groups")
    records += [{"path": p, "group": -1 - n} for n, p in enumerate({p for g in found for p in g} - grouped)]
    scores = pair_scores([[p for p in g] for g in found], records)
    intro_grouped = sum(any(a in g and b in g for g in found) for a, b in truth["intro_pairs"])
    return {
        **{k: v for k, v in truth.items() if k not in ("groups", "intro_pairs")},
        **measured,
        "planted_groups": len(truth["groups"]),
        "found_groups": len(found),
        **scores,
        "intro_pairs": len(truth["intro_pairs"]),
        "intro_pairs_grouped": intro_grouped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["corpus", "synthetic"])
    parser.add_argument("--dir", default="/tmp/bench_duplicates")
    parser.add_argument("--json", default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--originals", type=int, default=24)
    parser.add_argument("--intro-pairs", type=int, default=4)
    parser.add_argument("--siblings", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--windows", type=int, default=5)
    args = parser.parse_args()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(),
    }
    result |= {"args": vars(args)}
    result |= run_corpus(args) if args.what == "corpus" else run_synthetic(args)
    print(json.dumps(result, indent=1)[:4000])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
