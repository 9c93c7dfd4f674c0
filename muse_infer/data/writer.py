"""Write frames to a video file with PyAV (FFmpeg ships inside its wheels)."""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

# Encoder picked from the file extension when the caller names none.
DEFAULT_CODECS = {
    ".mp4": "libx264",
    ".mkv": "libx264",
    ".avi": "mpeg4",
    ".mov": "libx264",
    ".webm": "libvpx-vp9",
}


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> None:
    """Encode frames (T, H, W, 3) uint8 RGB into ``path`` at ``fps`` frames a second.

    Frame sizes are used as given; codecs that need even sizes (yuv420p) get them padded by one
    pixel by replicating the last row/column, so odd-sized test videos are possible.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    extension = os.path.splitext(str(path))[1].lower()
    codec = codec or DEFAULT_CODECS.get(extension, "libx264")
    if pix_fmt == "yuv420p":
        frames = _pad_to_even(frames)
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = options
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
