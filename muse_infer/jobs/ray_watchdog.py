"""Stops a private local Ray instance when the process that started it ends, however it ends.

``python -m muse_infer.jobs.ray_watchdog TAG TEMP_DIR STARTER_PID`` is started by ``muse_infer.jobs.ray_cluster``
in a session of its own, with a pipe on its stdin that only the starting process holds. When the
pipe closes (the starter finished, raised, or was killed with SIGKILL), every process of the
instance is killed, then TEMP_DIR (the instance's sockets and logs) is removed. A process belongs to
the instance when it holds a file open under TEMP_DIR (every Ray process keeps its log files there:
GCS server, raylet, agents, workers), or when its environment holds ``MUSE_RAY_INSTANCE=TAG``,
which the starter set while the instance started. (The environment alone is not enough: Ray's
workers and agents rename themselves with setproctitle, which overwrites it.)

Why: Ray's own fate sharing stops most of a local instance when its driver dies, but Ray 2.60's
dashboard and runtime-env agents outlive a SIGKILLed driver (seen here: reparented to init and
still running a minute later). Linux only (``/proc``); elsewhere only ``ray.shutdown`` cleans up.
This module imports only the standard library.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time

INSTANCE_VARIABLE = "MUSE_RAY_INSTANCE"
REAP_SECONDS = 30.0  # a process that keeps respawning children is given up on after this long


def instance_processes(tag: str | None, temp_dir: str, spare: tuple[int, ...] = ()) -> list[int]:
    """Ids of the processes of the instance ``tag`` (None: found by ``temp_dir`` alone) whose files are
    in ``temp_dir``, except this one and those in ``spare`` (the starter: it may still be running,
    with a Ray log file open)."""
    marker = None if tag is None else f"{INSTANCE_VARIABLE}={tag}".encode()
    prefix = os.path.realpath(temp_dir) + os.sep
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    pids = [pid for pid in pids if pid != os.getpid() and pid not in spare]
    return [
        pid for pid in pids if _has_open_file_under(pid, prefix) or (marker and _has_variable(pid, marker))
    ]


def _has_open_file_under(pid: int, prefix: str) -> bool:
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone meanwhile, or another user's
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{descriptor}").startswith(prefix):
                return True
        except OSError:
            continue
    return False


def _has_variable(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return marker in handle.read().split(b"\0")
    except OSError:
        return False


def reap(tag: str, temp_dir: str, spare: tuple[int, ...] = (), seconds: float = REAP_SECONDS) -> int:
    """SIGKILL every process of the instance until none is left; returns how many were killed."""
    killed, deadline = set(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = instance_processes(tag, temp_dir, spare)
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.1)
    return len(killed)


def main(tag: str, temp_dir: str, starter_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the starter's to handle
    while sys.stdin.buffer.read(65536):
        pass  # nothing is ever sent: the pipe only closes
    reap(tag, temp_dir, spare=(starter_pid,))
    shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
