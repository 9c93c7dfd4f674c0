"""What the MUSE head costs: MUSE's ``encode_video`` against CLIP4Clip's meanP, in the same run.

    python benchmarks/bench_head.py --batch 1 8 --precisions fp32 bf16 --repeats 5 \\
        --json docs/results/head_ratio_after.json
    python benchmarks/bench_head.py --dry-run                      # tiny models, seconds

Both models are the named architectures (``--architecture`` ViT-B-32 and its ``-meanP`` twin: the same
CLIP, no pyramid, no blocks) with random seeded CLIP weights (nothing downloaded) and, for MUSE, small
random gates (a fresh block is the identity; the gates make every part compute). They encode the same
random frames (batch, 12, 3, 224, 224) with an all-real mask, on ``--threads`` torch threads (default 1).

Timing: thread CPU time (``time.thread_time``; time spent descheduled by other jobs does not count).
Each round times one ``encode_video`` of each model, the order alternating between rounds, after one
warm-up call each. Reported per (precision, batch): the medians, the throughput ratio
``median(meanP) / median(MUSE)`` (1.0 = the head is free), the median of the per-round ratios, and the
head's share ``(MUSE - meanP) / meanP``. With ``--parts``, the median time of the pyramid and of the
Mamba blocks alone (MUSE's own input, captured once) is added.

bf16: both models cast by ``muse_infer.model.precision.cast_for_inference`` (what ``--precision bf16``
runs), frames cast to bf16 by ``encode_video``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muse_infer.config import load_config  # noqa: E402
from muse_infer.loading import build_model  # noqa: E402
from muse_infer.model.aggregation import class_token_positions  # noqa: E402
from muse_infer.model.precision import cast_for_inference  # noqa: E402
from muse_infer.model.pyramid import scaled_grid  # noqa: E402


def build(name: str, precision: str) -> torch.nn.Module:
    """The architecture with random (seeded) CLIP weights, small random gates, cast to ``precision``."""
    model = build_model(load_config(name), clip_weights="random").eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.blocks:
            for p in (block.temporal_fc.weight, block.temporal_fc.bias):
                p.copy_(0.02 * torch.randn(p.shape, generator=generator))
    return cast_for_inference(model, precision)


def video_batch(model, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random preprocessed frames (batch, T, 3, S, S) float32 and an all-real mask (batch, T)."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(
        batch, config.max_frames, 3, config.image_size, config.image_size, generator=generator
    )
    return frames, torch.ones(batch, config.max_frames)


def thread_seconds(fn) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def interleaved(calls: dict, repeats: int) -> dict[str, list[float]]:
    """Thread CPU seconds of each call, ``repeats`` rounds, the order alternating between rounds."""
    for fn in calls.values():
        fn()  # warm-up
    times = {name: [] for name in calls}
    for round_index in range(repeats):
        for name in list(calls)[:: 1 if round_index % 2 == 0 else -1]:
            times[name].append(thread_seconds(calls[name]))
    return times


def class_token_rows(model, frames: int) -> slice:
    """Where the class tokens sit in the blocks' sequence (the rows the head reads)."""
    per_frame = sum(scaled_grid(model.backbone.grid_size, s) ** 2 for s in model.config.scales)
    positions = class_token_positions(model.config.aggregation, frames, per_frame)
    step = positions[1] - positions[0] if len(positions) > 1 else 1
    return slice(positions[0], positions[-1] + 1, step)


def head_parts(model, frames: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median thread CPU seconds of the pyramid and of the blocks alone, on MUSE's own inputs, run as
    ``encode_video`` runs them: one call per group of videos where the model splits the batch
    (``videos_per_call``, since 2026-12-07: one video a call on the CPU), else the whole batch.

    The pyramid runs ``forward_tokens`` on (N, G, G, C) tokens where it exists (since 2026-12-07),
    else ``forward`` on (N, C, G, G) maps; the last block ``forward_rows`` at the class tokens where it
    exists (since the later 2026-12-07 work), else the whole block: the script also times older checkouts.
    """
    sequences = []
    hook = model.blocks[0].register_forward_pre_hook(lambda m, args: sequences.append(args[0]))
    try:
        with torch.inference_mode():
            frames = frames.to(model.compute_dtype)
            model.frame_features(frames)
            tokens = model.backbone.image_tokens(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
    finally:
        hook.remove()
    side = model.backbone.grid_size
    grids = [t[:, :, 1:].reshape(-1, side, side, t.shape[-1]) for t in tokens.split(len(sequences[0]))]
    tokens_layout = hasattr(model.pyramid, "forward_tokens")

    def pyramid():
        for grid in grids:
            model.pyramid.forward_tokens(grid) if tokens_layout else model.pyramid(grid.permute(0, 3, 1, 2))

    rows = class_token_rows(model, frames.shape[1])

    def blocks():
        for sequence in sequences:
            for block in model.blocks[:-1]:
                sequence = block(sequence)
            last = model.blocks[-1]
            last.forward_rows(sequence, rows) if hasattr(last, "forward_rows") else last(sequence)

    with torch.inference_mode():
        times = interleaved({"pyramid": pyramid, "blocks": blocks}, repeats)
    return {f"{name}_s": round(statistics.median(t), 4) for name, t in times.items()}


def measure(args, precision: str, batch: int) -> dict:
    muse = build(args.architecture, precision)
    meanp = build(f"{args.architecture}-meanP", precision)
    frames, mask = video_batch(muse, batch)
    with torch.inference_mode():
        gap = (muse.encode_video(frames, mask) - meanp.encode_video(frames, mask)).abs().max().item()
        times = interleaved(
            {
                "muse": lambda: muse.encode_video(frames, mask),
                "meanP": lambda: meanp.encode_video(frames, mask),
            },
            args.repeats,
        )
    muse_s, meanp_s = statistics.median(times["muse"]), statistics.median(times["meanP"])
    row = {
        "precision": precision,
        "batch": batch,
        "muse_s": [round(t, 4) for t in times["muse"]],
        "meanP_s": [round(t, 4) for t in times["meanP"]],
        "muse_median_s": round(muse_s, 4),
        "meanP_median_s": round(meanp_s, 4),
        "throughput_ratio": round(meanp_s / muse_s, 4),
        "median_round_ratio": round(
            statistics.median(b / a for a, b in zip(times["muse"], times["meanP"], strict=True)), 4
        ),
        "head_share_of_meanP": round((muse_s - meanp_s) / meanp_s, 4),
        "embeddings_differ": gap > 0,  # a sanity check that the head changed something
    }
    if args.parts:
        row.update(head_parts(muse, frames, args.repeats))
    return row


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", default="ViT-B-32")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (>= 3 for a median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", action="store_true", help="also time the pyramid and the blocks alone")
    parser.add_argument("--dry-run", action="store_true", help="tiny models, batch 2, 2 rounds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.architecture, args.batch, args.repeats = "tiny", [2], 2
    return args


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args: argparse.Namespace, measure_case, script: str, argv=None) -> dict:
    """Every (precision, batch) case through ``measure_case(args, precision, batch)`` -> the result
    record (setup and rows), printed a row at a time and written to ``args.json``; ``script``: the
    file name the record's command names (this script's or bench_head_changes.py)."""
    torch.set_num_threads(args.threads)
    load_at_start = round(os.getloadavg()[0], 2)
    rows = []
    for precision in args.precisions:
        for batch in args.batch:
            rows.append(measure_case(args, precision, batch))
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "setup": {
            "architecture": args.architecture,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "clock": "thread CPU time",
            "repeats": args.repeats,
            "cpu": cpu_name(),
            "load_average_1min_start_end": [load_at_start, round(os.getloadavg()[0], 2)],
            "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv),
        },
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv=None) -> dict:
    return run(parse_args(argv), measure, "bench_head.py", argv)


if __name__ == "__main__":
    main()
