"""Generate small test videos whose frames carry their own index, and read the index back.

Each frame shows a GRID x GRID board of black and white cells over the frame's central square
(the part CLIP's centre crop keeps): six fixed anchor cells, which also reveal a wrong rotation or
flip, and 19 cells holding the frame index in binary. Flat black/white cells survive lossy codecs,
chroma subsampling, the bicubic resize and the normalisation; read them back with ``read_index``.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import torch

from muse_infer.data.writer import DEFAULT_CODECS, write_video
from muse_infer.video import CLIP_MEAN, CLIP_STD

GRID = 5
# (row, col) -> value: white top-left corner and its right neighbour, the other corners and the
# cell below the top-left one black, so every rotation, flip and transpose changes the pattern.
ANCHORS = {(0, 0): 1, (0, 1): 1, (1, 0): 0, (0, GRID - 1): 0, (GRID - 1, 0): 0, (GRID - 1, GRID - 1): 0}
DATA_CELLS = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in ANCHORS]
MAX_INDEX = 2 ** len(DATA_CELLS) - 1


def index_image(index: int, height: int, width: int) -> np.ndarray:
    """An (height, width, 3) uint8 frame whose central square shows ``index`` as a cell board."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index must be in [0, {MAX_INDEX}], got {index}")
    cells = np.zeros((GRID, GRID), dtype=np.uint8)
    for (row, col), value in ANCHORS.items():
        cells[row, col] = value
    for bit, (row, col) in enumerate(DATA_CELLS):
        cells[row, col] = (index >> bit) & 1
    side = min(height, width)
    edges = np.linspace(0, side, GRID + 1).round().astype(int)
    board = np.zeros((side, side), dtype=np.uint8)
    for row in range(GRID):
        for col in range(GRID):
            board[edges[row] : edges[row + 1], edges[col] : edges[col + 1]] = 255 * cells[row, col]
    image = np.full((height, width), 128, dtype=np.uint8)  # grey outside the central square
    top, left = (height - side) // 2, (width - side) // 2
    image[top : top + side, left : left + side] = board
    return np.repeat(image[:, :, None], 3, axis=2)


def read_index(frame: np.ndarray | torch.Tensor) -> int:
    """The index painted by ``index_image``, read from a frame.

    ``frame`` is either an (H, W, 3) uint8 RGB frame (``read_frames``) or a CLIP-normalised
    (3, S, S) float tensor (``load_video``). Raises AssertionError when the anchors are wrong
    (a rotated or flipped frame) or a cell is neither black nor white.
    """
    if isinstance(frame, torch.Tensor):
        mean = torch.tensor(CLIP_MEAN)[:, None, None]
        std = torch.tensor(CLIP_STD)[:, None, None]
        grey = (frame * std + mean).mean(0).numpy()  # (S, S) in [0, 1]
    else:
        grey = np.asarray(frame, dtype=np.float64).mean(2) / 255
        height, width = grey.shape
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        grey = grey[top : top + side, left : left + side]
    side = grey.shape[0]
    cells = np.zeros((GRID, GRID))
    for row in range(GRID):
        for col in range(GRID):
            y, x = int((row + 0.5) * side / GRID), int((col + 0.5) * side / GRID)
            reach = max(0, int(side / GRID / 5))
            cells[row, col] = grey[y - reach : y + reach + 1, x - reach : x + reach + 1].mean()
    assert np.all((cells < 0.3) | (cells > 0.7)), f"unreadable cells:\n{cells.round(2)}"
    bits = cells > 0.5
    for (row, col), value in ANCHORS.items():
        assert bits[row, col] == value, f"anchor cell {(row, col)} is wrong: frame rotated or flipped?"
    return sum(int(bits[row, col]) << bit for bit, (row, col) in enumerate(DATA_CELLS))


def make_video(
    path: str | os.PathLike,
    n_frames: int,
    fps: float,
    size: tuple[int, int] = (48, 64),
    codec: str | None = None,
    index_colour: bool = True,
    *,
    pix_fmt: str = "yuv420p",
    keyframe_interval: int | None = None,
    rotation: int = 0,
    hflip: bool = False,
    timestamps: list[float] | None = None,
    options: dict[str, str] | None = None,
) -> str:
    """Write a video of ``n_frames`` frames, frame i showing index i; returns the path.

    ``size`` is the (height, width) the frames are meant to be seen at. ``rotation`` (degrees
    counter-clockwise, a multiple of 90) and ``hflip`` store the frames turned the other way with
    a display matrix that turns them back, as phones do. ``timestamps`` (seconds, one a frame)
    makes a variable-frame-rate video. ``index_colour=False`` paints random noise instead.
    ``keyframe_interval`` sets the encoder's GOP size (x264's default is 250 frames). Odd sizes
    need ``pix_fmt="yuv444p"`` with libx264; vp9 (.webm) and mpeg4 (.avi) take them in yuv420p.
    ``options``: more encoder options (e.g. ``{"x264-params": "open-gop=1"}``, ``{"bf": "2"}``).
    """
    height, width = size
    if index_colour:
        frames = np.stack([index_image(i, height, width) for i in range(n_frames)])
    else:
        frames = np.random.default_rng(0).integers(0, 256, (n_frames, height, width, 3), dtype=np.uint8)
    options = ({"g": str(keyframe_interval)} if keyframe_interval else {}) | (options or {}) or None
    codec = codec or DEFAULT_CODECS.get(os.path.splitext(str(path))[1].lower(), "libx264")
    odd = pix_fmt == "yuv420p" and (height % 2 or width % 2)  # write_video pads these to even
    if rotation % 360 == 0 and not hflip and timestamps is None and not odd:
        write_video(path, frames, fps, codec=codec, pix_fmt=pix_fmt, options=options)
        return str(path)
    if hflip:  # the display matrix flips after rotating, so store the flip undone first
        frames = frames[:, :, ::-1]
    frames = np.ascontiguousarray(np.rot90(frames, k=-(rotation // 90), axes=(1, 2)))
    _write_with_extras(path, frames, fps, codec, pix_fmt, options, rotation, hflip, timestamps)
    return str(path)


def _write_with_extras(path, frames, fps, codec, pix_fmt, options, rotation, hflip, timestamps) -> None:
    """PyAV writer for what ``write_video`` does not do: display matrices, explicit timestamps and
    odd-sized yuv420p (which vp9 and mpeg4 encode as is)."""
    import av

    if codec == "libx264" and pix_fmt == "yuv420p" and (frames.shape[1] % 2 or frames.shape[2] % 2):
        raise ValueError("libx264 needs even sizes in yuv420p; use pix_fmt='yuv444p' for odd ones")
    rate = Fraction(fps).limit_denominator(1000)
    time_base = Fraction(1, 1000) if timestamps is not None else 1 / rate
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.codec_context.time_base = time_base
        if options:
            stream.options = options
        if rotation % 360 or hflip:
            stream.set_display_rotation(rotation, hflip=hflip)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            seconds = timestamps[i] if timestamps is not None else i / rate
            frame.pts, frame.time_base = round(seconds / time_base), time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


BAD_TAG = b"TAG\xe9\xff\xfe\xe9"  # not UTF-8: FFmpeg hands such tag bytes over as they are


def make_video_with_bad_tags(path: str | os.PathLike, n_frames: int, fps: float, size=(48, 64)) -> str:
    """A video like ``make_video``'s (frame i shows i) whose container and stream tags (title, comment)
    hold bytes that are not UTF-8, as old tools wrote them in Latin-1; returns the path.

    Written with UTF-8 tags, then the tag bytes patched in place (same length), so any container whose
    muxer stores tags as plain bytes works (.mp4, .mov, .mkv).
    """
    import av

    height, width = size
    text = "TAG\u00e9\u00e9"  # 7 bytes in UTF-8, like BAD_TAG
    with av.open(str(path), mode="w") as container:
        container.metadata["title"] = container.metadata["comment"] = text + "TAG"
        rate = Fraction(fps).limit_denominator(1000)
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.metadata["title"] = text + "TAG"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(index_image(i, height, width), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = open(path, "rb").read()
    if text.encode() not in data:
        raise AssertionError(f"{path}: the muxer did not store the tags as plain bytes")
    with open(path, "wb") as handle:
        handle.write(data.replace(text.encode(), BAD_TAG))
    return str(path)
