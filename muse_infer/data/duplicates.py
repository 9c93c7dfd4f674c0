"""A generated corpus for duplicate detection: originals, their copies, and look-alikes that are not copies.

``write_duplicate_corpus(folder)`` renders synthetic videos (``muse_infer.data.synthetic``, the world the
``demo`` model knows) and writes, with their ground truth (``corpus.json``: one record a file, its
``group``: files of one group are the same content):

- originals: one scene (10 s) or a reel of two scenes (2 x 6 s), 160 px, 2 frames a second, .mp4;
- copies of an original, each in its group: re-encoded (another codec and container: .webm VP9,
  .mkv at a lower quality), rescaled (0.6x, .mp4 or .avi), trimmed (2-3 s off the start or the end),
  and trimmed + rescaled + another container together;
- look-alikes, each a group of its own: pairs of different videos sharing an intro (the same 3 s
  scene, or 2 s of black, then different scenes), and "siblings": the same caption drawn again (same
  shapes, colours and motion, another background and layout).

Pairwise precision and recall of a grouping against ``group`` is ``pair_scores``. Used to choose
``muse-infer duplicates``' default threshold (docs/benchmarks.md, "Duplicates") and by its tests.
"""

from __future__ import annotations

import dataclasses
import json
import os
from itertools import combinations

import numpy as np

from .synthetic import FPS, render_sample, split_specs
from .writer import write_video

SIZE = 160
VARIANTS = ("reencode", "rescale", "trim_start", "trim_end", "trim_rescale")
CONTAINERS = {  # variant -> (extension, codec, encoder options)
    "reencode": [(".webm", "libvpx-vp9", {"crf": "40", "b:v": "0"}), (".mkv", "libx264", {"crf": "32"})],
    "rescale": [(".mp4", "libx264", {"crf": "23"}), (".avi", "mpeg4", {"qscale:v": "5"})],
    "trim_start": [(".mp4", "libx264", {"crf": "23"})],
    "trim_end": [(".mov", "libx264", {"crf": "26"})],
    "trim_rescale": [(".mkv", "libx264", {"crf": "28"}), (".webm", "libvpx-vp9", {"crf": "40", "b:v": "0"})],
}


def _resized(frames: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    side = max(16, int(round(frames.shape[1] * scale / 2)) * 2)
    return np.stack([np.asarray(Image.fromarray(f).resize((side, side), Image.BICUBIC)) for f in frames])


def variant_frames(frames: np.ndarray, variant: str, rng: np.random.Generator) -> np.ndarray:
    """A copy's frames (T', H', W', 3) from the original's (T, H, W, 3) (see the module docstring)."""
    cut = int(round(rng.uniform(2.0, 3.0) * FPS))
    if variant == "reencode":
        return frames
    if variant == "rescale":
        return _resized(frames, 0.6)
    if variant == "trim_start":
        return frames[cut:]
    if variant == "trim_end":
        return frames[:-cut]
    if variant == "trim_rescale":
        return _resized(frames[cut:], 0.75)
    raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")


def _original_frames(specs, number: int) -> np.ndarray:
    """Original ``number``: one 10 s scene, or (every third) a reel of two 6 s scenes."""
    if number % 3 == 2:
        return np.concatenate([render_sample(s, SIZE, FPS, 6.0) for s in specs])
    return render_sample(specs[0], SIZE, FPS, 10.0)


def write_duplicate_corpus(
    folder: str | os.PathLike, originals: int = 12, intro_pairs: int = 3, siblings: int = 2, seed: int = 0
) -> list[dict]:
    """Write the corpus into ``folder`` (created); returns (and writes as ``corpus.json``) one record a
    file: {"path" (relative), "group", "kind", "source" (the original, for copies)}."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    specs = split_specs("test", 2 * originals + 3 * intro_pairs + 2 * siblings, seed)
    records = []

    def write(name: str, frames: np.ndarray, group: int, kind: str, codec=None, options=None, source=None):
        write_video(os.path.join(folder, name), frames, FPS, codec=codec, options=options)
        records.append({"path": name, "group": group, "kind": kind, "source": source})

    for number in range(originals):
        frames = _original_frames(specs[2 * number : 2 * number + 2], number)
        name = f"original_{number:02d}.mp4"
        write(name, frames, number, "original")
        for variant in _variants_of(number):
            extension, codec, options = CONTAINERS[variant][number % len(CONTAINERS[variant])]
            copy = variant_frames(frames, variant, rng)
            write(f"copy_{number:02d}_{variant}{extension}", copy, number, variant, codec, options, name)
    group = originals
    base = 2 * originals
    for pair in range(intro_pairs):
        intro_spec, first, second = specs[base + 3 * pair : base + 3 * pair + 3]
        intro = render_sample(intro_spec, SIZE, FPS, 3.0)
        if pair % 2:  # a black intro, as many real videos have
            intro = np.zeros((int(2 * FPS), SIZE, SIZE, 3), np.uint8)
        for side, spec in (("a", first), ("b", second)):
            body = render_sample(spec, SIZE, FPS, 9.0)
            write(f"intro_{pair:02d}{side}.mp4", np.concatenate([intro, body]), group, "shared_intro")
            group += 1
    base += 3 * intro_pairs
    for number in range(siblings):
        spec = specs[base + number]
        for side, seed_shift in (("a", 0), ("b", 1000 + number)):
            drawn = dataclasses.replace(spec, seed=spec.seed + seed_shift)
            write(f"sibling_{number:02d}{side}.mp4", render_sample(drawn, SIZE, FPS, 10.0), group, "sibling")
            group += 1
    with open(os.path.join(folder, "corpus.json"), "w", encoding="utf-8") as handle:
        json.dump(records, handle, indent=1)
    return records


def _variants_of(number: int) -> list[str]:
    """Copies of original ``number``: 1 to 3 of the variants, so every variant appears often."""
    count = 1 + number % 3
    return [VARIANTS[(number + k) % len(VARIANTS)] for k in range(count)]


def true_pairs(records: list[dict]) -> set[tuple[str, str]]:
    """The pairs (a, b), a < b, of files in one group."""
    groups: dict[int, list[str]] = {}
    for record in records:
        groups.setdefault(record["group"], []).append(record["path"])
    return {tuple(sorted(pair)) for paths in groups.values() for pair in combinations(paths, 2)}


def pair_scores(found_groups: list[list[str]], records: list[dict]) -> dict:
    """Pairwise precision and recall of ``found_groups`` (lists of paths) against the records' groups."""
    found = {tuple(sorted(pair)) for group in found_groups for pair in combinations(group, 2)}
    truth = true_pairs(records)
    right = len(found & truth)
    precision = right / len(found) if found else 1.0
    recall = right / len(truth) if truth else 1.0
    return {"precision": precision, "recall": recall, "found_pairs": len(found), "true_pairs": len(truth)}
