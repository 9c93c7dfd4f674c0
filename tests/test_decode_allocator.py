"""Decode workers keep the memory they free (``video.pool.keep_freed_memory``): glibc's allocator,
left as it comes, hands every freed block over 128 KiB back to the system, and a worker's frames come
back as fresh pages (page faults), video after video. Each check runs in a fresh interpreter, so the
test process's allocator stays as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")

CHILD = """
import json, resource, sys
import numpy as np
from muse_infer.video.pool import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "1" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for video in range(20):  # a video's 12 RGB frames of 640x360 (0.7 MB each), held, then all freed
    frames = [np.ones((360, 640, 3), dtype=np.uint8) for _ in range(12)]
    del frames
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"kept": kept, "faults": faults}))
"""


def child(keep: bool, **environment) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | environment
    command = [sys.executable, "-c", CHILD, "1" if keep else "0"]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout)


def test_freed_blocks_are_reused_without_page_faults():
    default, kept = child(keep=False), child(keep=True)
    assert kept["kept"] is True
    # 20 videos of 12 frames of 169 pages: faulted in again for every video as glibc comes (it trims
    # the heap's top once they are freed), once with the setting
    assert default["faults"] > 19 * 12 * 150
    assert kept["faults"] < default["faults"] / 10


def test_the_users_malloc_environment_wins():
    assert child(keep=True, MALLOC_TRIM_THRESHOLD_="1000000")["kept"] is False
    assert child(keep=True, MALLOC_MMAP_THRESHOLD_="1000000")["kept"] is False


def test_decode_workers_set_it_before_they_decode():
    import inspect

    from muse_infer.video import pool

    body = inspect.getsource(pool._worker_main)
    assert body.index("keep_freed_memory()") < body.index('writer.send(("ready",))')
