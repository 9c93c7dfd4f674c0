"""The offline demo: synthetic videos, the packaged demo model, text queries, ranked results.

``run_demo()`` renders a few of the project's synthetic videos (``muse_infer.data.synthetic``) into a
temporary folder, encodes them with the packaged ``demo`` model (a small MUSE trained on the synthetic
benchmark by ``training/``, see docs/experiments.md), encodes each video's caption as a query, and
ranks the videos for every query. Nothing is downloaded.

The demo model only knows the synthetic world (coloured shapes moving over textures). It is never a
default: real use names a real CLIP-based model, and using ``demo`` on real videos is an explicit
choice that gives meaningless results.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .atomic import atomic_write
from .errors import JobError

DEMO_MODEL = "demo"
KEYFRAME_EVERY_S = 2.0  # as streaming encodes have; x264's default (250 frames) gives a 6 s clip one


@dataclass(frozen=True)
class QueryResult:
    """One query: its text, the video it was written for, and all videos ranked (best first)."""

    query: str
    target: str
    ranking: list[tuple[str, float]]  # (video file name, cosine similarity)

    @property
    def hit(self) -> bool:
        """The intended video ranked strictly first (a tie for first place is not a hit)."""
        return self.ranking[0][0] == self.target and (
            len(self.ranking) == 1 or self.ranking[1][1] < self.ranking[0][1]
        )


def write_demo_videos(folder: str, seed: int = 0, count: int = 6) -> list[tuple[str, str]]:
    """Render ``count`` distinct synthetic samples into ``folder``; returns [(video path, caption)].

    H.264 with a keyframe every ``KEYFRAME_EVERY_S`` seconds (or more, at scene cuts), so that keyframe
    sampling sees the clip's motion (with x264's default, a single keyframe, it would see its first
    frame only: docs/experiments.md, "Keyframe sampling").
    """
    from .data.synthetic import FPS, demo_samples, render_sample
    from .data.writer import write_video

    options = {"g": str(round(KEYFRAME_EVERY_S * FPS))}
    written = []
    for number, (spec, caption) in enumerate(demo_samples(seed, count)):
        path = os.path.join(folder, f"demo_{number}.mp4")
        write_video(path, render_sample(spec), FPS, options=options)
        written.append((path, caption))
    return written


def run_demo(
    model: str = DEMO_MODEL,
    seed: int = 0,
    count: int = 6,
    device: str = "cpu",
    keep: str | None = None,
    sampling: str = "exact",
) -> list[QueryResult]:
    """Generate, encode and search the demo videos; one ``QueryResult`` per caption. keep: a folder
    (new or empty) to leave the videos in, with their captions in ``captions.txt``, to try
    encode-videos and search on; None: a temporary folder. sampling: the encoder's frame sampling
    ("exact" or "keyframes", ``VideoEncoder``)."""
    from .encoders import TextEncoder, VideoEncoder

    with _demo_folder(keep) as folder:
        samples = write_demo_videos(folder, seed, count)
        if keep is not None:
            captions = "".join(f"{os.path.basename(path)}\t{caption}\n" for path, caption in samples)
            atomic_write(os.path.join(folder, "captions.txt"), lambda handle: handle.write(captions.encode()))
        encoder = VideoEncoder(model, device=device, sampling=sampling)
        videos = encoder.encode([path for path, _ in samples], batch_size=len(samples), workers=0)  # (V, C)
        texts = TextEncoder(encoder.backend).encode([caption for _, caption in samples])  # (Q, C)
    names = [os.path.basename(path) for path, _ in samples]
    scores = texts @ videos.T  # (Q, V) cosine
    results = []
    for row, (_, caption) in enumerate(samples):
        order = np.argsort(-scores[row], kind="stable")
        ranking = [(names[i], float(scores[row, i])) for i in order]
        results.append(QueryResult(caption, names[row], ranking))
    return results


@contextmanager
def _demo_folder(keep: str | None):
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="muse-demo-") as folder:
            yield folder
        return
    if os.path.exists(keep) and (not os.path.isdir(keep) or os.listdir(keep)):
        raise JobError(f"--videos {keep}: give a new or empty folder (the demo writes its videos there)")
    os.makedirs(keep, exist_ok=True)
    yield keep


def format_results(results: list[QueryResult], top: int = 3) -> str:
    """Human-readable ranked results with a HIT/MISS mark for each query."""
    lines = []
    for result in results:
        mark = "HIT " if result.hit else "MISS"
        lines.append(f"[{mark}] {result.query!r} (written for {result.target})")
        for rank, (name, score) in enumerate(result.ranking[:top], start=1):
            arrow = " <-" if name == result.target else ""
            lines.append(f"        {rank}. {name}  {score:+.3f}{arrow}")
    hits = sum(r.hit for r in results)
    lines.append(f"{hits}/{len(results)} queries ranked their own video first")
    return "\n".join(lines)


def timed(function: Callable, *args, **kwargs):
    """(function's result, seconds it took)."""
    began = time.perf_counter()
    return function(*args, **kwargs), time.perf_counter() - began
