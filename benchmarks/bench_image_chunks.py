"""The image tower's CPU cost a frame by how many frames it takes in one call.

    python benchmarks/bench_image_chunks.py --architecture ViT-B-32 --precisions bf16 fp32 \
        --frames 96 --chunks 6 12 24 48 96 --repeats 3 --json docs/results/image_chunks_b32.json

What ``model.muse.IMAGE_TOKENS_PER_CPU_CALL`` is chosen from: ``--frames`` random frames through the
architecture's ``backbone.image_tokens`` (random seeded CLIP weights, cast as ``--precision`` runs)
in calls of each ``--chunks`` size in turn, one thread, thread CPU time, the order of the sizes
alternating between rounds; reported: the median milliseconds a frame for each size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_head import build  # noqa: E402


def measure(architecture: str, precision: str, frames: int, chunks: list[int], repeats: int) -> dict:
    model = build(architecture, precision)
    images = torch.randn(frames, 3, model.config.image_size, model.config.image_size).to(model.compute_dtype)

    def run(size: int) -> None:
        for chunk in images.split(size):
            model.backbone.image_tokens(chunk)

    seconds = {size: [] for size in chunks}
    with torch.inference_mode():
        for size in chunks:
            run(size)  # warm-up
        for round_index in range(repeats):
            for size in chunks if round_index % 2 == 0 else chunks[::-1]:
                start = time.thread_time()
                run(size)
                seconds[size].append(time.thread_time() - start)
    grid = model.backbone.grid_size
    return {
        "architecture": architecture,
        "precision": precision,
        "tokens_a_frame": grid * grid + 1,
        "ms_a_frame": {
            str(size): round(1e3 * statistics.median(s) / frames, 2) for size, s in seconds.items()
        },
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", default="ViT-B-32")
    parser.add_argument("--precisions", nargs="+", default=["bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--chunks", type=int, nargs="+", default=[6, 12, 24, 48, 96])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for precision in args.precisions:
        rows.append(measure(args.architecture, precision, args.frames, args.chunks, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        setup = {"torch": torch.__version__, "threads": args.threads, "command": " ".join(sys.argv)}
        args.json.write_text(json.dumps({"setup": setup, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
