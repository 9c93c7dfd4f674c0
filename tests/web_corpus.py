"""A small indexed corpus for the web tests: the demo model's synthetic videos under awkward names.

Seven distinct synthetic samples (``demo_samples``), each captioned, so searching a caption finds its
video first with the packaged ``demo`` model. Two names are hostile to HTML and URLs: one is an
HTML tag with an ``onerror`` handler, one sits in a folder with a space and holds ``#``, ``?``,
``%`` and non-ASCII letters (a "#" left unencoded would cut a URL short).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HOSTILE_NAME = "<img src=x onerror=alert(1)>.mp4"
ODD_NAME = "odd names/café #1 ?%20.webm"


@dataclass(frozen=True)
class DemoCorpus:
    root: Path  # the indexed folder
    index: Path  # EMB.npy
    captions: dict[str, str]  # relative path -> caption


def build_demo_corpus(folder: Path) -> DemoCorpus:
    """Render the videos into ``folder / "videos"`` and encode them (demo model, thumbnails on)."""
    from muse_infer import VideoEncoder
    from muse_infer.data.synthetic import FPS, demo_samples, render_sample
    from muse_infer.data.writer import write_video
    from muse_infer.jobs.encode import encode_folder

    root = folder / "videos"
    (root / "odd names").mkdir(parents=True)
    samples = demo_samples(seed=0, n=7)
    names = [f"clip_{n}.mp4" for n in range(5)] + [HOSTILE_NAME, ODD_NAME]
    captions = {}
    for name, (spec, caption) in zip(names, samples, strict=True):
        write_video(root / name, render_sample(spec), FPS)
        captions[name] = caption
    index = folder / "emb.npy"
    encoder = VideoEncoder("demo", device="cpu")
    summary = encode_folder(root, index, encoder, batch_size=4, workers=0, progress=False)
    assert summary.exit_code == 0 and summary.thumbnails.made == len(names), summary.line()
    return DemoCorpus(root, index, captions)
