"""Training speed on the synthetic benchmark: steps/s, and the loss going down.

    python benchmarks/bench_train.py --steps 300 --batch 32 --json out/train.json   # on a GPU machine
    python benchmarks/bench_train.py --dry-run                                     # CPU, tiny, seconds

Generates the synthetic benchmark's train split (``--videos`` videos, ``muse_infer.data.synthetic``),
builds the ``training`` Trainer (ViT-B-32 with random CLIP weights and 12 frames by default; the dry run: training/configs/
synthetic-small.json, 4 frames; lr 1e-4 with CLIP at
lr x 1, the authors' schedule over ``--steps``; bf16 autocast on CUDA, as ``muse-infer train`` does) and
runs ``--steps`` of its own training step (or as many as ``--budget-s`` allows), epoch after epoch. Reports steps/s over the steps after
``--warmup``, the time a step spends assembling its batch on the host (frames read from the cache and
normalised), the peak GPU memory, and the mean loss of the first and the last 20 steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muse_infer.data.synthetic import generate_synthetic_benchmark  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import epoch_batches  # noqa: E402
from training.loop import Trainer  # noqa: E402
from training.optim import set_learning_rates  # noqa: E402

WINDOW = 20  # steps averaged at each end of the run for "loss going down"


def make_trainer(folder: Path, args) -> Trainer:
    workers = 1 if args.dry_run else os.cpu_count()  # 1: in this process, no pool to start
    generate_synthetic_benchmark(folder, seed=0, sizes={"train": args.videos}, workers=workers)
    epochs = -(-args.steps // (args.videos // args.batch))  # enough epochs for the schedule to span the run
    config = TrainConfig(
        out_dir=str(folder / "run"),
        train={"layout": "jsonl", "annotations": str(folder / "train.jsonl")},
        model=args.architecture,
        clip_weights="random",
        epochs=epochs,
        batch_size=args.batch,
        max_frames=args.max_frames,
        lr=1e-4,
        coef_lr=1.0,
        device=args.device,
        decode_workers=workers,
        cache_dir=str(folder / "cache"),
    )
    return Trainer(config)


def run_steps(trainer: Trainer, steps: int, budget_s: float) -> tuple[list[float], list[float], list[float]]:
    """Losses, seconds a step and seconds a step spent assembling its batch (host side); stops after
    ``steps`` steps or ``budget_s`` seconds."""
    cfg, losses, step_s, data_s = trainer.config, [], [], []
    original_batch = trainer.train_data.batch

    def timed_batch(indices):
        started = time.perf_counter()
        batch = original_batch(indices)
        data_s.append(time.perf_counter() - started)
        return batch

    trainer.train_data.batch = timed_batch
    trainer.wrapped.train()
    epoch, deadline = 0, time.perf_counter() + budget_s
    while len(losses) < steps and time.perf_counter() < deadline:
        epoch += 1
        for indices in epoch_batches(len(trainer.train_data), cfg.batch_size, cfg.seed, epoch):
            if len(losses) == steps or time.perf_counter() > deadline:
                break
            set_learning_rates(trainer.optimizer, trainer.step, trainer.total_steps, cfg.warmup_proportion)
            started = time.perf_counter()
            losses.append(trainer._train_step(indices))  # float(loss): waits for the step to finish
            step_s.append(time.perf_counter() - started)
            trainer.step += 1
    return losses, step_s, data_s


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--architecture", default="ViT-B-32", help="a named model or a JSON model config")
    parser.add_argument("--max-frames", type=int, default=12)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10, help="first steps not timed")
    parser.add_argument("--budget-s", type=float, default=math.inf, help="stop stepping after this long")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--videos", type=int, default=512, help="train split size")
    parser.add_argument("--dry-run", action="store_true", help="tiny model, CPU, a few steps")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.steps, args.warmup, args.batch, args.videos = "cpu", 2, 1, 2, 4
        args.architecture = str(Path(__file__).resolve().parents[1] / "training/configs/synthetic-small.json")
        args.max_frames = 2
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="muse-train-bench-") as scratch:
        started = time.perf_counter()
        trainer = make_trainer(Path(scratch), args)
        setup_s = time.perf_counter() - started
        cuda = trainer.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        losses, step_s, data_s = run_steps(trainer, args.steps, args.budget_s)
    timed = step_s[args.warmup :] or step_s
    window = min(WINDOW, max(1, len(losses) // 2))
    first, last = statistics.mean(losses[:window]), statistics.mean(losses[-window:])
    result = {
        "setup": {
            "architecture": Path(args.architecture).stem,
            "frames": args.max_frames,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "amp": "bf16 autocast" if trainer.amp else "none",
            "batch": args.batch,
            "steps": len(losses),
            "train_videos": args.videos,
            "setup_s (generate, decode to cache, build)": round(setup_s, 1),
            "dry_run": args.dry_run,
        },
        "steps_per_s": round(len(timed) / sum(timed), 2),
        "videos_per_s": round(args.batch * len(timed) / sum(timed), 1),
        "median_step_ms": round(1e3 * statistics.median(timed), 1),
        "median_batch_assembly_ms": round(1e3 * statistics.median(data_s), 1),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "loss_first": round(first, 4),
        "loss_last": round(last, 4),
        "loss_went_down": last < first,
        "loss_every_10": [round(x, 4) for x in losses[::10]],
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
