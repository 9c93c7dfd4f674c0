"""Model start-up: what a command that encodes videos waits for before its first video, in fresh processes.

    python benchmarks/bench_model_load.py --repeats 5 --json docs/results/model_load.json
    python benchmarks/bench_model_load.py --before ../before   # also a checkout of an older commit

Prepares (once, in --dir) ViT-B-32's CLIP weights (seeded random weights under open_clip's names) as
its default "openai" weights stand in a Hugging Face cache after a download (``DIR/hub``, the cache every
run is pointed to, offline), a folder of --videos small generated videos and an index of 1,000 random
rows recorded as made by ViT-B-32 with those weights; then runs, alternately, --repeats times, each a
fresh process (wall seconds):

- ``python -c "import torch"`` (the floor every command pays);
- ``load_model("tiny")`` (random CLIP weights, the test model);
- ``load_model("ViT-B-32")`` (a real model's size, its default weights found in the cache and read);
- ``muse-infer encode-videos FOLDER --out OUT --model tiny --overwrite`` (the whole command);
- ``muse-infer search QUERY --index EMB.npy`` over the ViT-B-32 index (its text tower, from the cache);
- the same over an index of 1,000 moments (100 videos, 10 windows each; the rows' time ranges read).

With --before DIR (a checkout of another commit, e.g. ``git worktree add ../before da6a52b``, its
compiled libraries copied in), that checkout's runs take part in the same rounds (PYTHONPATH=DIR).
Prints medians, each minus ``import torch``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_search_startup, beside this file
from bench_search_startup import alternating, machine  # noqa: E402  (fresh-process rounds, shared)


def cached_weights(folder: Path) -> Path:
    """ViT-B-32's CLIP weights (seeded, random, open_clip's names) where a download of its default
    "openai" weights leaves them: the Hugging Face cache ``folder/hub`` (returned)."""
    import torch
    from safetensors.torch import save_file

    from muse_infer.catalog import pretrained_tags
    from muse_infer.loading.reference import model_config, resolve_model
    from muse_infer.model.backbone import build_clip

    hub = folder / "hub"
    repo = hub / ("models--" + pretrained_tags("ViT-B-32")["openai"]["hf_hub"].replace("/", "--"))
    path = repo / "snapshots" / "bench" / "open_clip_model.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text("bench")
        torch.manual_seed(0)
        clip = build_clip(model_config(resolve_model("ViT-B-32")).clip)
        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    return hub


def vit_b_32_index(folder: Path, rows: int = 1000) -> Path:
    """``rows`` random unit rows recorded as made by ViT-B-32 with its default weights (made once)."""
    from muse_infer import ModelSpec
    from muse_infer.index import write_index

    out = folder / "b32" / "emb.npy"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        embeddings = np.random.default_rng(0).standard_normal((rows, 512)).astype(np.float32)
        paths = [f"v{i:05d}.mp4" for i in range(rows)]
        write_index(out, embeddings, paths, model=ModelSpec.resolve("ViT-B-32"), root=str(out.parent))
    return out


def vit_b_32_moments(folder: Path, videos: int = 100, windows: int = 10) -> Path:
    """An index of moments: ``windows`` 3 s windows of each of ``videos`` videos, random unit rows
    recorded as made by ViT-B-32 with its default weights (made once)."""
    from muse_infer import ModelSpec
    from muse_infer.index import write_index

    out = folder / "b32_moments" / "emb.npy"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = videos * windows
        embeddings = np.random.default_rng(1).standard_normal((rows, 512)).astype(np.float32)
        paths = [f"v{i // windows:05d}.mp4" for i in range(rows)]
        starts = [3.0 * (i % windows) for i in range(rows)]
        model = ModelSpec.resolve("ViT-B-32")
        ends = [start + 3.0 for start in starts]
        write_index(out, embeddings, paths, model=model, root=str(out.parent), start_s=starts, end_s=ends)
    return out


def video_folder(folder: Path, count: int) -> Path:
    """``count`` 2 s 160x120 H.264 videos of moving noise (made once)."""
    import av

    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for number in range(count):
        path = videos / f"v{number}.mp4"
        if path.exists():
            continue
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
            base = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
            for index in range(20):
                frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * index, axis=1), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    return videos


def commands(index: Path, moments: Path, videos: Path, out: Path) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "import torch": [python, "-c", "import torch"],
        "load tiny": [python, "-c", "import muse_infer; muse_infer.load_model('tiny')"],
        "load ViT-B-32 (cached weights)": [
            python,
            "-c",
            "import muse_infer; muse_infer.load_model('ViT-B-32')",
        ],
        "encode-videos tiny": [
            python,
            "-m",
            "muse_infer",
            "encode-videos",
            str(videos),
            "--out",
            str(out),
            "--model",
            "tiny",
            "--overwrite",
        ],
        "search ViT-B-32 index": [python, "-m", "muse_infer", "search", "a dog", "--index", str(index)],
        "search ViT-B-32 moments": [python, "-m", "muse_infer", "search", "a dog", "--index", str(moments)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=Path("out/model_load"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--before", type=Path, default=None, help="a checkout of an older commit")
    args = parser.parse_args()
    folder = args.dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    hub, videos, index = cached_weights(folder), video_folder(folder, args.videos), vit_b_32_index(folder)
    moments = vit_b_32_moments(folder)
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    variants = {
        name: (command, env) for name, command in commands(index, moments, videos, folder / "emb.npy").items()
    }
    if args.before:
        before_env = {**env, "PYTHONPATH": str(args.before.resolve())}
        for name, command in commands(index, moments, videos, folder / "emb_before.npy").items():
            if name != "import torch":
                variants[f"{name} (before)"] = (command, before_env)
    times = alternating(variants, args.repeats, folder)
    medians = {name: statistics.median(values) for name, values in times.items()}
    floor = medians["import torch"]
    print(f"medians of {args.repeats} rounds, wall seconds (each run a fresh process):")
    for name, value in medians.items():
        runs_text = ", ".join(f"{v:.2f}" for v in times[name])
        print(f"  {name:<32} {value:6.2f}   - import torch {value - floor:+6.2f}   (runs: {runs_text})")
    if args.json:
        record = {
            "repeats": args.repeats,
            "videos": args.videos,
            "times": times,
            "medians": medians,
            "before": str(args.before) if args.before else None,
            **machine(),
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
