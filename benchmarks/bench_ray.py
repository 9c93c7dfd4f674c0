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

--startup N instead measures what a user waits for on a folder where the videos cost nothing: the
command ``muse-infer encode-videos DIR --out X.npy --model tiny --clip-weights random --frames 4
--engine E -v`` on 6 generated videos, run N times as a new process for each engine (and each
``--code NAME=PATH`` checkout, alternating), its wall time and the CPU time of the whole process
tree (this process is its subreaper, so every Ray process the command started is counted), and
the phases the Ray engine logs (instance up, first result, instance stopped). The engine
``ray@address`` is ``--engine ray --address ADDRESS`` (a running cluster, e.g. ``ray start --head``).

--decode-cost N instead measures what one video costs to decode, in CPU seconds: N generated
30 s 640x360 H.264 videos (moving texture, a keyframe every 2 s), read as a decode task reads them.

Run (CPU, this machine):
    python benchmarks/bench_ray.py --videos 300 --repeats 3 --json out/ray_cpu.json
    python benchmarks/bench_ray.py --decode-cost 3 --frames 12
    python benchmarks/bench_ray.py --startup 5 --json out/ray_startup.json
    python benchmarks/bench_ray.py --clip-like --videos 48 --per-video-from 24 --size 640x360 \\
        --seconds 30 --fps 25 --frames 12 --chunk-size 8 --torch-threads 1 --repeats 3   # per video
GPU, one actor (on a machine with a GPU):
    python benchmarks/bench_ray.py --videos 1000 --size 320x240 --seconds 4 --model ViT-B-32 \\
        --clip-weights random --frames 12 --device cuda --batch-size 32 --chunk-size 128 --engines ray
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
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


STARTUP_VIDEOS = 6
PHASE_LINE = re.compile(r"ray engine: (?P<phase>[a-z ]+?) (?:after|in) (?P<seconds>[0-9.]+) s")


def run_command(command: list[str], env: dict, cwd: Path) -> dict:
    """Wall seconds of ``command`` (a new process) and CPU seconds of its whole process tree: this
    process is made the tree's subreaper, so processes that outlive their parents (Ray's, killed by
    the watchdog) are reaped here and their CPU time counted too. Also its stderr."""
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER (Linux)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.run(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wall = time.monotonic() - started
    orphans, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:  # the orphans (the watchdog kills them): reap every one
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
        orphans += pid != 0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{process.stderr[-3000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "orphans": orphans, "stderr": process.stderr}


def startup(args) -> dict:
    """--startup: the command on 6 tiny videos, per engine and checkout, ``args.startup`` times each."""
    work = Path(args.work_dir).resolve()
    folder = work / "startup_videos"
    make_videos(folder, STARTUP_VIDEOS, 2.0, (64, 48), 8.0)
    checkouts = dict(item.split("=", 1) for item in args.code.split(",")) if args.code else {}
    checkouts = checkouts or {"this": str(Path(__file__).resolve().parents[1])}
    runs: dict[str, list[dict]] = {}
    for repeat in range(args.startup):
        for name, root in checkouts.items():
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            }
            for engine in args.engines.split(","):
                out = work / f"startup-{name}-{engine}.npy"
                for stale in out.parent.glob(out.stem + ".*"):
                    shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
                command = [sys.executable, "-c", "from muse_infer.cli import main; main()", "encode-videos"]
                command += [str(folder), "--out", str(out), "--model", "tiny", "--clip-weights", "random"]
                command += ["--frames", "4", "--engine", engine.split("@")[0], "-v"]
                command += ["--address", args.address] if engine == "ray@address" else []
                # a cluster `ray start` made has token authentication (docs/ray.md)
                command_env = {**env, "RAY_AUTH_MODE": "token"} if engine == "ray@address" else env
                result = run_command(command, command_env, cwd=work)  # not a checkout: PYTHONPATH decides
                phases = {m["phase"]: float(m["seconds"]) for m in PHASE_LINE.finditer(result.pop("stderr"))}
                runs.setdefault(f"{name} {engine}", []).append({**result, "phases": phases})
                print(
                    f"repeat {repeat + 1} {name} {engine}: {result['wall_s']:.1f} s wall, "
                    f"{result['cpu_s']:.1f} CPU s ({result['orphans']} orphans reaped) {phases}"
                )
    table = {}
    for key, results in runs.items():
        phase_names = sorted({p for r in results for p in r["phases"]})
        table[key] = {
            "wall_s_median": statistics.median(r["wall_s"] for r in results),
            "cpu_s_median": statistics.median(r["cpu_s"] for r in results),
            "wall_s_all": [round(r["wall_s"], 2) for r in results],
            "cpu_s_all": [round(r["cpu_s"], 2) for r in results],
            "phases_s_median": {
                p: statistics.median(r["phases"][p] for r in results if p in r["phases"]) for p in phase_names
            },
        }
    for name in checkouts:
        local, ray = table.get(f"{name} local"), table.get(f"{name} ray")
        if local and ray:
            table[f"{name} ray minus local"] = {
                "wall_s": ray["wall_s_median"] - local["wall_s_median"],
                "cpu_s": ray["cpu_s_median"] - local["cpu_s_median"],
            }
    table["setup"] = {
        "videos": STARTUP_VIDEOS,
        "repeats": args.startup,
        "checkouts": checkouts,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min_at_end": os.getloadavg()[0],
    }
    return table


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
    assert summary.encoded == len(list(folder.glob("*.mp4"))), summary.line()
    return {"wall_s": wall, "encode_s": summary.encode_seconds, "videos": summary.processed_now}


def first_videos(folder: Path, count: int) -> Path:
    """A folder of hard links to the first ``count`` videos of ``folder`` (made once)."""
    subset = folder.parent / f"{folder.name}_first{count}"
    subset.mkdir(exist_ok=True)
    for video in sorted(folder.glob("*.mp4"))[:count]:
        if not (subset / video.name).exists():
            os.link(video, subset / video.name)
    return subset


def per_video(table: dict, engines: list[str], more: int, fewer: int) -> dict:
    """Seconds a video costs each engine, fixed costs aside: the difference of the median times of the
    whole folder and of its first ``fewer`` videos, over the ``more`` videos between them."""
    costs = {
        engine: {
            kind: (table[engine][f"{kind}_s_median"] - table[f"{engine} first {fewer}"][f"{kind}_s_median"])
            / more
            for kind in ("wall", "encode")
        }
        for engine in engines
    }
    if {"local", "ray"} <= set(engines):
        costs["ratio_ray_over_local"] = {k: costs["ray"][k] / costs["local"][k] for k in ("wall", "encode")}
    return costs


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
    if {"local", "ray"} <= set(table):  # the whole folder
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
    parser.add_argument(
        "--clip-like",
        action="store_true",
        help="real-sized videos instead of noise: a moving texture, a keyframe every 2 s (as --decode-cost)",
    )
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
    parser.add_argument(
        "--per-video-from",
        type=int,
        default=0,
        metavar="N",
        help="also encode the folder's first N videos each repeat: a video's cost, fixed costs aside, is "
        "the difference of the two times over the videos between",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", default="out/bench_ray")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--startup",
        type=int,
        default=0,
        metavar="N",
        help="only measure the command's wall and CPU time on 6 tiny videos, N times an engine",
    )
    parser.add_argument(
        "--code",
        default=None,
        help="with --startup: NAME=PATH,... checkouts to compare (each run with PYTHONPATH=PATH)",
    )
    parser.add_argument(
        "--decode-cost",
        type=int,
        default=0,
        metavar="N",
        help="only measure the CPU cost of decoding N generated 30 s 640x360 videos to --frames frames",
    )
    args = parser.parse_args()
    if args.startup:
        table = startup(args)
        print(json.dumps(table, indent=2))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(table, indent=2))
        return
    if args.decode_cost:
        print(json.dumps(decode_cost(Path(args.work_dir), args.decode_cost, args.frames), indent=2))
        return

    import torch

    from muse_infer import VideoEncoder

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    work = Path(args.work_dir)
    kind = "cliplike" if args.clip_like else "videos"
    folder = work / f"{kind}_{args.size}_{args.seconds:g}s_{args.fps:g}fps"
    width, height = map(int, args.size.split("x"))
    if args.clip_like:
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(args.videos):
            if not (folder / f"clip_{index:06d}.mp4").exists():
                make_clip_like_video(
                    folder / f"clip_{index:06d}.mp4", args.seconds, (width, height), args.fps
                )
    else:
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
    folders = {"": folder}
    if args.per_video_from:
        folders[f" first {args.per_video_from}"] = first_videos(folder, args.per_video_from)
    runs: dict[str, list[dict]] = {engine + name: [] for name in folders for engine in engines}
    for repeat in range(args.repeats):
        for name, videos in folders.items():
            for engine in engines:  # alternating, so a busy machine slows both alike
                result = run_engine(engine, args, encoders[engine], videos, work / f"{engine}.npy")
                runs[engine + name].append(result)
                print(
                    f"repeat {repeat + 1} {engine}{name}: {result['wall_s']:.1f} s wall, "
                    f"{result['encode_s']:.1f} s encoding"
                )
    table = summarise(runs)
    if args.per_video_from:
        table["per_video"] = per_video(table, engines, args.videos - args.per_video_from, args.per_video_from)
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
