"""Decoding on the GPU (NVDEC, ``--decoder cuda``) against the CPU: the same frames, and what it saves.

    python benchmarks/gpu_decode.py --videos 3 --repeats 3 --json decode.json     # on a GPU machine
    python benchmarks/gpu_decode.py --dry-run --json decode.json                  # no GPU: code paths only

Videos: ``--videos`` of ``bench_ray.py --decode-cost``'s kind (30 s, 640x360, 25 fps, H.264, a keyframe
every 2 s, a gradient moving over grain) and one ``--hd-seconds`` 1920x1080 video of the same kind
(NVDEC's share grows with the picture). Each is read as a decode worker reads it (``read_clip``: 12
frames fitted to 224 px), with ``decoder="cpu"`` and ``"cuda"`` alternating, ``--repeats`` times each,
for exact and keyframe sampling. Per (video kind, sampling, decoder): the median CPU seconds of the
process and all its threads (``time.process_time``: what a decode worker costs a core), the median
wall seconds, and whether the clips are the CPU's bit for bit (else the largest difference). "cores
for 180 videos/s" is 180 x the median CPU seconds: what it takes to feed an H100 at ViT-B-32's bf16
rate (docs/benchmarks.md). The first read of each decoder is a warm-up (CUDA's context), not timed.

--dry-run (no GPU): tiny videos, and the "cuda" side read with decoder="cpu", so that the code runs
on any machine (``tests/test_gpu_check.py``); its figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ray import make_clip_like_video  # noqa: E402

from muse_infer.errors import BackendError  # noqa: E402
from muse_infer.video.cursor import DecodeStats  # noqa: E402
from muse_infer.video.devices import check_decoder  # noqa: E402
from muse_infer.video.frames import FrameSettings  # noqa: E402
from muse_infer.video.reader import read_clip  # noqa: E402


def make_videos(folder: Path, count: int, hd_seconds: float, dry_run: bool) -> dict[str, list[Path]]:
    """{kind: paths}: ``count`` 640x360 30 s videos and one 1920x1080 one (tiny ones in a dry run)."""
    kinds = {"640x360 30 s": ((640, 360), 30.0, count), "1920x1080": ((1920, 1080), hd_seconds, 1)}
    if dry_run:
        kinds = {"64x48 4 s (dry run)": ((64, 48), 4.0, 2)}
    videos = {}
    for kind, (size, seconds, n) in kinds.items():
        videos[kind] = []
        for index in range(n):
            path = folder / f"{size[0]}x{size[1]}_{index}.mp4"
            make_clip_like_video(path, seconds, size, 25.0)
            videos[kind].append(path)
    return videos


def timed_read(path: Path, settings: FrameSettings) -> tuple[np.ndarray, float, float, DecodeStats]:
    stats = DecodeStats()
    cpu, wall = time.process_time(), time.perf_counter()
    clip = read_clip(path, settings, stats)
    return clip, time.process_time() - cpu, time.perf_counter() - wall, stats


def measure(videos: dict[str, list[Path]], repeats: int, device_decoder: str) -> list[dict]:
    rows = []
    for kind, paths in videos.items():
        for sampling in ("exact", "keyframes"):
            settings = {
                decoder: FrameSettings(max_frames=12, size=224, sampling=sampling, decoder=decoder)
                for decoder in ("cpu", device_decoder)
            }
            samples = {"cpu": ([], []), "cuda": ([], [])}
            equal, worst, fallbacks = True, 0, 0
            for path in paths:
                for decoder in settings.values():  # warm-up: CUDA's context, the page cache
                    read_clip(path, decoder)
                for round_ in range(repeats):
                    order = ["cpu", "cuda"] if round_ % 2 == 0 else ["cuda", "cpu"]
                    clips = {}
                    for side in order:
                        clip, cpu_s, wall_s, stats = timed_read(
                            path, settings["cpu" if side == "cpu" else device_decoder]
                        )
                        samples[side][0].append(cpu_s)
                        samples[side][1].append(wall_s)
                        clips[side] = clip
                        fallbacks += stats.device_fallbacks if side == "cuda" else 0
                    same = clips["cpu"].shape == clips["cuda"].shape and np.array_equal(
                        clips["cpu"], clips["cuda"]
                    )
                    equal &= same
                    if not same and clips["cpu"].shape == clips["cuda"].shape:
                        worst = max(worst, int(np.abs(clips["cpu"].astype(int) - clips["cuda"]).max()))
            cpu_s = {side: statistics.median(samples[side][0]) for side in samples}
            wall_s = {side: statistics.median(samples[side][1]) for side in samples}
            rows.append(
                {
                    "videos": kind,
                    "sampling": sampling,
                    "cpu_s_cpu_decoder": round(cpu_s["cpu"], 4),
                    "cpu_s_gpu_decoder": round(cpu_s["cuda"], 4),
                    "cpu_saved_x": round(cpu_s["cpu"] / cpu_s["cuda"], 2) if cpu_s["cuda"] else None,
                    "wall_s_cpu_decoder": round(wall_s["cpu"], 4),
                    "wall_s_gpu_decoder": round(wall_s["cuda"], 4),
                    "cores_for_180_per_s_cpu": round(180 * cpu_s["cpu"], 1),
                    "cores_for_180_per_s_gpu": round(180 * cpu_s["cuda"], 1),
                    "frames_equal": bool(equal),
                    "max_abs_difference": worst,
                    "device_fallbacks": fallbacks,
                    "reads_each": len(samples["cpu"][0]),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=3, help="640x360 videos (30 s each)")
    parser.add_argument("--hd-seconds", type=float, default=8.0, help="length of the 1920x1080 video")
    parser.add_argument("--repeats", type=int, default=3, help="timed reads of each video with each decoder")
    parser.add_argument("--decoder", default="cuda", help="the GPU decoder to compare (cuda, cuda:N)")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: tiny videos, both sides on the CPU")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result: dict = {"setup": {"decoder": args.decoder, "repeats": args.repeats, "dry_run": args.dry_run}}
    device_decoder = "cpu" if args.dry_run else args.decoder
    try:
        check_decoder(device_decoder)
    except BackendError as error:
        result["unavailable"] = str(error)
        print(result["unavailable"], file=sys.stderr)
    else:
        import av

        result["setup"] |= {
            "pyav": av.__version__,
            "ffmpeg_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        }
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            videos = make_videos(Path(folder), args.videos, args.hd_seconds, args.dry_run)
            result["setup"]["videos_made_s"] = round(time.perf_counter() - started, 1)
            result["rows"] = measure(videos, args.repeats, device_decoder)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if "unavailable" in result:
        sys.exit(1)


if __name__ == "__main__":
    main()
