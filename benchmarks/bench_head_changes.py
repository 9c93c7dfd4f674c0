"""What each of the head's inference shortcuts is worth, in the same run: MUSE's ``encode_video`` as the
model runs it, and with one shortcut turned off, against CLIP4Clip's meanP.

    python benchmarks/bench_head_changes.py --batch 1 8 --precisions fp32 bf16 --repeats 5 \\
        --json docs/results/head_changes.json
    python benchmarks/bench_head_changes.py --dry-run              # tiny models, seconds

Variants of MUSE (the same model object; a shortcut is turned off only while its call runs):
- ``all``: as ``encode_video`` runs;
- ``no class-token rows``: the last block runs on every step and is sliced (``forward_rows``'s own
  fallback, what a gradient or a tracer gets) instead of ``BiMamba.mix_rows`` at the class tokens;
- ``no Winograd`` (where the precision takes it: bf16, and fp32 on an Intel CPU with AVX-512,
  ``ops.winograd.winograd_dtypes``): the pyramid's 3x3 convolutions as the Conv2d modules on the tokens'
  channels-last view instead of ``muse::conv3x3_winograd``;
- ``LayerNorms cast`` (bf16): the kept-float32 LayerNorms take their input cast to float32 and their
  output cast back (what a traced graph holds) instead of reading bf16 themselves
  (``model.precision.layer_norm_reads_reduced``). CLIP's LayerNorms change too, so meanP is also timed
  with it (``meanP, LayerNorms cast``), and ``same_switch_ratio`` compares the two switched calls;
- ``image tower at once`` (batch > 1): the image tower takes all the batch's frames in one call, the
  head one video a call (``frame_features`` as before 2026-12-08, ``image_tower_at_once``), instead
  of one video a call through both; meanP too (``meanP, image tower at once``).
The scan kernel's exp2 is compiled in: compare two builds with ``bench_scan.py`` instead.

Models, frames and timing as ``bench_head.py`` (random seeded CLIP weights, opened gates, 12 frames,
one thread, thread CPU time, each round one call of each variant and of meanP, the order alternating,
after a warm-up). Reported per (precision, batch): each variant's median seconds a call and its
throughput ratio median(meanP) / median(variant).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_head import build, interleaved, run, video_batch  # noqa: E402

from muse_infer.model import muse as muse_module  # noqa: E402
from muse_infer.model import precision as precision_module  # noqa: E402
from muse_infer.model import pyramid as pyramid_module  # noqa: E402
from muse_infer.model.bimamba import ResMambaBlock  # noqa: E402
from muse_infer.ops.winograd import winograd_dtypes  # noqa: E402


def whole_block_sliced(block: ResMambaBlock, x: torch.Tensor, rows: slice) -> torch.Tensor:
    return block(x)[:, rows]


SWITCHES = {
    "all": contextlib.nullcontext,
    "no class-token rows": lambda: mock.patch.object(ResMambaBlock, "forward_rows", whole_block_sliced),
    "no Winograd": lambda: mock.patch.object(pyramid_module, "winograd_applies", lambda conv, x: False),
    "LayerNorms cast": lambda: mock.patch.object(
        precision_module, "layer_norm_reads_reduced", lambda x: False
    ),
    "image tower at once": lambda: mock.patch.object(
        muse_module.MuseModel, "frame_features", image_tower_at_once
    ),
}
ALSO_MEANP = ("LayerNorms cast", "image tower at once")  # switches that change meanP too: timed on it as well


def image_tower_at_once(model, frames: torch.Tensor) -> torch.Tensor:
    """``frame_features`` before 2026-12-08: the image tower over all the frames of the batch in one
    call, then the head one video a call. frames (B, T, 3, H, W) -> (B, T, C)."""
    batch, length = frames.shape[:2]
    if model.pyramid is None:
        return model.backbone.image_features(frames.flatten(0, 1)).unflatten(0, (batch, length))
    tokens = model.backbone.image_tokens(frames.flatten(0, 1)).unflatten(0, (batch, length))
    return torch.cat([model.head_features(part) for part in tokens.split(1)])


def variant_call(model, frames, mask, switch):
    def call():
        with switch():
            return model.encode_video(frames, mask)

    return call


def measure(args, precision: str, batch: int) -> dict:
    muse = build(args.architecture, precision)
    meanp = build(f"{args.architecture}-meanP", precision)
    frames, mask = video_batch(muse, batch)
    takes_winograd = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision] in winograd_dtypes()
    names = [n for n in SWITCHES if n != "no Winograd" or takes_winograd]
    if precision == "fp32":  # no LayerNorm is cast in fp32
        names.remove("LayerNorms cast")
    if batch == 1:  # one video a call either way
        names.remove("image tower at once")
    calls = {name: variant_call(muse, frames, mask, SWITCHES[name]) for name in names}
    calls["meanP"] = lambda: meanp.encode_video(frames, mask)
    for name in ALSO_MEANP:
        if name in names:
            calls[f"meanP, {name}"] = variant_call(meanp, frames, mask, SWITCHES[name])
    with torch.inference_mode():
        outputs = {name: calls[name]().float() for name in names}
        times = interleaved(calls, args.repeats)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "precision": precision,
        "batch": batch,
        "seconds": {name: [round(s, 4) for s in t] for name, t in times.items()},
        "median_s": {name: round(s, 4) for name, s in medians.items()},
        "throughput_ratio": {name: round(medians["meanP"] / medians[name], 4) for name in names},
        "same_switch_ratio": {
            name: round(medians[f"meanP, {name}"] / medians[name], 4)
            for name in names
            if f"meanP, {name}" in medians
        },
        "max_abs_diff_to_all": {
            name: (outputs[name] - outputs["all"]).abs().max().item() for name in names if name != "all"
        },
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", default="ViT-B-32")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (>= 3 for a median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true", help="tiny models, batch 2, 2 rounds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.architecture, args.batch, args.repeats = "tiny", [2], 2
    return args


def main(argv=None) -> dict:
    return run(parse_args(argv), measure, "bench_head_changes.py", argv)


if __name__ == "__main__":
    main()
