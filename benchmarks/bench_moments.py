"""Benchmark moments: decoding a long video once for all its windows, the memory that takes, and the
encode time per hour of video with windows against whole-video encoding.

Videos: generated here, ``--minutes`` long (default 10 and 60), 64x48 at 2 frames a second, libx264
(preset fast, a keyframe every 10 s), a slowly moving gradient (so frames differ but compress well).

Decode, each in a fresh process (so its peak memory is its own):
- ``windows``: ``read_windows`` (window 12 s, stride 6 s: MUSE's defaults) with ``DecodeStats``: packets
  decoded against the packets in the file (demuxed separately), seeks, frames decoded, end-probe packets,
  the most sampled frames held at once, thread CPU time, peak RSS (``ru_maxrss``);
- ``whole``: ``read_clip`` (12 frames of the whole video: seeks to them), thread CPU time, peak RSS;
- ``pool worker``: the same windows through a decode worker process (``DecodePool``, 1 worker), the
  worker's peak RSS (``RUSAGE_CHILDREN`` once it has exited) and the consumer's.
Encode (``--model``, default the packaged demo model, on the CPU): ``VideoEncoder.encode_moment_groups``
with those windows against ``encode_groups`` (one clip a video), process CPU time and wall time, per hour
of video.

    python benchmarks/bench_moments.py --minutes 10,60 --json docs/results/moments_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

FPS, SIZE = 2, (48, 64)
WINDOW, STRIDE = 12.0, 6.0

DECODE_PROBE = r"""
import json, resource, sys, time
from muse_infer.video.frames import FrameSettings
from muse_infer.video.windows import WindowSettings
path, mode, window, stride = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
settings = FrameSettings(max_frames=12, size=224)
out = {}
started, cpu = time.perf_counter(), time.thread_time()
if mode == "windows":
    from muse_infer.video.reader import DecodeStats
    from muse_infer.video.window_reader import read_windows
    stats = DecodeStats()
    out["windows"] = sum(1 for _ in read_windows(path, settings, WindowSettings(window, stride), stats))
    out["stats"] = vars(stats)
elif mode == "whole":
    from muse_infer.video.reader import read_clip
    out["frames"] = len(read_clip(path, settings))
else:
    from muse_infer.video.pool import DecodePool
    items = DecodePool(settings, 1, windows=WindowSettings(window, stride)).imap([path])
    out["windows"] = sum(1 for item in items if not item.final)
    out["worker_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
out["thread_cpu_s"], out["wall_s"] = time.thread_time() - cpu, time.perf_counter() - started
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def make_long_video(path: Path, minutes: float) -> None:
    """A ``minutes``-long 64x48 video at 2 fps: a gradient drifting slowly (frames written as made)."""
    import av

    frames = int(minutes * 60 * FPS)
    height, width = SIZE
    ramp = np.add.outer(np.arange(height), np.arange(width)).astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "fast", "g": str(10 * FPS)}
        for index in range(frames):
            shift = index * 0.7
            image = np.stack([(ramp + shift) % 256, (ramp * 2 - shift) % 256, (ramp + 3 * shift) % 256], -1)
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def packet_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)


def decode_probe(path: Path, mode: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-c", DECODE_PROBE, str(path), mode, str(WINDOW), str(STRIDE)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def encode_times(paths: list[Path], model: str) -> dict:
    """Process CPU and wall seconds of encoding ``paths`` as windows and as whole videos (1 decode worker)."""
    from muse_infer import VideoEncoder
    from muse_infer.video.windows import WindowSettings

    encoder = VideoEncoder(model, device="cpu")
    runs = {
        "windows": lambda: encoder.encode_moment_groups(paths, WindowSettings(WINDOW, STRIDE), workers=1),
        "whole": lambda: encoder.encode_groups(paths, workers=1),
    }
    out = {}
    for name, run in runs.items():
        cpu, wall = time.process_time(), time.perf_counter()
        rows = sum(1 if r.embedding.ndim == 1 else len(r.embedding) for group in run() for r in group)
        out[name] = {
            "rows": rows,
            "process_cpu_s": time.process_time() - cpu,
            "wall_s": time.perf_counter() - wall,
        }
    return out


ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", default="10,60", help="video lengths, comma-separated")
    parser.add_argument("--model", default="demo", help="model for the encode timing ('' to skip it)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    lengths = [float(m) for m in args.minutes.split(",")]
    results = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "video": f"{SIZE[1]}x{SIZE[0]}, {FPS} fps, libx264 preset fast, keyframe every 10 s",
        "window_s": WINDOW,
        "stride_s": STRIDE,
        "videos": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for minutes in lengths:
            path = Path(folder) / f"{minutes:g}min.mp4"
            started = time.perf_counter()
            make_long_video(path, minutes)
            entry = {"minutes": minutes, "bytes": path.stat().st_size, "packets": packet_count(path)}
            entry["generate_s"] = time.perf_counter() - started
            for mode in ("windows", "whole", "pool"):
                entry[mode] = decode_probe(path, mode)
            hours = minutes / 60
            entry["windows_decode_cpu_s_per_hour"] = entry["windows"]["thread_cpu_s"] / hours
            entry["whole_decode_cpu_s_per_hour"] = entry["whole"]["thread_cpu_s"] / hours
            print(json.dumps(entry), flush=True)
            results["videos"].append(entry)
            paths.append(path)
        if args.model:
            total_hours = sum(lengths) / 60
            encode = encode_times(paths, args.model)
            for run in encode.values():
                run["process_cpu_s_per_hour"] = run["process_cpu_s"] / total_hours
                run["wall_s_per_hour"] = run["wall_s"] / total_hours
            results["encode"] = {"model": args.model, "hours": total_hours, **encode}
            print(json.dumps(results["encode"]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
