"""What thumbnails add to `encode-videos`: the same folder encoded with and without them, same run.

Writes --videos synthetic videos (video_factory's frame-index boards, --seconds long at 25 fps,
--size, an x264 keyframe every 2 s: a stand-in for real footage, where seeking matters), then
encodes the folder --repeats times each way, alternating (with thumbnails / without), each run into a
fresh index: `encode_folder` with the tiny model (random weights, --frames 4), the cheapest model there
is, so the ratio is the worst case. Reports, per way, the median wall time and the median CPU time
(this process + its decode workers); and the thumbnail step alone (its own timer in the summary).

Run:  python benchmarks/bench_thumbnails.py --videos 24 --seconds 20 --repeats 5
(docs/benchmarks.md, "Thumbnails at encode time")
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the decode workers), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def write_videos(folder: Path, count: int, seconds: float, size: tuple[int, int]) -> None:
    from video_factory import make_video

    for number in range(count):
        make_video(
            folder / f"video_{number:03d}.mp4", int(seconds * 25), 25.0, size=size, keyframe_interval=50
        )


def encode_once(root: Path, out: Path, encoder, thumbnails: bool, workers: int) -> tuple[float, float, float]:
    """(wall s, CPU s, thumbnail step s) of one encode into a fresh index."""
    from muse_infer.jobs.encode import encode_folder

    wall, cpu = time.perf_counter(), cpu_seconds()
    summary = encode_folder(
        root, out, encoder, batch_size=8, workers=workers, progress=False, thumbnails=thumbnails
    )
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    assert summary.exit_code == 0, summary.line()
    return wall, cpu, summary.thumbnails.seconds if summary.thumbnails else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", default="360x640", help="HEIGHTxWIDTH")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="decode processes (the machine has 2 cores)")
    parser.add_argument("--json")
    args = parser.parse_args()
    import torch

    from muse_infer import VideoEncoder

    torch.set_num_threads(1)
    height, width = (int(v) for v in args.size.split("x"))
    encoder = VideoEncoder("tiny", device="cpu", max_frames=4)
    runs: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="bench-thumbs-") as folder:
        root = Path(folder) / "videos"
        root.mkdir()
        write_videos(root, args.videos, args.seconds, (height, width))
        encode_once(root, Path(folder) / "warm.npy", encoder, False, args.workers)  # warm caches
        for repeat in range(args.repeats):
            for thumbnails in (True, False) if repeat % 2 else (False, True):
                out = Path(folder) / f"run{repeat}_{thumbnails}.npy"
                runs[thumbnails].append(encode_once(root, out, encoder, thumbnails, args.workers))
    medians = {
        way: {
            key: statistics.median(r[i] for r in runs[way])
            for i, key in enumerate(("wall_s", "cpu_s", "step_s"))
        }
        for way in runs
    }
    report = {
        "videos": args.videos,
        "seconds_each": args.seconds,
        "size": args.size,
        "repeats": args.repeats,
        "without": medians[False],
        "with": medians[True],
        "wall_ratio": medians[True]["wall_s"] / medians[False]["wall_s"],
        "cpu_ratio": medians[True]["cpu_s"] / medians[False]["cpu_s"],
        "thumbnail_ms_per_video": 1000 * medians[True]["step_s"] / args.videos,
    }
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
