"""Decode videos in worker processes, in input order, each decode cut off after a per-file timeout.

Why plain subprocesses (``python -m muse_infer.video.pool``) and not ``multiprocessing``:
- a decode that hangs inside FFmpeg cannot be interrupted, only its process killed; a pool of our own
  processes lets us kill one worker and start another (``concurrent.futures`` cannot kill one task);
- the ``spawn`` start method re-runs the caller's ``__main__`` script in every worker, which breaks
  SDK users whose scripts lack an ``if __name__ == "__main__":`` guard; ``fork`` after torch has
  started its threads can deadlock. A fresh interpreter avoids both.
Workers die with the process that started them (Linux ``PR_SET_PDEATHSIG``, and end-of-file on
their pipes), so a ``kill -9`` of the main process leaves no decoder behind, hung or not.

Protocol over the worker's stdin/stdout (pickled ``multiprocessing.connection`` messages):
parent -> worker ``(index, path)`` or ``None`` (stop); worker -> parent ``("ready",)``, then
``("ok", index, pixels, facts)`` or ``("error", index, reason)`` for each task (``facts``: the video's
``video.facts.VideoFacts`` as a dict: duration, size, rate, codec). ``pixels`` is the clip as
``muse_infer.video.reader.read_clip`` gives it, (t, S, S, 3) uint8: 1.8 MB for 12 frames at 224 px,
a quarter of the float32 frames. Normalising it is the model side's job
(``muse_infer.video.frames.clip_inputs``), so workers import neither torch nor anything of the model.

Moments (a pool made with ``windows``): a worker reads each video once for all its windows
(``window_reader.read_windows``) and sends every window as soon as it is complete,
``("part", index, start_s, end_s, pixels)``, then ``("ok", index, None, facts)`` (or ``("error", ...)``, which
voids the parts already sent). ``imap`` then yields, a video at a time, one ``Decoded`` a window
(``final`` False, ``span`` its time range) and a last one with ``final`` True. So neither the worker
nor this process holds a long video's windows at once: a worker whose parts are not taken yet is not
read from (its pipe fills and it waits), at most ``PARTS_AHEAD`` parts a worker are buffered.
The timeout then counts from the last message of the task: a decode is killed when no window came
out for ``timeout`` seconds, so a 90-minute file (a window every few seconds of decoding) is never cut
off for its length, and a hung one is cut off ``timeout`` seconds after its last window.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait

import numpy as np

from ..errors import DecodePoolError, MuseError, VideoDecodeError
from . import reader
from .facts import VideoFacts
from .frames import FrameSettings
from .window_reader import read_windows
from .windows import WindowSettings

STARTUP_TIMEOUT_S = 180.0  # starting a fresh interpreter with PyAV on a busy machine
POLL_S = 0.05  # how often the pool notices that the consumer has taken results


PARTS_AHEAD = 32  # windows a worker may have sent beyond what the consumer took (moments)


@dataclass
class Decoded:
    """One video's clip (t, S, S, 3) uint8 (``reader.read_clip``), or the reason it failed.

    With windows: one item a window (``span`` (start_s, end_s), ``final`` False), then the video's
    last item (``final`` True: no pixels; or the ``error`` that voids its windows). ``facts``: the
    video's duration, size, rate and codec (``VideoFacts.to_dict``) on its final item, when read.
    """

    index: int
    path: str
    pixels: np.ndarray | None = None
    error: str | None = None
    span: tuple[float, float] | None = None
    final: bool = True
    facts: dict | None = None


def decode_one(path: str, settings: FrameSettings) -> tuple[np.ndarray, dict] | str:
    """(the clip of one video, (t, S, S, 3) uint8, its facts as a dict: ``VideoFacts``), or a one-line
    reason why it cannot be read. Never raises."""
    facts = VideoFacts()
    try:
        return reader.read_clip(path, settings, facts=facts), facts.to_dict()
    except VideoDecodeError as error:
        return error.reason
    except MemoryError:
        return "out of memory while decoding"
    except Exception as error:  # a decoder bug on one odd file must not stop a folder of videos
        return f"the decoder failed unexpectedly ({_one_line(error)}); please report this file"


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text[:200] or "no details"


def decode_windows(
    path: str, settings: FrameSettings, windows: WindowSettings
) -> Iterator[tuple | str | dict]:
    """A video's windows, ``(start_s, end_s, pixels)`` each as soon as it is read, then its facts (a
    dict, ``VideoFacts``); or, at the point where reading fails, a one-line reason (a str) instead of
    the facts. Never raises."""
    facts = VideoFacts()
    try:
        for clip in read_windows(path, settings, windows, find_cuts=_cut_finder(windows), facts=facts):
            yield clip.start_s, clip.end_s, clip.pixels
    except VideoDecodeError as error:
        yield error.reason
        return
    except MemoryError:
        yield "out of memory while decoding"
        return
    except MuseError as error:  # e.g. the shots extra missing: the same for every file
        yield str(error)
        return
    except Exception as error:  # a decoder bug on one odd file must not stop a folder of videos
        yield f"the decoder failed unexpectedly ({_one_line(error)}); please report this file"
        return
    yield facts.to_dict()


def _cut_finder(windows: WindowSettings):
    if windows.cuts != "shots":
        return None
    from .shots import find_shot_cuts

    return find_shot_cuts


def decode_inline(
    paths: Sequence[str], settings: FrameSettings, windows: WindowSettings | None = None
) -> Iterator[Decoded]:
    """Decode in this process, one after another (no parallelism, no timeout)."""
    for index, path in enumerate(paths):
        if windows is not None:
            yield from _inline_windows(index, path, settings, windows)
            continue
        result = decode_one(path, settings)
        if isinstance(result, str):
            yield Decoded(index, path, error=result)
        else:
            yield Decoded(index, path, pixels=result[0], facts=result[1])


def _inline_windows(index: int, path: str, settings: FrameSettings, windows: WindowSettings):
    for item in decode_windows(path, settings, windows):
        if isinstance(item, dict):
            yield Decoded(index, path, facts=item)
        elif isinstance(item, str):
            yield Decoded(index, path, error=item)
        else:
            yield Decoded(index, path, pixels=item[2], span=(item[0], item[1]), final=False)


class _Worker:
    """One decoder subprocess and the task it is working on."""

    def __init__(self, settings: FrameSettings, windows: WindowSettings | None = None):
        env = dict(os.environ)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        windows_text = repr(windows.to_dict() if windows is not None else None)
        args = [sys.executable, "-m", "muse_infer.video.pool", str(os.getpid()), repr(asdict(settings))]
        args.append(windows_text)
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.writer = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.reader = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.ready = False
        self.started = time.monotonic()
        self.task: tuple[int, str] | None = None
        self.deadline = self.started + STARTUP_TIMEOUT_S

    def assign(self, index: int, path: str, timeout: float) -> None:
        self.writer.send((index, path))
        self.task, self.deadline = (index, path), time.monotonic() + timeout

    def finish(self, index: int) -> None:
        """The task ``index`` is answered: the worker is idle, with no deadline."""
        self.task, self.deadline = None, float("inf")

    def overdue(self, now: float) -> bool:
        return (self.task is not None or not self.ready) and now > self.deadline

    def exit_description(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # its pipe closed but it lives on: make sure it is gone
            self.process.kill()
            code = self.process.wait()
        return f"signal {-code}" if code < 0 else f"exit code {code}"

    def stop(self, kill: bool) -> None:
        if kill:
            self.process.kill()
        for connection in (self.writer, self.reader):
            connection.close()  # the worker sees end-of-file on stdin and exits

    def join(self, timeout: float) -> None:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class DecodePool:
    """Decodes ``paths`` in ``workers`` subprocesses; ``imap`` yields ``Decoded`` in input order.

    At most ``prefetch`` videos are decoded ahead of the consumer (bounded memory: a 12-frame video
    at 224 px is 7 MB). A decode running longer than ``timeout`` seconds is killed with its worker,
    reported as a failure, and the worker replaced. A worker that crashes (e.g. a segfault in a
    decoder) fails only the file it was decoding.
    """

    def __init__(
        self,
        settings: FrameSettings,
        workers: int,
        timeout: float = 120.0,
        prefetch: int = 16,
        windows: WindowSettings | None = None,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.settings, self.workers, self.timeout, self.windows = settings, workers, timeout, windows
        self.prefetch = max(prefetch, workers)

    def imap(self, paths: Sequence[str]) -> Iterator[Decoded]:
        """``Decoded`` items in input order (with windows: each video's windows, then its final item)."""
        run = _PoolRun(self, list(paths))
        thread = threading.Thread(target=run.manage, name="muse-decode-pool", daemon=True)
        thread.start()
        try:
            for index in range(len(run.paths)):
                item = run.take(index)
                while not item.final:
                    yield item
                    item = run.take(index)
                yield item
        finally:
            run.stopping = True
            thread.join()


class _PoolRun:
    """State of one ``imap`` call, shared by the consumer and the managing thread."""

    def __init__(self, pool: DecodePool, paths: list[str]):
        self.pool, self.paths = pool, paths
        self.results: dict[int, list[Decoded]] = {}  # by video: its items not yet taken
        self.next_dispatch = self.consumed = 0
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.stopping = False

    def take(self, index: int) -> Decoded:
        """Block until an item of video ``index`` is in, then hand it over (its final one lets the pool
        fetch more)."""
        with self.cond:
            while not self.results.get(index) and self.error is None:
                self.cond.wait(0.5)
            if self.error is not None:
                raise self.error
            item = self.results[index].pop(0)
            if item.final:
                self.consumed = index + 1
                del self.results[index]
            return item

    def manage(self) -> None:
        # Runs on its own thread: workers are started here, so PR_SET_PDEATHSIG (which follows the
        # starting thread) kills them when this thread ends, after they were asked to stop.
        workers: list[_Worker] = []
        try:
            count = min(self.pool.workers, len(self.paths))
            workers = [_Worker(self.pool.settings, self.pool.windows) for _ in range(count)]
            while not self.stopping and self.consumed < len(self.paths):
                self._dispatch(workers)
                listened = [w for w in workers if not self._throttled(w)]
                ready = wait([w.reader for w in listened], timeout=POLL_S)
                for slot, worker in enumerate(workers):
                    if worker.reader in ready:
                        workers[slot] = self._receive(worker)
                    elif worker.overdue(time.monotonic()):
                        workers[slot] = self._expire(worker)
        except BaseException as error:  # handed to the consumer, which raises it in its own thread
            with self.cond:
                self.error = error
                self.cond.notify_all()
        finally:
            for worker in workers:
                worker.stop(kill=worker.task is not None)
            for worker in workers:
                worker.join(timeout=5)

    def _dispatch(self, workers: list[_Worker]) -> None:
        for worker in workers:
            if not worker.ready or worker.task is not None:
                continue
            index = self.next_dispatch
            if index >= len(self.paths) or index >= self.consumed + self.pool.prefetch:
                return
            worker.assign(index, self.paths[index], self.pool.timeout)
            self.next_dispatch += 1

    def _receive(self, worker: _Worker) -> _Worker:
        """Read one message; a worker whose pipe closed has died and is replaced."""
        try:
            message = worker.reader.recv()
        except (EOFError, OSError):
            return self._replace(worker, f"decoder process died ({worker.exit_description()})")
        kind = message[0]
        if kind == "ready":
            worker.ready, worker.deadline = True, float("inf")
            return worker
        index, path = message[1], self.paths[message[1]]
        if kind == "part":
            start, end, pixels = message[2:]
            self._store(Decoded(index, path, pixels=pixels, span=(start, end), final=False))
            worker.deadline = time.monotonic() + self.pool.timeout  # the timeout counts from progress
            return worker
        if kind == "ok":
            facts = message[3] if len(message) > 3 else None
            self._store(Decoded(index, path, pixels=message[2], facts=facts))
        else:
            self._store(Decoded(index, path, error=message[2]))
        worker.finish(index)
        return worker

    def _throttled(self, worker: _Worker) -> bool:
        """Whether ``worker``'s video has ``PARTS_AHEAD`` windows waiting: not read until some are taken
        (its deadline waits too: it is waiting for us)."""
        if worker.task is None or len(self.results.get(worker.task[0], ())) < PARTS_AHEAD:
            return False
        worker.deadline = time.monotonic() + self.pool.timeout
        return True

    def _expire(self, worker: _Worker) -> _Worker:
        if worker.task is None:
            raise DecodePoolError(
                f"a decode worker did not start within {STARTUP_TIMEOUT_S:.0f} s; use workers=0 to decode "
                "in the main process"
            )
        return self._replace(worker, f"timed out after {self.pool.timeout:g} s (decoder killed)")

    def _replace(self, worker: _Worker, reason: str) -> _Worker:
        if worker.task is None:  # died before taking any work: a broken environment, not a bad file
            raise DecodePoolError(f"a decode worker exited on startup ({reason}); see its messages above")
        worker.stop(kill=True)
        worker.join(timeout=5)
        index, path = worker.task
        self._store(Decoded(index, path, error=reason))
        return _Worker(self.pool.settings, self.pool.windows)

    def _store(self, result: Decoded) -> None:
        with self.cond:
            self.results.setdefault(result.index, []).append(result)
            self.cond.notify_all()


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent goes; exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(0)


# glibc hands every freed block over 128 KiB back to the system at once (munmap) and trims the top of its
# heap: a worker's memory for each video (the decoder's frame buffers, 0.7 MB RGB frames, the clip) then
# comes back as fresh pages, video after video: 1,700-3,100 page faults a 640x360 clip, 2-26 % of its
# CPU time on the development machine (``benchmarks/bench_decode.py --part allocator``). A worker keeps
# what it freed instead, up to TRIM_THRESHOLD_BYTES at the top of its heap (what glibc's
# MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ would set; set either, and the worker leaves it to
# them). Workers only: the caller's process keeps its allocator as it is.
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD_BYTES = 64 << 20


def keep_freed_memory() -> bool:
    """Tune glibc's allocator of this process as a decode worker's (see above); False where it is
    not glibc's or the environment sets it."""
    if not sys.platform.startswith("linux"):
        return False
    if {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(
        mallopt(m_mmap_threshold, MMAP_THRESHOLD_BYTES) and mallopt(m_trim_threshold, TRIM_THRESHOLD_BYTES)
    )


def _worker_main(parent_pid: int, settings: FrameSettings, windows: WindowSettings | None = None) -> None:
    """Body of a worker process: decode tasks from stdin, answer on stdout, until end-of-file."""
    import signal

    _die_with_parent(parent_pid)
    keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # SIGTERM too (a scheduler may send it to the whole process group): dying here would record the
    # file being decoded as a failure; the parent stops us (SIGKILL) or dies and takes us (PDEATHSIG).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    reader = Connection(os.dup(0), writable=False)
    writer = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, not into the message stream
    import av  # noqa: F401  (imported before "ready" so its start-up is not billed to a task's timeout)
    import PIL.Image  # noqa: F401

    writer.send(("ready",))
    while True:
        try:
            task = reader.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        index, path = task
        messages = _window_messages(index, path, settings, windows) if windows else None
        try:
            for message in messages or [_answer(index, decode_one(path, settings))]:
                writer.send(message)
        except (BrokenPipeError, OSError):
            return


def _window_messages(index: int, path: str, settings: FrameSettings, windows: WindowSettings) -> Iterator:
    """The messages of one video read as windows: a "part" a window, then "ok" or "error"."""
    for item in decode_windows(path, settings, windows):
        if isinstance(item, dict):
            yield ("ok", index, None, item)
        elif isinstance(item, str):
            yield ("error", index, item)
        else:
            yield ("part", index, *item)


def _answer(index: int, result: tuple[np.ndarray, dict] | str) -> tuple:
    """The message for one decoded task: its clip and facts, or why it failed."""
    return ("error", index, result) if isinstance(result, str) else ("ok", index, *result)


if __name__ == "__main__":
    import ast

    _worker_main(
        int(sys.argv[1]),
        FrameSettings(**ast.literal_eval(sys.argv[2])),
        WindowSettings.from_dict(ast.literal_eval(sys.argv[3]) if len(sys.argv) > 3 else None),
    )
