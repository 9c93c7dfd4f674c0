"""Long videos made of several captioned synthetic scenes, for moments (tests, the moment-retrieval check).

A reel is scenes of ``muse_infer.data.synthetic`` (the world the packaged ``demo`` model was trained
on) played one after another with hard cuts: scene i covers [i * scene_s, (i + 1) * scene_s) seconds
and its caption describes it. Each scene is rendered at ``scene_s`` seconds (its event at the
scene's halfway mark, as in the 6-second training videos).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .synthetic import SampleSpec, render_sample
from .writer import write_video


@dataclass(frozen=True)
class Scene:
    """A scene of a reel: its time range in seconds and its caption."""

    start_s: float
    end_s: float
    caption: str


def write_scene_reel(
    path: str | os.PathLike,
    specs: list[SampleSpec],
    scene_s: float = 12.0,
    frame_size: int = 112,
    fps: float = 2.0,
) -> list[Scene]:
    """Write the scenes of ``specs`` one after another into ``path``; returns each one's range and caption."""
    frames = np.concatenate([render_sample(spec, frame_size, fps, scene_s) for spec in specs])
    write_video(path, frames, fps)
    return [Scene(i * scene_s, (i + 1) * scene_s, spec.caption) for i, spec in enumerate(specs)]


def overlap_s(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Seconds two time ranges share (0 when they do not meet)."""
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time ranges."""
    shared = overlap_s(a, b)
    union = (a[1] - a[0]) + (b[1] - b[0]) - shared
    return shared / union if union > 0 else 0.0
