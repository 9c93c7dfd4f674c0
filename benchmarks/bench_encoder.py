"""The video encoder's speed by precision, batch, input path and backbone compilation (model only).

    python benchmarks/bench_encoder.py --device cpu --threads 1 --batch 1 --repeats 3 \\
        --variants fp32 bf16 bf16-autocast fp16 --json out/encoder_cpu.json      # docs: "Precision"
    python benchmarks/bench_encoder.py --device cuda --batch 8 64 --json out/encoder_gpu.json
    python benchmarks/bench_encoder.py --dry-run                                  # tiny model, seconds

The ViT-B-32 MUSE architecture (12 frames of 224x224, 4 blocks, scales {1, 3, 7, 14}) with random
seeded CLIP weights and opened gates, so every part of the model computes; run by ``TorchBackend``.
Variants:
- ``fp32``, ``bf16``, ``fp16``: the backend's precision (weights cast, ``muse_infer.model.precision``);
- ``bf16-autocast``: the fp32 backend under ``torch.autocast(bfloat16)``, the alternative to casting;
- ``+float``: float32 frames normalised on the host (``encode_video``) instead of uint8 clips
  normalised on the device (``submit_clips``, the default path);
- ``+compile`` / ``+cudagraphs``: ``compile_backbone`` on (its first call, the compilation, is timed
  apart and not counted).
Each row: videos/s over ``--repeats`` timed calls after ``--warmup`` (CPU: the median call, as thread
CPU time with --threads 1, else wall; CUDA: wall time of the repeats queued back to back through
``submit_clips``, which is how ``VideoEncoder`` feeds the GPU), the cosine and max abs error of its
embeddings against fp32's, the peak GPU memory, and the blocking host-device syncs one call makes
(``torch.cuda.set_sync_debug_mode``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muse_infer.config import load_config  # noqa: E402
from muse_infer.loading import build_model  # noqa: E402
from muse_infer.runtime.torch_backend import TorchBackend  # noqa: E402
from muse_infer.video.frames import clip_inputs  # noqa: E402

GPU_VARIANTS = ["fp32", "bf16", "bf16+float", "bf16-autocast", "fp16"]
COMPILE_VARIANTS = ["bf16+compile", "bf16+cudagraphs"]


def build(architecture: str, frames: int | None = None) -> torch.nn.Module:
    """The architecture (with ``frames`` frames a video if given) with random CLIP weights and random
    gates (a fresh block is the identity)."""
    config = load_config(architecture)
    config = config.replace(max_frames=frames) if frames else config
    model = build_model(config, clip_weights="random").eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.blocks:
            for p in (block.temporal_fc.weight, block.temporal_fc.bias):
                p.copy_(0.02 * torch.randn(p.shape, generator=generator))
    return model


def parse_variant(variant: str) -> tuple[str, bool, str, bool]:
    """ "bf16+float+compile" -> (precision "bf16", float path True, compile "compile", autocast False)."""
    parts = variant.split("+")
    precision, autocast = parts[0].removesuffix("-autocast"), parts[0].endswith("-autocast")
    compile_mode = next((p for p in parts[1:] if p in ("compile", "cudagraphs")), "off")
    return ("fp32" if autocast else precision), "float" in parts[1:], compile_mode, autocast


def random_clips(model, batch: int, seed: int = 0) -> list[np.ndarray]:
    """``batch`` uint8 clips (T, S, S, 3), the last one half as long (padding exercised)."""
    config, rng = model.config, np.random.default_rng(seed)
    lengths = [config.max_frames] * (batch - 1) + [max(1, config.max_frames // 2)]
    size = config.image_size
    return [rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8) for t in lengths]


def make_call(backend: TorchBackend, clips: list, float_path: bool, autocast: bool):
    """A function that queues one batch and returns its pending embeddings (``.result()``)."""
    frames_mask = clip_inputs(clips, backend.max_frames) if float_path else None
    device_type = backend.device.split(":")[0]

    def call():
        context = torch.autocast(device_type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with context:
            if float_path:
                return _Done(backend.encode_video(*frames_mask))
            return backend.submit_clips(clips, backend.max_frames)

    return call


class _Done:
    def __init__(self, embeddings):
        self.embeddings = embeddings

    def result(self):
        return self.embeddings


def time_cpu(call, repeats: int, warmup: int, thread_time: bool) -> list[float]:
    for _ in range(warmup):
        call().result()
    clock = time.thread_time if thread_time else time.perf_counter
    seconds = []
    for _ in range(repeats):
        start = clock()
        call().result()
        seconds.append(clock() - start)
    return seconds


def time_cuda(call, repeats: int, warmup: int) -> float:
    """Wall seconds for ``repeats`` calls queued back to back, each collected one call later."""
    for _ in range(warmup):
        call().result()
    torch.cuda.synchronize()
    start = time.perf_counter()
    previous = None
    for _ in range(repeats):
        current = call()
        if previous is not None:
            previous.result()
        previous = current
    previous.result()
    return time.perf_counter() - start


def count_syncs(call) -> int | None:
    """Blocking host-device synchronisations one call makes (CUDA only), before its result is asked for."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            pending = call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    pending.result()
    return sum("synchroniz" in str(w.message) for w in caught)


def measure(model, variant: str, batch: int, args, reference: dict) -> dict:
    precision, float_path, compile_mode, autocast = parse_variant(variant)
    row = {"variant": variant, "batch": batch, "device": args.device}
    started = time.perf_counter()
    copied = copy.deepcopy(model).to(args.device)
    backend = TorchBackend(copied, {}, {}, args.device, precision, compile_mode)
    clips = random_clips(model, batch)
    call = make_call(backend, clips, float_path, autocast)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first = time.perf_counter()
    embeddings = call().result()
    row["first_call_s"] = round(time.perf_counter() - first, 3)  # includes compilation, if any
    if args.device == "cuda":
        seconds = time_cuda(call, args.repeats, args.warmup)
        row["videos_per_s"] = round(batch * args.repeats / seconds, 1)
        row["ms_per_batch"] = round(1e3 * seconds / args.repeats, 2)
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        row["syncs_per_call"] = count_syncs(call)
    else:
        seconds = time_cpu(call, args.repeats, args.warmup, args.threads == 1)
        median = statistics.median(seconds)
        row["clock"] = "thread CPU" if args.threads == 1 else "wall"
        row["median_s"], row["min_s"] = round(median, 3), round(min(seconds), 3)
        row["videos_per_s"] = round(batch / median, 3)
    if batch not in reference:
        reference[batch] = embeddings  # the first variant (fp32) is the reference
    expected = reference[batch]
    cosine = (
        (embeddings * expected).sum(1) / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(expected, axis=1)
    )
    row["min_cosine_vs_fp32"] = round(float(cosine.min()), 6)
    row["max_abs_error_vs_fp32"] = float(f"{np.abs(embeddings - expected).max():.3g}")
    row["setup_s"] = round(time.perf_counter() - started, 1)
    del backend
    return row


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--architecture", default="ViT-B-32")
    parser.add_argument("--frames", type=int, help="frames a video (default: the architecture's, 12)")
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--variants", nargs="+", help=f"default: {GPU_VARIANTS} (CUDA), fp32 bf16 (CPU)")
    parser.add_argument(
        "--compile", action="store_true", help=f"also {COMPILE_VARIANTS} at the largest batch"
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads (CPU); 1 times thread CPU time")
    parser.add_argument(
        "--budget-s", type=float, default=math.inf, help="skip variants that would start after this"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny model on the CPU, every variant once, quickly"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.architecture, args.batch, args.repeats, args.warmup = "cpu", "tiny", [2], 1, 0
        args.frames = 2
        args.variants = args.variants or ["fp32", "bf16", "bf16+float"]
    if args.variants is None:
        args.variants = GPU_VARIANTS if args.device == "cuda" else ["fp32", "bf16"]
    if args.variants[0] != "fp32":
        args.variants.insert(0, "fp32")  # the reference of the cosine column
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU visible")
    began = time.perf_counter()
    model = build(args.architecture, args.frames)
    plan = [(v, b) for b in args.batch for v in args.variants]
    if args.compile:
        plan += [(v, max(args.batch)) for v in COMPILE_VARIANTS]
    rows, reference = [], {}
    for variant, batch in plan:
        if time.perf_counter() - began > args.budget_s:
            rows.append(
                {"variant": variant, "batch": batch, "skipped": f"over the {args.budget_s:.0f} s budget"}
            )
            continue
        try:
            rows.append(measure(model, variant, batch, args, reference))
        except Exception as error:  # one variant failing (a compile error, say) must not hide the others
            rows.append(
                {"variant": variant, "batch": batch, "error": f"{type(error).__name__}: {error}"[:300]}
            )
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "setup": {
            "architecture": args.architecture,
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "frames": model.config.max_frames,
            "dry_run": args.dry_run,
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
