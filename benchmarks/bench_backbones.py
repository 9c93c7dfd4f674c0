"""Parameters and CPU cost per video of named models (random weights), for `muse-infer models` and
docs/choosing_a_model.md.

    python benchmarks/bench_backbones.py --models ViT-B-32 ViT-B-32-meanP ViT-L-14 ViT-L-14-meanP \\
        --threads 1 --repeats 3 --write-table          # updates muse_infer/configs/backbone_costs.json
    python benchmarks/bench_backbones.py --models tiny tiny-meanP --repeats 1   # seconds: a dry run

Each model is built with seeded random weights (its cost does not depend on them) and, for a MUSE
head, opened gates (``G`` set non-zero, so the blocks compute as a trained head's would). One call
embeds one video of ``--frames`` preprocessed frames (``MuseModel.encode_video``, fp32, batch 1);
the figure is the median over ``--repeats`` calls after one warm-up, in thread CPU time with
``--threads 1`` (so other processes on the machine do not inflate it). Parameters are counted on
PyTorch's meta device (no memory). Decoding is not included (docs/benchmarks.md measures it apart).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from muse_infer.config import load_config  # noqa: E402
from muse_infer.loading.models import build_model  # noqa: E402

TABLE = Path(__file__).resolve().parents[1] / "muse_infer" / "configs" / "backbone_costs.json"


def count_parameters(name: str) -> int:
    """Parameters of ``name``'s model (CLIP towers, pyramid, blocks), counted without allocating them."""
    from muse_infer.model import MuseModel

    with torch.device("meta"):
        model = MuseModel(load_config(name))
    return sum(p.numel() for p in model.parameters())


def cpu_seconds_per_video(name: str, frames: int, repeats: int) -> float:
    """Median thread CPU seconds of ``encode_video`` on one video of ``frames`` frames."""
    config = load_config(name)
    model = build_model(config, "random").eval()
    for block in model.blocks:  # opened gates: a trained head's cost, not the identity's
        torch.nn.init.normal_(block.temporal_fc.weight, std=0.02)
    size = config.image_size
    video = torch.randn(1, frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, frames, dtype=torch.long)
    times = []
    with torch.inference_mode():
        model.encode_video(video, mask)  # warm-up
        for _ in range(repeats):
            began = time.thread_time()
            model.encode_video(video, mask)
            times.append(time.thread_time() - began)
    del model
    gc.collect()
    return statistics.median(times)


def measure(names: list[str], frames: int, repeats: int) -> dict:
    rows = {}
    for name in names:
        config = load_config(name)
        seconds = cpu_seconds_per_video(name, frames, repeats)
        rows[name] = {
            "parameters": count_parameters(name),
            "cpu_seconds_per_video": round(seconds, 2),
            "frames": frames,
            "image_size": config.image_size,
        }
        print(f"{name}: {rows[name]}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="Write the rows here.")
    parser.add_argument("--write-table", action="store_true", help=f"Merge the rows into {TABLE}.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = measure(args.models, args.frames, args.repeats)
    conditions = {
        "command": "python benchmarks/bench_backbones.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "threads": args.threads,
        "precision": "fp32",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    if args.json:
        args.json.write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=1) + "\n")
    if args.write_table:
        table = json.loads(TABLE.read_text()) if TABLE.is_file() else {"rows": {}}
        for name, row in rows.items():
            table["rows"][name] = row | {"measured_with": conditions}
        TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
