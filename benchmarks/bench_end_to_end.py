"""End-to-end videos/s of ``VideoEncoder.encode`` on a generated folder, and what bounds it.

    python benchmarks/bench_end_to_end.py --videos 256 --batch 64 --json out/e2e.json   # on a GPU machine
    python benchmarks/bench_end_to_end.py --dry-run                                    # CPU, tiny, seconds

1. Generates ``--videos`` synthetic videos (``muse_infer.data.synthetic``: moving shapes on a texture,
   H.264; here ``--size`` px square, ``--seconds`` long at ``--fps``) with all cores.
2. Decode only: the decode worker pool (``--workers``, default every core but one) over the folder.
3. Model only: the backend on already decoded clips, batches queued back to back.
4. End to end: ``VideoEncoder.encode`` (decoding in the pool while the model runs).
The bound is the slower of 2 and 3; "efficiency" is 4 over that bound.
Model: the ViT-B-32 MUSE architecture with random CLIP weights (``bench_encoder.build``), precision
"auto" (bf16 on a GPU and on a CPU with native bf16, fp32 elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_encoder import build  # noqa: E402

from muse_infer.data.synthetic import generate_synthetic_benchmark  # noqa: E402
from muse_infer.encoders import VideoEncoder, default_workers  # noqa: E402
from muse_infer.runtime.devices import resolve_device  # noqa: E402
from muse_infer.runtime.precision import resolve_precision  # noqa: E402
from muse_infer.runtime.torch_backend import TorchBackend  # noqa: E402
from muse_infer.video.pool import DecodePool  # noqa: E402


def generate(folder: Path, args) -> tuple[list[str], float]:
    """The generated video paths and the seconds it took."""
    started = time.perf_counter()
    generate_synthetic_benchmark(
        folder, seed=0, sizes={"test": args.videos}, workers=1 if args.dry_run else os.cpu_count(),
        frame_size=args.size, fps=args.fps, duration=args.seconds,
    )  # fmt: skip
    paths = sorted(str(p) for p in (folder / "test").glob("*.mp4"))
    return paths, time.perf_counter() - started


def decode_only(paths: list[str], encoder: VideoEncoder, workers: int, batch: int) -> tuple[float, list]:
    """Videos/s of the decode pool alone, and the first ``batch`` decoded clips."""
    pool = DecodePool(encoder.frame_settings, workers, 120.0, prefetch=2 * batch + workers)
    started, clips, failed = time.perf_counter(), [], 0
    for item in pool.imap(paths):
        if item.error is not None:
            failed += 1
        elif len(clips) < batch:
            clips.append(item.pixels)
    seconds = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"{failed} generated videos failed to decode")
    return len(paths) / seconds, clips


def model_only(backend: TorchBackend, clips: list, max_frames: int, repeats: int) -> float:
    """Videos/s of ``submit_clips`` on decoded clips, each batch collected after the next is queued."""
    backend.submit_clips(clips, max_frames).result()  # warm-up (Triton compiles its kernels)
    if backend.asynchronous:
        torch.cuda.synchronize()
    started, previous = time.perf_counter(), None
    for _ in range(repeats):
        current = backend.submit_clips(clips, max_frames)
        if previous is not None:
            previous.result()
        previous = current
    previous.result()
    return len(clips) * repeats / (time.perf_counter() - started)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--architecture", default="ViT-B-32")
    parser.add_argument("--videos", type=int, default=256)
    parser.add_argument("--size", type=int, default=320, help="generated frame side, px")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on a GPU, 8 on the CPU")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: cores - 1)")
    parser.add_argument("--repeats", type=int, default=8, help="model-only batches timed")
    parser.add_argument("--work-dir", type=Path, help="where the videos go (default: a temporary folder)")
    parser.add_argument("--dry-run", action="store_true", help="tiny model (2 frames), 4 small videos, CPU")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.architecture, args.videos, args.size = "cpu", "tiny", 4, 96
        args.fps, args.seconds, args.batch, args.workers, args.repeats = 2.0, 3.0, 2, 1, 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="muse-e2e-") as scratch:
        folder = args.work_dir or Path(scratch)
        paths, generate_s = generate(folder, args)
        precision = resolve_precision("auto", device)
        model = build(args.architecture, 2 if args.dry_run else None).to(device)
        backend = TorchBackend(model, {}, {}, device, precision)
        encoder = VideoEncoder(backend)
        batch = args.batch or encoder.default_batch_size
        workers = default_workers(device) if args.workers is None else args.workers
        decode_vps, clips = decode_only(paths, encoder, workers, batch)
        model_vps = model_only(backend, clips, encoder.frame_settings.max_frames, args.repeats)
        started = time.perf_counter()
        embeddings = encoder.encode(paths, batch_size=batch, workers=workers)
        end_to_end_vps = len(paths) / (time.perf_counter() - started)
    bound = "decode" if decode_vps < model_vps else "model"
    result = {
        "setup": {
            "architecture": args.architecture,
            "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            "precision": backend.precision,
            "cpu_cores": os.cpu_count(),
            "decode_workers": workers,
            "batch": batch,
            "videos": len(paths),
            "video": f"{args.size}x{args.size}, {args.seconds:g} s at {args.fps:g} fps, H.264",
            "frames_sampled": encoder.frame_settings.max_frames,
            "generate_s": round(generate_s, 1),
            "dry_run": args.dry_run,
        },
        "decode_only_videos_per_s": round(decode_vps, 1),
        "model_only_videos_per_s": round(model_vps, 1),
        "end_to_end_videos_per_s": round(end_to_end_vps, 1),
        "bound": bound,
        "efficiency_vs_bound": round(end_to_end_vps / min(decode_vps, model_vps), 2),
        "all_rows_finite": bool(torch.isfinite(torch.from_numpy(embeddings)).all()),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
