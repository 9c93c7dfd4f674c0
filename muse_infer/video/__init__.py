"""Videos: reading sampled frames (``reader``), the frame pipeline to the model (``frames``), and the
pool of decode worker processes (``pool``).

Light to import: PyAV and torch load only when a video is read or a tensor returned.
"""

from ..errors import VideoDecodeError
from .frames import CLIP_MEAN, CLIP_STD, SLICE_MODES, FrameSettings, clip_inputs, fit_frame, normalise
from .reader import (
    SEEKABLE_FORMATS,
    TRUNCATION_TOLERANCE_S,
    VIDEO_EXTENSIONS,
    apply_display_matrix,
    load_video,
    preprocess_frame,
    read_clip,
    read_frames,
    sample_indices,
)
from .windows import WindowSettings, plan_windows, window_settings

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "SLICE_MODES",
    "SEEKABLE_FORMATS",
    "TRUNCATION_TOLERANCE_S",
    "VIDEO_EXTENSIONS",
    "FrameSettings",
    "VideoDecodeError",
    "apply_display_matrix",
    "clip_inputs",
    "fit_frame",
    "load_video",
    "normalise",
    "preprocess_frame",
    "read_clip",
    "read_frames",
    "sample_indices",
    "WindowSettings",
    "plan_windows",
    "window_settings",
]
