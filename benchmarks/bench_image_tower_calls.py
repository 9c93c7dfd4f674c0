"""MUSE's ``encode_video`` on the CPU, one video a call (now) against the image tower over the whole batch.

    python benchmarks/bench_image_tower_calls.py --architecture ViT-B-32 --precision bf16 --batch 8 \
        --threads 2 --repeats 5 --json docs/results/image_tower_calls.json

"before": ``bench_head_changes.image_tower_at_once`` (the image tower over all the batch's frames in one
call, then the head one video a call: ``frame_features`` before 2026-12-08); "now": ``encode_video`` as it
runs (``model.muse.videos_per_call``, ``frames_per_image_call``). Wall time, so that ``--threads`` > 1
counts every thread's work; the two alternate, after a warm-up each; medians. Model and frames as
``bench_head.py`` (random seeded CLIP weights, opened gates, 12 frames).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_head import build, video_batch  # noqa: E402
from bench_head_changes import image_tower_at_once  # noqa: E402

from muse_infer.model.muse import MuseModel  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", default="ViT-B-32")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build(args.architecture, args.precision)
    frames, mask = video_batch(model, args.batch)

    def before():
        with mock.patch.object(MuseModel, "frame_features", image_tower_at_once):
            return model.encode_video(frames, mask)

    calls = {"before": before, "now": lambda: model.encode_video(frames, mask)}
    seconds = {name: [] for name in calls}
    with torch.inference_mode():
        for call in calls.values():
            call()  # warm-up
        for round_index in range(args.repeats):
            for name in list(calls) if round_index % 2 == 0 else list(calls)[::-1]:
                start = time.perf_counter()
                calls[name]()
                seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    record = {
        "command": " ".join(sys.argv),
        "architecture": args.architecture,
        "precision": args.precision,
        "batch": args.batch,
        "threads": args.threads,
        "wall_s": {name: [round(s, 3) for s in t] for name, t in seconds.items()},
        "median_wall_s": {name: round(s, 3) for name, s in medians.items()},
        "speedup": round(medians["before"] / medians["now"], 3),
    }
    print(json.dumps(record), flush=True)
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
