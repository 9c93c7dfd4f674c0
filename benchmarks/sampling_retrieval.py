"""Exact against keyframe sampling on the synthetic benchmark: retrieval with the demo model, and what
decoding cost, for the videos as generated and for the same videos with a keyframe every 2 s and 1 s.

    python -m muse_infer.data.synthetic DATA --seed 0
    python benchmarks/sampling_retrieval.py --data DATA --json docs/results/sampling_retrieval.json

The benchmark's videos (6 s at 2 fps, x264 with its default keyframe interval of 250 frames) have a
single keyframe, unless x264 puts one at a scene cut: keyframe sampling then shows the model their first
frame over and over. Real videos have a keyframe every 1-10 s, so each split is also re-rendered from
its records (``render_sample``, the generator's own x264 options plus ``-g``) with a keyframe every 2 s
and every 1 s. For each (split, keyframe interval, sampling): the demo model's text-to-video R@1, R@5,
R@10 and median rank (``evaluation.similarity_report``), the keyframes a video holds (mean), and the
CPU seconds the decoding took (``read_clip``, this process, a video).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def keyframe_count(path: str) -> int:
    import av

    with av.open(path) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size and packet.is_keyframe)


def rerender(records: list[dict], folder: Path, frames_between_keyframes: int) -> list[str]:
    """The split's videos rendered again with x264's ``-g``, else as the generator writes them."""
    from muse_infer.data.synthetic import ENCODER_OPTIONS, FPS, render_sample, spec_from_record
    from muse_infer.data.writer import write_video

    paths = []
    options = ENCODER_OPTIONS | {"g": str(frames_between_keyframes)}
    for record in records:
        path = folder / Path(record["video"]).name
        write_video(str(path), render_sample(spec_from_record(record)), FPS, options=options)
        paths.append(str(path))
    return paths


def score(encoder, paths: list[str], captions: list[str]) -> dict:
    """Retrieval metrics of one video per caption, and the decoding's CPU seconds a video."""
    from muse_infer import TextEncoder
    from muse_infer.evaluation import similarity_report
    from muse_infer.video.reader import read_clip

    costs = []
    for path in paths:
        started = time.process_time()
        read_clip(path, encoder.frame_settings)
        costs.append(time.process_time() - started)
    videos = encoder.encode(paths, batch_size=16, workers=0)  # (V, C)
    texts = TextEncoder(encoder.backend).encode(captions)  # (Q, C)
    report = similarity_report(texts, videos, np.arange(len(captions)))
    metrics = {key: report["t2v"][key] for key in ("R@1", "R@5", "R@10", "MdR")}
    return metrics | {"decode_cpu_s_per_video": statistics.median(costs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="python -m muse_infer.data.synthetic DATA")
    parser.add_argument("--splits", nargs="+", default=["test", "test_small"])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from muse_infer import VideoEncoder

    encoders = {s: VideoEncoder(args.model, device="cpu", sampling=s) for s in ("exact", "keyframes")}
    report = {"model": args.model, "data": str(args.data), "command": " ".join(sys.argv), "rows": []}
    with tempfile.TemporaryDirectory(prefix="sampling-") as scratch:
        for split in args.splits:
            lines = (args.data / f"{split}.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines]
            captions = [record["caption"] for record in records]
            variants = {"as generated": [str(args.data / record["video"]) for record in records]}
            for seconds, frames in (("2 s", 4), ("1 s", 2)):
                folder = Path(scratch) / f"{split}_g{frames}"
                folder.mkdir()
                variants[f"every {seconds}"] = rerender(records, folder, frames)
            for keyframes, paths in variants.items():
                mean_keyframes = statistics.mean(keyframe_count(path) for path in paths)
                for sampling, encoder in encoders.items():
                    row = {"split": split, "keyframes": keyframes, "mean_keyframes": mean_keyframes}
                    row |= {"sampling": sampling, **score(encoder, paths, captions)}
                    report["rows"].append(row)
                    print(
                        f"| {split} | {keyframes} ({mean_keyframes:.1f}) | {sampling} | {row['R@1']:.1f} | "
                        f"{row['R@5']:.1f} | {row['R@10']:.1f} | {row['MdR']:g} | "
                        f"{row['decode_cpu_s_per_video'] * 1000:.1f} |",
                        flush=True,
                    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
