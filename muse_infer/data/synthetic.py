"""A synthetic text-video benchmark, generated from a seed with nothing downloaded.

Each video shows saturated shapes moving over a muted, textured background; its caption names the shapes'
count, size, colour, kind, direction and one event in time (appears, disappears, stops, turns a colour).
Two kinds of sample:
  - "scene": 1-3 small or large objects, all described by the caption;
  - "small": one TINY object (8-10 px at 224) that the caption describes, plus one LARGE distractor
    (64-80 px, random shape and colour of the same palette, its own motion) that no caption mentions.
    The distractor fills ~50x the tiny object's area, so a pooled per-frame summary is dominated by it;
    and a tiny red triangle beside a big blue square holds the same colours and shapes as a tiny blue
    square beside a big red triangle, so only features that keep which colour goes with which SIZE and
    place (patch tokens, and the upsampled 14x14 grid) separate those captions. That is the design
    intent; whether a given model needs the patches is for its evaluation to show.
Splits: train and val mix both kinds, test holds scenes only, test_small small-object samples only.
Videos are 224x224 (the model's input size, so nothing is resized away), 6 s at 2 fps; events happen at
the halfway mark (3 s), so a 1 frame/s reader sees 3 frames on each side of it.

Usage: ``python -m muse_infer.data.synthetic OUT_DIR --seed 0`` or ``generate_synthetic_benchmark``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import zlib
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from muse_infer.data.writer import write_video

FORMAT_VERSION = 1
FRAME_SIZE = 224
FPS = 2.0
DURATION_S = 6.0

# Saturated colours, far apart in hue, so that 4:2:0 chroma subsampling keeps even a tiny one readable.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 235),
    "yellow": (240, 220, 30),
    "purple": (150, 40, 200),
    "orange": (250, 130, 20),
    "cyan": (30, 210, 225),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
TINY_SHAPES = ("circle", "square", "triangle")  # the ones still told apart at 8-10 px
PLURALS = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
EVENTS = ("none", "appears", "disappears", "stops", "turns")
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
# Object diameters in pixels at FRAME_SIZE 224 (scaled with the frame size).
SIZE_PX = {"tiny": (8.0, 10.0), "small": (20.0, 26.0), "large": (44.0, 52.0)}
DISTRACTOR_PX = (64.0, 80.0)
SPEED_PX_S = (14.0, 20.0)  # 70-110 px over the video: 2-3 patches of 32, visible at 1 frame/s

DEFAULT_SIZES = {"train": 800, "val": 100, "test": 100, "test_small": 100}
SMALL_FRACTION = {"train": 0.4, "val": 0.4, "test": 0.0, "test_small": 1.0}
SPEC_FIELDS = ("kind", "shape", "colour", "size", "count", "direction", "event", "colour_to", "seed")


@dataclass(frozen=True)
class SampleSpec:
    """Everything that defines one video: the captioned attributes and a seed for the rest (layout,
    background texture, speed, the distractor of a "small" sample)."""

    kind: str  # "scene" | "small"
    shape: str
    colour: str
    size: str  # "tiny" (small kind only) | "small" | "large"
    count: int  # 1-3; always 1 for the small kind
    direction: str
    event: str  # one of EVENTS
    colour_to: str | None  # the colour after "turns", else None
    seed: int

    @property
    def caption(self) -> str:
        return caption(self)


def caption(spec: SampleSpec) -> str:
    """The sentence for a spec, e.g. "two large red circles move left and turn blue"."""
    one = spec.count == 1
    noun = spec.shape if one else PLURALS[spec.shape]
    subject = f"{COUNT_WORDS[spec.count]} {spec.size} {spec.colour} {noun}"
    move = f"{'moves' if one else 'move'} {spec.direction}"
    verb_s = "s" if one else ""
    if spec.event == "appears":
        return f"{subject} appear{verb_s} and {move}"
    endings = {"none": "", "disappears": f" and disappear{verb_s}", "stops": f" and stop{verb_s}"}
    if spec.event == "turns":
        return f"{subject} {move} and turn{verb_s} {spec.colour_to}"
    return f"{subject} {move}{endings[spec.event]}"


def sample_spec(rng: np.random.Generator, kind: str) -> SampleSpec:
    """Draw one spec of ``kind`` ("scene" or "small") from the benchmark's distribution."""
    if kind not in ("scene", "small"):
        raise ValueError(f"kind must be 'scene' or 'small', got {kind!r}")
    small = kind == "small"
    colours = list(COLOURS)
    colour = colours[rng.integers(len(colours))]
    shapes = TINY_SHAPES if small else SHAPES
    event = EVENTS[rng.integers(len(EVENTS))]
    others = [c for c in colours if c != colour]
    return SampleSpec(
        kind=kind,
        shape=shapes[rng.integers(len(shapes))],
        colour=colour,
        size="tiny" if small else ("small", "large")[rng.integers(2)],
        count=1 if small else int(rng.integers(1, 4)),
        direction=list(DIRECTIONS)[rng.integers(len(DIRECTIONS))],
        event=event,
        colour_to=others[rng.integers(len(others))] if event == "turns" else None,
        seed=int(rng.integers(2**31 - 1)),
    )


def _split_rng(seed: int, stream: str) -> np.random.Generator:
    # One independent stream a split (crc32 is stable across processes, unlike hash()), so the test set
    # of a seed stays the same whatever the train size.
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


def split_specs(split: str, n: int, seed: int = 0) -> list[SampleSpec]:
    """The n specs of ``split`` (train, val, test, test_small) for ``seed``; captions unique in the split.

    Prefix-stable: ``split_specs(s, m, seed) == split_specs(s, n, seed)[:m]`` for m <= n.
    """
    if split not in SMALL_FRACTION:
        raise ValueError(f"unknown split {split!r}; known: {sorted(SMALL_FRACTION)}")
    rng = _split_rng(seed, split)
    # Sample i is small when the running count of small samples steps up: every prefix holds the split's
    # fraction (to within one), and a smaller split is the prefix of a larger one with the same seed.
    fraction = SMALL_FRACTION[split]
    kinds = ["small" if int((i + 1) * fraction) > int(i * fraction) else "scene" for i in range(n)]
    specs, seen = [], set()
    for kind in kinds:
        for _ in range(10_000):  # the small kind has 840 captions, the scene kind 8400
            spec = sample_spec(rng, kind)
            if spec.caption not in seen:
                break
        else:
            raise ValueError(
                f"split {split!r}: cannot find {n} unique captions; ask for fewer {kind} samples"
            )
        seen.add(spec.caption)
        specs.append(spec)
    return specs


def demo_samples(seed: int = 0, n: int = 6) -> list[tuple[SampleSpec, str]]:
    """n (<= 7) scene specs from the training distribution that look clearly different: no two share a
    colour, nor both shape and direction. Returns [(spec, caption)]."""
    if not 1 <= n <= len(COLOURS):
        raise ValueError(f"n must be in [1, {len(COLOURS)}], got {n}")
    rng = _split_rng(seed, "demo")
    chosen: list[SampleSpec] = []
    while len(chosen) < n:
        spec = sample_spec(rng, "scene")
        if all(
            spec.colour != c.colour and (spec.shape, spec.direction) != (c.shape, c.direction) for c in chosen
        ):
            chosen.append(spec)
    return [(spec, spec.caption) for spec in chosen]


def spec_from_record(record: Mapping) -> SampleSpec:
    """A spec back from a JSONL line (or any mapping holding SPEC_FIELDS), to re-render its video."""
    return SampleSpec(**{name: record[name] for name in SPEC_FIELDS})


# ---------------------------------------------------------------------------------------------------
# Rendering: a spec -> a static background and objects with trajectories -> frames.


@dataclass(frozen=True)
class _Object:
    shape: str
    diameter: float  # px
    start: tuple[float, float]  # centre (x, y) at t = 0, px
    velocity: tuple[float, float]  # px/s
    colours: tuple[str, str]  # before / after the halfway mark
    shown: tuple[bool, bool]  # before / after the halfway mark
    moves_until: float  # seconds; the object stays put afterwards ("stops")
    target: bool  # described by the caption (False: the unmentioned distractor)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted texture (H, W, 3) float32 in [0, 255]: grating, checkerboard or smooth blobs, low contrast,
    so the saturated objects stand out but the frame is never a flat colour."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (H, W) each, in [0, 1)
    pattern = int(rng.integers(3))
    if pattern == 0:
        theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(3, 9), rng.uniform(0, 2 * np.pi)
        texture = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    elif pattern == 1:
        cells = rng.uniform(5, 16)
        texture = np.sign(np.sin(np.pi * cells * xx + 0.1) * np.sin(np.pi * cells * yy + 0.1))
    else:
        texture = np.zeros_like(xx)
        for _ in range(4):
            theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.7, 2.5), rng.uniform(0, 2 * np.pi)
            texture += np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase) / 2
    base = rng.uniform(90, 160) + rng.uniform(-15, 15, 3)  # a grey with a slight tint
    tint = 1 + rng.uniform(-0.3, 0.3, 3)  # the texture's own (weak) colour direction
    grain = rng.normal(0, 3, (size, size, 1))  # static grain: no area is perfectly flat
    image = base + rng.uniform(10, 28) * texture[..., None] * tint + grain
    return np.clip(image, 0, 255).astype(np.float32)


def _start_range(radius: float, travel: float, low: float, high: float) -> tuple[float, float]:
    """Centre coordinates at t = 0 that keep a disc of ``radius`` inside [low, high] on its whole path."""
    return low + radius - min(travel, 0.0), high - radius - max(travel, 0.0)


def _place(rng, diameter, velocity, travel_s, size, lane=0, lanes=1) -> tuple[float, float]:
    """Start centre (x, y) of an object moving at ``velocity`` for ``travel_s`` seconds, in ``lane`` of
    ``lanes`` bands across the motion, so objects of one group (same velocity) never overlap."""
    start = []
    for axis in (0, 1):
        low, high = 0.0, float(size)
        if velocity[axis] == 0.0:
            low, high = size * lane / lanes, size * (lane + 1) / lanes
        first, last = _start_range(diameter / 2 + 1, velocity[axis] * travel_s, low, high)
        start.append(float(rng.uniform(first, max(first, last))))
    return start[0], start[1]


def _layout(spec: SampleSpec, size: int, fps: float, duration: float) -> tuple[np.ndarray, list[_Object]]:
    """(background (H, W, 3) float32, objects in drawing order) of a spec; random parts from spec.seed."""
    rng = np.random.default_rng(spec.seed)
    background = _background(rng, size)
    scale, times = size / FRAME_SIZE, np.arange(round(duration * fps)) / fps
    targets = _targets(rng, spec, scale, size, times[-1], duration / 2)
    if spec.kind != "small":
        return background, targets
    for _ in range(100):  # keep the tiny object clear of the big one: never occluded, never touching
        distractor = _distractor(rng, spec, scale, size, times[-1])
        if _min_gap(distractor, targets[0], times) >= 4 * scale:
            break
    return background, [distractor, *targets]


def _targets(rng, spec: SampleSpec, scale: float, size: int, last_t: float, half: float) -> list[_Object]:
    """The spec.count objects the caption describes: one shape, size class, colour schedule and motion."""
    speed = rng.uniform(*SPEED_PX_S) * scale
    velocity = tuple(speed * d for d in DIRECTIONS[spec.direction])
    moves_until = half if spec.event == "stops" else float("inf")
    shown = {"appears": (False, True), "disappears": (True, False)}.get(spec.event, (True, True))
    colours = (spec.colour, spec.colour_to or spec.colour)
    objects = []
    for lane in rng.permutation(spec.count):
        diameter = rng.uniform(*SIZE_PX[spec.size]) * scale
        start = _place(rng, diameter, velocity, min(last_t, moves_until), size, int(lane), spec.count)
        objects.append(_Object(spec.shape, diameter, start, velocity, colours, shown, moves_until, True))
    return objects


def _centre(obj: _Object, t: float) -> tuple[float, float]:
    moving_t = min(t, obj.moves_until)
    return obj.start[0] + obj.velocity[0] * moving_t, obj.start[1] + obj.velocity[1] * moving_t


def _min_gap(a: _Object, b: _Object, times: np.ndarray) -> float:
    """Smallest gap in px between two objects' boxes (every shape fits the square of side diameter)."""
    apart = [max(map(abs, np.subtract(_centre(a, t), _centre(b, t)))) for t in times]  # Chebyshev
    return float(min(apart)) - (a.diameter + b.diameter) / 2


def _distractor(
    rng: np.random.Generator, spec: SampleSpec, scale: float, size: int, last_t: float
) -> _Object:
    """The large unmentioned object of a small-kind sample: any shape, a colour the target never has."""
    colour = str(rng.choice([c for c in COLOURS if c not in (spec.colour, spec.colour_to)]))
    shape = str(rng.choice(SHAPES))
    direction = DIRECTIONS[str(rng.choice(list(DIRECTIONS)))]
    velocity = tuple(rng.uniform(*SPEED_PX_S) * scale * d for d in direction)
    diameter = rng.uniform(*DISTRACTOR_PX) * scale
    start = _place(rng, diameter, velocity, last_t, size)
    return _Object(shape, diameter, start, velocity, (colour, colour), (True, True), float("inf"), False)


_SUPERSAMPLE = 4  # 4x4 samples a pixel: anti-aliased edges, so sub-pixel motion is smooth


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of points (u, v), in units of the radius around the centre (v grows downwards)."""
    if shape == "circle":
        return u * u + v * v <= 1
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.85  # about the area of the circle
    if shape == "triangle":  # apex up, as wide and tall as the circle, so a tiny one keeps some pixels
        return (v <= 0.9) & (abs(u) <= (v + 0.9) / 1.8)
    if shape == "diamond":
        return abs(u) + abs(v) <= 1
    if shape == "cross":
        return (np.minimum(abs(u), abs(v)) <= 0.3) & (np.maximum(abs(u), abs(v)) <= 0.95)
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _shape_alpha(shape: str, diameter: float, centre: tuple[float, float], size: int):
    """Coverage of one shape: (row slice, column slice, alpha (h, w) float32 in [0, 1]) within the frame.
    Pixel i spans [i, i + 1), so a centre of (x, y) = (10.5, 3.5) is the middle of pixel (row 3, col 10)."""
    radius, (cx, cy) = diameter / 2, centre
    x0, x1 = max(int(np.floor(cx - radius)), 0), min(int(np.ceil(cx + radius)) + 1, size)
    y0, y1 = max(int(np.floor(cy - radius)), 0), min(int(np.ceil(cy + radius)) + 1, size)
    offsets = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    u = ((np.arange(x0, x1)[:, None] + offsets).ravel() - cx) / radius  # (w * S,)
    v = ((np.arange(y0, y1)[:, None] + offsets).ravel() - cy) / radius  # (h * S,)
    inside = _inside(shape, u[None, :], v[:, None])  # (h * S, w * S)
    alpha = inside.reshape(y1 - y0, _SUPERSAMPLE, x1 - x0, _SUPERSAMPLE).mean(axis=(1, 3))
    return slice(y0, y1), slice(x0, x1), alpha.astype(np.float32)


def _render(spec: SampleSpec, size: int, fps: float, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, H, W, 3) uint8, target coverage (T, H, W) float32) with T = round(duration * fps)."""
    background, objects = _layout(spec, size, fps, duration)
    num_frames = round(duration * fps)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    coverage = np.zeros((num_frames, size, size), np.float32)
    for index in range(num_frames):
        t = index / fps
        after = int(t >= duration / 2)
        image = background.copy()  # (H, W, 3) float32
        for obj in objects:
            if not obj.shown[after]:
                continue
            rows, cols, alpha = _shape_alpha(obj.shape, obj.diameter, _centre(obj, t), size)
            colour = np.asarray(COLOURS[obj.colours[after]], np.float32)
            patch = image[rows, cols]
            image[rows, cols] = patch + alpha[..., None] * (colour - patch)
            if obj.target:
                coverage[index, rows, cols] = np.maximum(coverage[index, rows, cols], alpha)
        frames[index] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return frames, coverage


def render_sample(
    spec: SampleSpec, frame_size: int = FRAME_SIZE, fps: float = FPS, duration: float = DURATION_S
) -> np.ndarray:
    """The frames of one sample, in memory: (T, S, S, 3) uint8 RGB, S = frame_size, T = round(duration * fps).

    Deterministic: the same spec and arguments give the same bytes on one machine and numpy build (the
    texture's sin() may round differently on another CPU, by at most a grey level here and there).
    """
    return _render(spec, frame_size, fps, duration)[0]


def target_masks(
    spec: SampleSpec, frame_size: int = FRAME_SIZE, fps: float = FPS, duration: float = DURATION_S
) -> np.ndarray:
    """(T, S, S) bool, S = frame_size: pixels at least half covered by the caption's objects (never the
    distractor) in each frame of ``render_sample(spec, ...)``. For tests, and to show the small objects."""
    return _render(spec, frame_size, fps, duration)[1] >= 0.5


# ---------------------------------------------------------------------------------------------------
# The benchmark on disk: {out_dir}/{split}/{split}_{i:05d}.mp4, {out_dir}/{split}.jsonl, manifest.json.

# One encoder thread: the parallelism is one process a video. CRF 18 is near-lossless for flat shapes;
# 4:2:0 chroma (as in real videos) still smears a tiny object's colour at its edges, which is realistic.
ENCODER_OPTIONS = {"crf": "18", "preset": "veryfast", "threads": "1"}


def _write_one(job: tuple[str, SampleSpec, int, float, float]) -> None:
    path, spec, frame_size, fps, duration = job
    write_video(path, render_sample(spec, frame_size, fps, duration), fps, options=ENCODER_OPTIONS)


def generate_synthetic_benchmark(
    out_dir: str | os.PathLike,
    seed: int = 0,
    sizes: Mapping[str, int] | None = None,
    *,
    workers: int | None = None,
    frame_size: int = FRAME_SIZE,
    fps: float = FPS,
    duration: float = DURATION_S,
) -> str:
    """Render and encode every split, then write one JSONL a split and a manifest; return the manifest path.

    sizes: videos a split, default DEFAULT_SIZES (train 800, val 100, test 100, test_small 100).
    workers: processes (default: all CPUs; 1 runs in this process). The output depends only on the seed
    and the arguments, not on the worker count. JSONL ``video`` paths are relative to ``out_dir``; the
    JSONLs and the manifest are written after every video, so the manifest's presence means a complete set.
    """
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    records = {split: _split_records(split, count, seed) for split, count in sizes.items()}
    jobs = []
    for split, lines in records.items():
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        jobs += [
            (os.path.join(out_dir, line["video"]), spec_from_record(line), frame_size, fps, duration)
            for line in lines
        ]
    _run(jobs, workers or os.cpu_count() or 1)
    for split, lines in records.items():
        with open(os.path.join(out_dir, f"{split}.jsonl"), "w") as handle:
            handle.writelines(json.dumps(line) + "\n" for line in lines)
    manifest = {
        "format_version": FORMAT_VERSION,
        **{"seed": seed, "frame_size": frame_size, "fps": fps, "duration_s": duration},
        "splits": {split: {"jsonl": f"{split}.jsonl", "videos": count} for split, count in sizes.items()},
    }
    manifest_path = os.path.join(out_dir, "manifest.json")
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle, indent=2)
    return manifest_path


def _split_records(split: str, count: int, seed: int) -> list[dict]:
    """The JSONL lines of a split: {"video": "{split}/{split}_{i:05d}.mp4", "caption", attributes...}."""
    specs = split_specs(split, count, seed)
    return [
        {"video": f"{split}/{split}_{i:05d}.mp4", "caption": spec.caption, **dataclasses.asdict(spec)}
        for i, spec in enumerate(specs)
    ]


def _run(jobs: list, workers: int) -> None:
    if workers == 1:
        for job in jobs:
            _write_one(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_one, jobs, chunksize=8))  # list(): re-raises a worker's error here


def _parse_sizes(text: str) -> dict[str, int]:
    """Parse "train=800,val=100" into {"train": 800, "val": 100}."""
    pairs = [item.split("=") for item in text.split(",") if item]
    return {name.strip(): int(value) for name, value in pairs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic text-video benchmark.")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    default_sizes = ",".join(f"{k}={v}" for k, v in DEFAULT_SIZES.items())
    parser.add_argument("--sizes", type=_parse_sizes, default=DEFAULT_SIZES, help=f"default {default_sizes}")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    manifest = generate_synthetic_benchmark(args.out_dir, args.seed, args.sizes, workers=args.workers)
    print(f"wrote {sum(args.sizes.values())} videos in {time.perf_counter() - began:.1f} s: {manifest}")


if __name__ == "__main__":
    main()
