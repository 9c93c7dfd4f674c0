"""Frame signatures: what a few frames of a video look like, small enough to compare thousands of pairs.

A video's signatures are ``FRAMES`` frames read at ``RATE`` a second (evenly spaced over longer videos:
``reader.read_frames``), each shrunk to ``SIDE`` x ``SIDE`` RGB (PIL box filter: the mean of each
cell, so the picture's size, codec and container hardly matter) and standardised: its mean taken out,
scaled to unit length. Two frames showing the same picture have signatures at cosine ~1; a frame a
few seconds later in the same shot stays close; another video's frames do not.

A flat frame (almost one colour: a black intro, a fade) has no pattern to compare: it is kept as its
mean colour, and two flat frames match when their means are within ``FLAT_MEAN_GAP``.

``coverage`` is the share of one video's frames found in the other (``similarity`` >= a match
level), the smaller of the two directions: copies, re-encodes and rescales cover each other whole, a
copy trimmed by a few seconds almost whole, and two videos sharing only an intro by the intro's share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

FRAMES, RATE, SIDE = 16, 2.0, 12
FLAT_STD = 0.02  # a frame whose cells vary less than this (of full scale) is flat
FLAT_MEAN_GAP = 0.04  # two flat frames match when their mean colours are this close (of full scale)


@dataclass(frozen=True)
class Signatures:
    """n frames: ``vectors`` (n, 3 * SIDE * SIDE) float32 unit (zero for a flat frame), ``means``
    (n, 3) float32 in [0, 1], ``flat`` (n,) bool."""

    vectors: np.ndarray
    means: np.ndarray
    flat: np.ndarray

    def __len__(self) -> int:
        return len(self.vectors)


def signatures_of(frames, side: int = SIDE) -> Signatures:
    """The signatures of frames (an iterable of (H, W, 3) uint8 RGB arrays)."""
    from PIL import Image

    cells = (
        np.stack(
            [
                np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize((side, side), Image.BOX))
                for f in frames
            ]
        ).astype(np.float32)
        / 255.0
    )  # (n, side, side, 3)
    flat_cells = cells.reshape(len(cells), -1)
    means = cells.reshape(len(cells), -1, 3).mean(axis=1)
    centred = flat_cells - flat_cells.mean(axis=1, keepdims=True)
    spread = centred.std(axis=1)
    flat = spread < FLAT_STD
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    vectors = np.where(flat[:, None], 0.0, centred / np.maximum(norms, 1e-12)).astype(np.float32)
    return Signatures(vectors, means.astype(np.float32), flat)


def video_signatures(path: str | os.PathLike, frames: int = FRAMES, rate: float = RATE) -> Signatures:
    """Signatures of ``frames`` frames of a video (``RATE`` a second, evenly spaced when it is longer).
    Raises ``VideoDecodeError`` naming the file when it cannot be read."""
    from .reader import read_frames

    return signatures_of(read_frames(path, max_frames=frames, framerate=rate))


def similarity(a: Signatures, b: Signatures) -> np.ndarray:
    """(len(a), len(b)) similarities in [-1, 1]: cosine of patterned frames; for two flat frames 1 minus
    how far apart their means are (in ``FLAT_MEAN_GAP`` units, 0 beyond); 0 for flat against patterned."""
    scores = a.vectors @ b.vectors.T
    both_flat = a.flat[:, None] & b.flat[None, :]
    if both_flat.any():
        gap = np.abs(a.means[:, None, :] - b.means[None, :, :]).max(axis=2)
        scores = np.where(both_flat, np.clip(1.0 - gap / FLAT_MEAN_GAP, 0.0, 1.0), scores)
    return scores


def coverage(scores: np.ndarray, match: float) -> float:
    """From a similarity matrix (m, n): the smaller of the share of rows with a match (>= ``match``)
    among the columns and the share of columns with one among the rows. 0 when either side is empty."""
    if not scores.size:
        return 0.0
    forward = float(np.mean(scores.max(axis=1) >= match))
    backward = float(np.mean(scores.max(axis=0) >= match))
    return min(forward, backward)
