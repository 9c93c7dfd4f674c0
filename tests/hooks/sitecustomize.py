"""Test-only: make the decode of chosen files hang, in every Python process started with this folder
on PYTHONPATH (decode workers included), so timeouts are tested without a hook in the product.

``MUSE_TEST_HANG="PATTERN=SECONDS[;PATTERN=SECONDS...]"``: reading a video whose file name matches the
glob PATTERN first sleeps SECONDS. Nothing happens when the variable is unset.
"""

import os

if os.environ.get("MUSE_TEST_HANG"):
    import fnmatch
    import time

    from muse_infer.video import reader

    _read_clip = reader.read_clip

    def _hanging_read_clip(path, *args, **kwargs):
        for rule in filter(None, os.environ["MUSE_TEST_HANG"].split(";")):
            pattern, _, seconds = rule.rpartition("=")
            if fnmatch.fnmatch(os.path.basename(path), pattern):
                time.sleep(float(seconds))
        return _read_clip(path, *args, **kwargs)

    reader.read_clip = _hanging_read_clip
