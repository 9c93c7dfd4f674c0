"""The synthetic-benchmark experiment: MUSE vs meanP and a few of the paper's ablations, each trained the
same way (same backbone architecture trained from scratch, data, steps, seed), evaluated on the test and
small-object splits. Results go to ``OUT/results.json``; docs/experiments.md's tables come from it.

    python -m muse_infer.data.synthetic DATA --seed 0 --sizes train=2000,val=100,test=100,test_small=100
    python -m training.experiments run --data DATA --out OUT --run muse --seed 0
    python -m training.experiments table --out OUT
    python -m training.experiments package-demo OUT/muse-s0/epoch_12.safetensors muse_infer/weights/demo.safetensors

Every run: model ``training/configs/synthetic-small.json`` (open_clip ViT, 2 layers, width 64, patch 32,
160 px; text width 32; CLIP weights random: no pretrained weights are used, the whole model is trained
jointly) with the run's overrides; 4 frames a video; batch 16; lr 1e-3 with CLIP at x1 (coef_lr 1: the
backbone is trained from scratch) and Mamba blocks at x10; the rest of the authors' recipe.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path

import torch

from muse_infer.atomic import atomic_path
from muse_infer.datasets import DataSpec, read_pairs
from muse_infer.loading.checkpoint import read_checkpoint, save_checkpoint
from muse_infer.model import MuseModel
from muse_infer.video import FrameSettings

from .config import TrainConfig
from .data import PairData
from .frames import default_cache_dir
from .loop import Trainer, embed_and_score

MODEL_CONFIG = str(Path(__file__).parent / "configs" / "synthetic-small.json")
RUNS = {
    "muse": {},
    "meanp": {"num_blocks": 0, "scales": []},
    "agg-frame": {"aggregation": "frame_wise"},
    "agg-spatial": {"aggregation": "spatial_wise"},
    "scales-1": {"scales": [1.0]},
    "scales-0.5-1": {"scales": [0.5, 1.0]},
    "blocks-1": {"num_blocks": 1},
    "blocks-4": {"num_blocks": 4},
}
SETTINGS = dict(epochs=12, batch_size=16, lr=1e-3, coef_lr=1.0, max_frames=4, threads=1, log_every=25)
EVAL_SPLITS = ("test", "test_small")
DEMO_NOTE = "Trained on the synthetic benchmark only (coloured shapes); not for real videos."


def run_config(
    name: str, seed: int, data: Path, out: Path, cache_dir: str | None, epochs: int
) -> TrainConfig:
    """The TrainConfig of experiment run ``name`` with ``seed``."""
    if name not in RUNS:
        raise SystemExit(f"unknown run {name!r}; choose from {sorted(RUNS)}")
    return TrainConfig(
        out_dir=str(out / f"{name}-s{seed}"),
        model=MODEL_CONFIG,
        clip_weights="random",
        model_overrides=RUNS[name],
        train={"layout": "jsonl", "annotations": str(data / "train.jsonl")},
        val={"layout": "jsonl", "annotations": str(data / "val.jsonl")},
        seed=seed,
        cache_dir=cache_dir,
        **{**SETTINGS, "epochs": epochs},
    )


def evaluate_splits(config: TrainConfig, checkpoint: Path, data: Path) -> dict:
    """Metrics of ``checkpoint`` on each evaluation split (frames through the same cache as training)."""
    model_config, tensors, _ = read_checkpoint(checkpoint)
    model = MuseModel(model_config)
    model.load_state_dict(tensors)
    model.eval()
    sampling = FrameSettings(
        config.max_frames,
        model_config.framerate,
        model_config.slice_mode,
        model_config.image_size,
        **model_config.frame_preprocess,
    )
    results = {}
    for split in EVAL_SPLITS:
        pairs = read_pairs(DataSpec("jsonl", str(data / f"{split}.jsonl")))
        split_data = PairData(pairs, sampling, config.cache_dir or default_cache_dir(), model.tokenizer, 1)
        with torch.no_grad():
            results[split] = embed_and_score(model, split_data, 32, torch.device("cpu"))
    return results


def run(name: str, seed: int, data: Path, out: Path, cache_dir: str | None, epochs: int) -> dict:
    """Train (or finish training) one run, evaluate it, and merge its record into OUT/results.json."""
    config = run_config(name, seed, data, out, cache_dir, epochs)
    began = time.perf_counter()
    trainer = Trainer(config, resume=(Path(config.out_dir) / "last_optimizer.pt").is_file())
    summary = trainer.run()
    seconds = time.perf_counter() - began
    checkpoint = Path(config.out_dir) / f"epoch_{config.epochs}.safetensors"
    record = {
        "run": name,
        "seed": seed,
        "overrides": RUNS[name],
        "epochs": config.epochs,
        "steps": summary["steps"],
        "train_wall_seconds": round(seconds, 1),
        "val": summary["val"],
        **evaluate_splits(config, checkpoint, data),
        "checkpoint": str(checkpoint),
        "command": f"python -m training.experiments run --data {data} --out {out} --run {name} --seed {seed}"
        + (f" --epochs {epochs}" if epochs != SETTINGS["epochs"] else ""),
    }
    merge_result(out / "results.json", f"{name}-s{seed}", record)
    return record


def merge_result(path: Path, key: str, record: dict) -> None:
    """Add ``record`` under ``key`` in the results file (rewritten atomically; runs in parallel
    processes take turns through a lock file)."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.is_file() else {}
        results[key] = record
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def markdown_table(results: dict, split: str, keys: list[str] | None = None) -> str:
    """One row a run: text->video and video->text R@1/R@5/MdR on ``split``."""
    lines = [
        "| run | seed | t2v R@1 | t2v R@5 | t2v MdR | v2t R@1 | v2t R@5 | v2t MdR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in keys or sorted(results):
        record = results[key]
        t2v, v2t = record[split]["t2v"], record[split]["v2t"]
        cells = [f"{t2v['R@1']:.0f}", f"{t2v['R@5']:.0f}", f"{t2v['MdR']:g}"] + [
            f"{v2t['R@1']:.0f}",
            f"{v2t['R@5']:.0f}",
            f"{v2t['MdR']:g}",
        ]
        lines.append(f"| {record['run']} | {record['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def package_demo(checkpoint: str, target: str) -> Path:
    """Store a trained checkpoint as the packaged demo model: fp16 weights (half the bytes; loading casts
    them back to the model's fp32), plus a note that it knows only the synthetic world."""
    model_config, tensors, metadata = read_checkpoint(checkpoint)
    model = MuseModel(model_config)
    model.load_state_dict(tensors)
    extra = {"intended_use": DEMO_NOTE, "trained_by": metadata.get("training", "")}
    return save_checkpoint(model.half(), target, extra_metadata=extra)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.experiments", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("run", help="train and evaluate runs")
    one.add_argument("--data", required=True, type=Path, help="synthetic benchmark folder")
    one.add_argument("--out", required=True, type=Path, help="experiment folder (runs + results.json)")
    one.add_argument("--run", nargs="+", default=["muse", "meanp"], help=f"of {sorted(RUNS)}")
    one.add_argument("--seed", type=int, nargs="+", default=[0])
    one.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    one.add_argument("--cache-dir", default=os.environ.get("MUSE_FRAME_CACHE"))
    show = commands.add_parser("table", help="print the results as markdown tables")
    show.add_argument("--out", required=True, type=Path)
    demo = commands.add_parser("package-demo", help="store a checkpoint as the packaged demo model")
    demo.add_argument("checkpoint")
    demo.add_argument("target")
    args = parser.parse_args(argv)
    if args.command == "run":
        for seed in args.seed:
            for name in args.run:
                record = run(name, seed, args.data, args.out, args.cache_dir, args.epochs)
                print(json.dumps({k: record[k] for k in ("run", "seed", "train_wall_seconds", *EVAL_SPLITS)}))
    elif args.command == "table":
        results = json.loads((args.out / "results.json").read_text())
        for split in EVAL_SPLITS:
            print(f"\n{split}\n" + markdown_table(results, split))
    else:
        path = package_demo(args.checkpoint, args.target)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
