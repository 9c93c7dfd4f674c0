"""Test-only: make the decode of chosen files hang, in every Python process started with this folder
on PYTHONPATH (decode workers included), so timeouts are tested without a hook in the product.

``MUSE_TEST_HANG="PATTERN=SECONDS[;PATTERN=SECONDS...]"``: reading a video whose file name matches the
glob PATTERN first sleeps SECONDS (whole videos and moments). ``MUSE_TEST_SLOW_WINDOWS`` (same form):
reading such a video as moments sleeps SECONDS before each window. Nothing happens when unset.
"""

import os


def _seconds(variable: str, path) -> float:
    import fnmatch

    total = 0.0
    for rule in filter(None, os.environ.get(variable, "").split(";")):
        pattern, _, seconds = rule.rpartition("=")
        if fnmatch.fnmatch(os.path.basename(path), pattern):
            total += float(seconds)
    return total


if os.environ.get("MUSE_TEST_HANG") or os.environ.get("MUSE_TEST_SLOW_WINDOWS"):
    import time

    from muse_infer.video import reader, window_reader

    _read_clip = reader.read_clip
    _read_windows = window_reader.read_windows

    def _hanging_read_clip(path, *args, **kwargs):
        time.sleep(_seconds("MUSE_TEST_HANG", path))
        return _read_clip(path, *args, **kwargs)

    def _hanging_read_windows(path, *args, **kwargs):
        time.sleep(_seconds("MUSE_TEST_HANG", path))
        for clip in _read_windows(path, *args, **kwargs):
            time.sleep(_seconds("MUSE_TEST_SLOW_WINDOWS", path))
            yield clip

    reader.read_clip = _hanging_read_clip
    window_reader.read_windows = _hanging_read_windows
