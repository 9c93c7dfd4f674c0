"""Decode workers and encode throughput: worker start-up cost, and videos a second through the SDK.

    python benchmarks/bench_decode.py                       # this checkout
    PYTHONPATH=/path/to/other/checkout python benchmarks/bench_decode.py --json out/other.json

It imports ``muse_infer`` from wherever Python finds it, so pointing PYTHONPATH at another checkout
measures that one with the same script (how docs/benchmarks.md compares before and after a change).

1. Worker start-up: a decode worker process is started and timed until it reports "ready" (what a
   worker imports before taking work), ``--starts`` times one after another. Wall time, and the
   CPU time the worker process used (user + system, from ``RUSAGE_CHILDREN``), which a busy machine
   does not inflate the way it inflates wall time.
2. Encode throughput: ``--videos`` generated videos (``--seconds`` long, 320x240, H.264) encoded with
   ``VideoEncoder(--model).encode(paths, workers=W)`` for each W in ``--workers``: wall time, videos/s,
   and CPU seconds a video (this process and its decode workers).
Medians over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_class():
    """The decode worker class and its default settings, in either package layout."""
    try:
        from muse_infer.video.frames import FrameSettings
        from muse_infer.video.pool import _Worker
    except ImportError:  # the layout before 2026-11-30
        from muse_infer.decode_pool import DecodeSettings as FrameSettings
        from muse_infer.decode_pool import _Worker
    return _Worker, FrameSettings()


def time_worker_starts(starts: int) -> dict:
    """Wall and CPU seconds from starting a decode worker to its "ready" message."""
    worker_type, settings = worker_class()
    walls, cpus = [], []
    for _ in range(starts):
        cpu_before, began = children_cpu(), time.perf_counter()
        worker = worker_type(settings)
        message = worker.reader.recv()
        wall = time.perf_counter() - began
        assert message == ("ready",), message
        worker.stop(kill=False)
        worker.join(timeout=30)
        walls.append(wall)
        cpus.append(children_cpu() - cpu_before)  # the whole worker process, start to exit
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "starts": starts}


def write_videos(folder: Path, count: int, seconds: int) -> list[str]:
    from muse_infer.data.writer import write_video

    rng = np.random.default_rng(0)
    fps, paths = 10, []
    for number in range(count):
        base = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
        frames = np.stack([np.roll(base, shift=4 * k, axis=1) for k in range(seconds * fps)])  # (T, H, W, 3)
        path = folder / f"video_{number:03d}.mp4"
        write_video(str(path), frames, fps)
        paths.append(str(path))
    return paths


def time_encode(paths: list[str], model: str, workers: int, repeats: int, batch_size: int) -> dict:
    from muse_infer import VideoEncoder

    encoder = VideoEncoder(model, device="cpu")
    encoder.encode(paths[:batch_size], batch_size=batch_size, workers=0)  # warm-up: first model call
    walls, cpus = [], []
    for _ in range(repeats):
        cpu_before, began = own_cpu() + children_cpu(), time.perf_counter()
        embeddings = encoder.encode(paths, batch_size=batch_size, workers=workers)
        walls.append(time.perf_counter() - began)
        cpus.append(own_cpu() + children_cpu() - cpu_before)
        assert np.isfinite(embeddings).all()
    wall = statistics.median(walls)
    return {
        "workers": workers,
        "wall_s": wall,
        "videos_per_s": len(paths) / wall,
        "cpu_s_per_video": statistics.median(cpus) / len(paths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the model process")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    import muse_infer

    torch.set_num_threads(args.threads)
    report = {"muse_infer": str(Path(muse_infer.__file__).parent), "python": sys.version.split()[0]}
    report["worker_start"] = time_worker_starts(args.starts)
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as folder:
        paths = write_videos(Path(folder), args.videos, args.seconds)
        report["encode"] = [
            time_encode(paths, args.model, w, args.repeats, args.batch_size) for w in args.workers
        ]
    start = report["worker_start"]
    print(f"muse_infer from {report['muse_infer']}")
    print(
        f"worker start-up: {start['wall_s']:.2f} s wall, {start['cpu_s']:.2f} s CPU (median of {start['starts']})"
    )
    print("| workers | wall s | videos/s | CPU s a video |")
    print("|---|---|---|---|")
    for row in report["encode"]:
        print(
            f"| {row['workers']} | {row['wall_s']:.2f} | {row['videos_per_s']:.2f} | {row['cpu_s_per_video']:.3f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
