"""Search start-up: `muse-infer search` wall time against `python -c "import torch"`, in the same run.

    python benchmarks/bench_search_startup.py --rows 1000000 --repeats 5 --json docs/results/search_startup.json
    python benchmarks/bench_search_startup.py --before ../before   # also a checkout of an older commit

Builds (once, in --dir) an index of --rows random unit rows recorded as made by ViT-B-32 with random
CLIP weights (the model is never loaded to write it) and, unless --no-ann, its approximate index
(`index build`, auto kind); then runs, alternately, --repeats times: `python -c "import torch"` and
`muse-infer search QUERY --index EMB.npy` (a fresh process each, files cached by the runs before).
Prints medians and the difference (search minus import torch), the issue's goal being <= 1.0 s.
With --before DIR (a checkout of another commit, e.g. `git worktree add ../before cb2fb17`, its
kernel built or copied in), that checkout's search runs in the same rounds (PYTHONPATH=DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def build(folder: Path, rows: int, ann: bool) -> Path:
    from muse_infer import ModelSpec
    from muse_infer.index import build_ann, write_index

    out = folder / "emb.npy"
    if out.exists():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    blocks = (
        rng.standard_normal((min(100_000, rows - start), 512)).astype(np.float32)
        for start in range(0, rows, 100_000)
    )
    embeddings = np.concatenate(list(blocks))
    spec = ModelSpec.resolve("ViT-B-32", clip_weights="random")
    write_index(out, embeddings, [f"v{i:07d}.mp4" for i in range(rows)], model=spec, root=str(folder))
    if ann:
        build_ann(out, kind="auto")
    return out


def wall(command: list[str], cwd: Path, env: dict | None = None) -> float:
    """Wall seconds of ``command`` run in ``cwd``: not the checkout, whose folder ``python -m`` would put
    ahead of PYTHONPATH (so --before would time this checkout twice)."""
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stderr}")
    return time.perf_counter() - started


def alternating(variants: dict, repeats: int, cwd: Path) -> dict[str, list[float]]:
    """Wall seconds of each variant, {name: (command, env or None)}: one warm-up run each (files
    cached, as every later run finds them), then ``repeats`` rounds running every variant in turn."""
    for command, env in variants.values():
        wall(command, cwd, env)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (command, env) in variants.items():
            times[name].append(wall(command, cwd, env))
    return times


def machine() -> dict:
    """What a JSON record says of where it ran."""
    return {"machine": platform.platform(), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("out/search_startup"))
    parser.add_argument("--no-ann", action="store_true")
    parser.add_argument("--query", default="a dog catches a frisbee")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--before", type=Path, default=None, help="a checkout of an older commit")
    args = parser.parse_args()
    index = build(args.dir, args.rows, not args.no_ann).resolve()
    cwd = index.parent
    torch_only = [sys.executable, "-c", "import torch"]
    search = [sys.executable, "-m", "muse_infer", "search", args.query, "--index", str(index)]
    variants = {"import torch": (torch_only, None), "search": (search, None)}
    before_env = None
    if args.before:
        before_env = {**os.environ, "PYTHONPATH": str(args.before.resolve())}
        variants["search (before)"] = (search, before_env)
    times = alternating(variants, args.repeats, cwd)  # the warm-up caches the files, as the goal assumes
    medians = {name: statistics.median(values) for name, values in times.items()}
    extra = medians["search"] - medians["import torch"]
    print(f"{args.rows} rows ({'with' if not args.no_ann else 'without'} ANN), medians of {args.repeats}:")
    for name, value in medians.items():
        print(f"  {name:<13} {value:.2f} s   (runs: {', '.join(f'{v:.2f}' for v in times[name])})")
    print(f"  search - import torch = {extra:+.2f} s (goal <= 1.0 s)")
    if before_env:
        print(
            f"  before: search - import torch = {medians['search (before)'] - medians['import torch']:+.2f} s"
        )
    if args.json:
        record = {
            "rows": args.rows,
            "ann": not args.no_ann,
            "repeats": args.repeats,
            "times": times,
            "medians": medians,
            "search_minus_import_torch": extra,
            "before": str(args.before) if args.before else None,
            **machine(),
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
