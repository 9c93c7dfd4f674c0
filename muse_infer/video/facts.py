"""What a video is, noted while it is open for decoding anyway: duration, picture size, frame rate, codec.

The readers (``reader.read_clip``, ``window_reader.read_windows``) fill a ``VideoFacts`` when given
one, from the timeline they have already set up (``reader.open_timeline``): no extra file access. The
encode job carries the facts through its chunk records into the index's row records (``duration_s``,
``width``, ``height``, ``fps``, ``codec``: ``muse_infer.index.store``), where search filters use them.

- duration_s: the reader's timeline (first frame to the end of the last one), seconds;
- width, height: the picture as shown (the decoded size, swapped when the display matrix turns it a
  quarter), pixels;
- fps: the stream's average frame rate (None when the container does not know it);
- codec: FFmpeg's decoder name ("h264", "vp9", ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

FACT_NAMES = ("duration_s", "width", "height", "fps", "codec")


@dataclass
class VideoFacts:
    """A video's facts (see the module docstring); None where unknown. Filled in place by a reader."""

    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    codec: str | None = None

    def fill(self, timeline) -> None:
        """Set every fact from a reader's opened timeline (``reader._Timeline``) at its first frame."""
        stream, first = timeline.stream, timeline.cursor.current
        width, height = int(first.width), int(first.height)
        if quarter_turned(timeline.matrix):
            width, height = height, width
        rate = stream.average_rate or stream.guessed_rate
        self.duration_s = float(timeline.duration)
        self.width, self.height = width, height
        self.fps = float(rate) if rate else None
        self.codec = stream.codec_context.name

    def to_dict(self) -> dict:
        """{name: value} of ``FACT_NAMES`` (plain JSON values: what a chunk record and a worker send)."""
        return asdict(self)


def quarter_turned(matrix) -> bool:
    """Whether a display matrix (9 int32, or None) turns the picture by 90 or 270 degrees (``reader.
    apply_display_matrix`` transposes it then)."""
    if matrix is None:
        return False
    a, b, c, d = (abs(float(matrix[i])) for i in (0, 1, 3, 4))
    return a + d < b + c
