"""Videos: reading sampled frames (``reader``), the frame pipeline to the model (``frames``), and the
pool of decode worker processes (``pool``).

Light to import: each name below loads its module on first use (PEP 562), so a caller that needs one
of them (``video.frames.FrameSettings`` for a text search) does not import the readers; PyAV and torch
load only when a video is read or a tensor returned.
"""

import importlib

# name -> the module that owns it
_OWNERS = {
    "VideoDecodeError": "..errors",
    **dict.fromkeys(
        ("CLIP_MEAN", "CLIP_STD", "SLICE_MODES", "FrameSettings", "clip_inputs", "fit_frame", "normalise"),
        ".frames",
    ),
    **dict.fromkeys(
        (
            "SEEKABLE_FORMATS",
            "TRUNCATION_TOLERANCE_S",
            "VIDEO_EXTENSIONS",
            "apply_display_matrix",
            "load_video",
            "preprocess_frame",
            "read_clip",
            "read_frames",
            "sample_indices",
        ),
        ".reader",
    ),
    **dict.fromkeys(("WindowSettings", "plan_windows", "window_settings"), ".windows"),
}

__all__ = sorted(_OWNERS)


def __getattr__(name: str):
    if name not in _OWNERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_OWNERS[name], __name__), name)
    globals()[name] = value  # once: later lookups find it here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_OWNERS))
