"""Moment retrieval on the synthetic benchmark: long videos made of captioned scenes; for each scene's
caption, is the best moment in the right video, and does it overlap the right scene?

Reels: ``--reels`` videos of ``--scenes`` scenes each, ``--scene-s`` seconds a scene, hard cuts
(``muse_infer.data.scenes``); the scenes are the synthetic test split's samples (seed ``--seed``, the
split the demo model never saw), in order, so every caption is used once. The folder is encoded with
``--model`` (default: the packaged demo model) for every ``--windows`` setting (WINDOW/STRIDE seconds;
``whole``: a row a video), then each caption is searched (``EmbeddingIndex.search_batch``, the best
moment of each video) and scored against its scene:
- video R@1: the top result is the caption's reel (for ``whole``, the only thing measured);
- moment hit: the top result is the caption's reel and its range overlaps the scene (> 0 s);
- mean IoU: of the top result's range with the scene (0 when the video is wrong);
- in-video hit / IoU: the same for the caption's reel's best moment, wherever that reel ranks;
- chance: the in-video hit rate of a window drawn uniformly from the reel's windows.

    python benchmarks/moment_retrieval.py --json docs/results/moment_retrieval.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def build_reels(folder: Path, reels: int, scenes: int, scene_s: float, seed: int) -> dict[str, list]:
    """Write the reels; returns {file name: [Scene, ...]}."""
    from muse_infer.data.scenes import write_scene_reel
    from muse_infer.data.synthetic import split_specs

    specs = split_specs("test", reels * scenes, seed=seed)
    return {
        f"reel{r:02d}.mp4": write_scene_reel(
            folder / f"reel{r:02d}.mp4", specs[r * scenes : (r + 1) * scenes], scene_s
        )
        for r in range(reels)
    }


def score(index, encoder, truth: dict[str, list]) -> dict:
    """The measures of the module docstring for one encoded index."""
    from muse_infer.data.scenes import iou, overlap_s

    queries = [(name, scene) for name, scenes in truth.items() for scene in scenes]
    hits = index.search_batch([s.caption for _, s in queries], top_k=len(truth), text_encoder=encoder)
    video = moment = in_video = 0
    ious, in_ious, chance = [], [], []
    spans = [index.span(row) for row in range(len(index))]
    for (name, scene), results in zip(queries, hits, strict=True):
        scene_range = (scene.start_s, scene.end_s)
        top = results[0]
        own = next(r for r in results if r.path == name)
        video += top.path == name
        if own.start_s is None:
            continue
        top_iou = iou((top.start_s, top.end_s), scene_range) if top.path == name else 0.0
        moment += top.path == name and overlap_s((top.start_s, top.end_s), scene_range) > 0
        ious.append(top_iou)
        in_video += overlap_s((own.start_s, own.end_s), scene_range) > 0
        in_ious.append(iou((own.start_s, own.end_s), scene_range))
        windows = [spans[row] for row in range(len(index)) if index.paths[row] == name]
        chance.append(np.mean([overlap_s(w, scene_range) > 0 for w in windows]))
    count = len(queries)
    out = {"queries": count, "video_r1": video / count}
    if ious:
        out |= {"moment_hit": moment / count, "mean_iou": float(np.mean(ious))}
        out |= {"in_video_hit": in_video / count, "in_video_mean_iou": float(np.mean(in_ious))}
        out["chance_in_video_hit"] = float(np.mean(chance))
    return out


def main(argv: list[str] | None = None) -> None:
    from muse_infer import EmbeddingIndex, TextEncoder, VideoEncoder
    from muse_infer.jobs.encode import encode_folder
    from muse_infer.video.windows import WindowSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--reels", type=int, default=12)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--scene-s", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--windows", default="6/3,4/2,12/6,whole", help="WINDOW/STRIDE settings, or whole")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    encoder = VideoEncoder(args.model, device="cpu")
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "model": args.model}
    results |= {"reels": args.reels, "scenes": args.scenes, "scene_s": args.scene_s, "seed": args.seed}
    results["runs"] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "videos"
        root.mkdir()
        truth = build_reels(root, args.reels, args.scenes, args.scene_s, args.seed)
        for setting in args.windows.split(","):
            windows = None if setting == "whole" else WindowSettings(*map(float, setting.split("/")))
            out = Path(folder) / f"{setting.replace('/', '-')}.npy"
            encode_folder(root, out, encoder, progress=False, thumbnails=False, windows=windows)
            index = EmbeddingIndex.load(out)
            results["runs"][setting] = score(index, TextEncoder.for_index(index), truth)
            print(setting, json.dumps(results["runs"][setting]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
