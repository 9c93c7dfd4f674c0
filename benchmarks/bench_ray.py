"""The Ray engine against the local engine: same videos, same run, alternating (docs/benchmarks.md,
"Ray engine").

Generates --videos short noise videos (--seconds long, --size pixels, --fps) into --work-dir (kept
for later runs), then encodes the folder with each engine in turn, --repeats times, into a fresh
index each time:

- local: ``encode_folder`` with ``workers`` decode processes (default: cores - 1) and the model here
  (on --torch-threads threads; default torch's: one a core);
- ray: ``encode_folder_ray`` on a private local Ray instance of ``cores`` logical CPUs (or the
  cluster at --address): decode tasks, --actors model actors on --device; the instance's start-up
  is part of its time, as it is of the command's.

For each engine: wall seconds of the whole call (median), and the encoding part alone (the local
engine's decode-and-model loop; Ray's pipeline, after the instance is up), videos/s of that part,
and the ratio ray / local of both. Rows of the two indexes are compared (max |difference|).

--decode-cost N instead measures what one video costs to decode, in CPU seconds: N generated
30 s 640x360 H.264 videos (moving texture, a keyframe every 2 s), read as a decode task reads them.

Run (CPU, this machine):
    python benchmarks/bench_ray.py --videos 300 --repeats 3 --json out/ray_cpu.json
    python benchmarks/bench_ray.py --decode-cost 3 --frames 12
GPU, one actor (on a machine with a GPU):
    python benchmarks/bench_ray.py --videos 1000 --size 320x240 --seconds 4 --model ViT-B-32 \\
        --clip-weights random --frames 12 --device cuda --batch-size 32 --chunk-size 128 --engines ray
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muse_infer.data.writer import write_video  # noqa: E402


def make_videos(folder: Path, count: int, seconds: float, size: tuple[int, int], fps: float) -> None:
    """``count`` noise videos (H.264 in mp4), made once: a folder that already has them is kept."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = len(list(folder.glob("*.mp4")))
    rng = np.random.default_rng(0)
    width, height = size
    for index in range(existing, count):
        frames = rng.integers(0, 256, (max(1, round(seconds * fps)), height, width, 3), dtype=np.uint8)
        write_video(folder / f"video_{index:06d}.mp4", frames, fps=fps)


def make_clip_like_video(path: Path, seconds: float, size: tuple[int, int], fps: float) -> None:
    """A moving, textured H.264 video with a keyframe every 2 s, written frame by frame (for the
    decode-cost measurement: closer to real footage than noise, which no codec compresses)."""
    import av

    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = np.random.default_rng(1).integers(0, 48, (height, width, 1), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=round(fps), options={"g": str(round(2 * fps))})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(round(seconds * fps)):
            shift = 4.0 * index
            channels = [(x + shift) % 256, (y + shift / 2) % 256, (x + y + shift) % 256]
            frame = np.stack(channels, axis=-1).astype(np.uint8) // 2 + texture
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_cost(work: Path, count: int, frames: int) -> dict:
    """CPU seconds (this process, all its threads) to read one 30 s 640x360 25 fps video into
    ``frames`` frames at 224 px, as a decode task does; median over ``count`` videos, twice each."""
    from muse_infer.video.frames import FrameSettings
    from muse_infer.video.reader import read_clip

    folder = work / "decode_check"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip_{index}.mp4" for index in range(count)]
    for path in paths:
        if not path.exists():
            make_clip_like_video(path, 30.0, (640, 360), 25.0)
    settings = FrameSettings(max_frames=frames, size=224)
    costs = []
    for path in paths * 2:
        started = time.process_time()
        read_clip(str(path), settings)
        costs.append(time.process_time() - started)
    median = statistics.median(costs)
    return {
        "video": "30 s, 640x360, 25 fps, H.264, keyframe every 2 s",
        "frames": frames,
        "cpu_s_median": median,
        "videos_per_cpu_s": 1 / median,
        "cpu_s_all": [round(c, 3) for c in costs],
    }


def run_engine(engine: str, args, encoder, folder: Path, out: Path) -> dict:
    from muse_infer.jobs.encode import encode_folder
    from muse_infer.jobs.ray_engine import encode_folder_ray

    for stale in out.parent.glob(out.stem + "*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    options = dict(batch_size=args.batch_size, timeout=120.0, chunk_size=args.chunk_size, progress=False)
    started = time.monotonic()
    if engine == "local":
        summary = encode_folder(folder, out, encoder, workers=args.workers, **options)
    else:
        ray_options = dict(address=args.address, actors=args.actors, device=args.device)
        summary = encode_folder_ray(folder, out, encoder, workers=args.workers, **options, **ray_options)
    wall = time.monotonic() - started
    assert summary.encoded == args.videos, summary.line()
    return {"wall_s": wall, "encode_s": summary.encode_seconds, "videos": summary.processed_now}


def summarise(runs: dict[str, list[dict]]) -> dict:
    table = {}
    for engine, results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        encode = statistics.median(r["encode_s"] for r in results)
        table[engine] = {
            "wall_s_median": wall,
            "encode_s_median": encode,
            "videos_per_s": results[0]["videos"] / encode,
            "wall_s_all": [round(r["wall_s"], 2) for r in results],
        }
    if {"local", "ray"} <= set(table):
        table["ratio_ray_over_local"] = {
            "wall": table["ray"]["wall_s_median"] / table["local"]["wall_s_median"],
            "encode": table["ray"]["encode_s_median"] / table["local"]["encode_s_median"],
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", default="64x48", help="WIDTHxHEIGHT of the generated videos")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--clip-weights", default=None)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=64, help="the Ray engine's shard size")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="the Ray actors' device; the local engine's model")
    parser.add_argument("--address", default=None)
    parser.add_argument("--actors", type=int, default=None)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="the local engine's model threads (default: torch's, the cores; a Ray CPU actor uses 1)",
    )
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", default="out/bench_ray")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--decode-cost",
        type=int,
        default=0,
        metavar="N",
        help="only measure the CPU cost of decoding N generated 30 s 640x360 videos to --frames frames",
    )
    args = parser.parse_args()
    if args.decode_cost:
        print(json.dumps(decode_cost(Path(args.work_dir), args.decode_cost, args.frames), indent=2))
        return

    import torch

    from muse_infer import VideoEncoder

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    work = Path(args.work_dir)
    folder = work / f"videos_{args.size}_{args.seconds:g}s_{args.fps:g}fps"
    width, height = map(int, args.size.split("x"))
    make_videos(folder, args.videos, args.seconds, (width, height), args.fps)
    args.videos = len(list(folder.glob("*.mp4")))
    engines = args.engines.split(",")
    encoders = {
        engine: VideoEncoder(
            args.model,
            device=args.device if engine == "local" else "cpu",  # Ray's driver only reads the identity
            clip_weights=args.clip_weights,
            max_frames=args.frames,
        )
        for engine in engines
    }
    runs: dict[str, list[dict]] = {engine: [] for engine in engines}
    for repeat in range(args.repeats):
        for engine in engines:  # alternating, so a busy machine slows both alike
            result = run_engine(engine, args, encoders[engine], folder, work / f"{engine}.npy")
            runs[engine].append(result)
            print(
                f"repeat {repeat + 1} {engine}: {result['wall_s']:.1f} s wall, {result['encode_s']:.1f} s encoding"
            )
    table = summarise(runs)
    if {"local", "ray"} <= set(engines):
        difference = np.abs(np.load(work / "local.npy") - np.load(work / "ray.npy")).max()
        table["max_abs_row_difference"] = float(difference)
    table["setup"] = {
        **{k: v for k, v in vars(args).items() if k not in ("json",)},
        "cores": os.cpu_count(),
        "torch_threads_local": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_1min_at_end": os.getloadavg()[0],
    }
    print(json.dumps(table, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
