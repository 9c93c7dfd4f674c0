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
``("ok", index, pixels)`` or ``("error", index, reason)`` for each task. ``pixels`` is the clip as
``muse_infer.video.reader.read_clip`` gives it, (t, S, S, 3) uint8: 1.8 MB for 12 frames at 224 px,
a quarter of the float32 frames. Normalising it is the model side's job
(``muse_infer.video.frames.clip_inputs``), so workers import neither torch nor anything of the model.
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

from ..errors import DecodePoolError, VideoDecodeError
from . import reader
from .frames import FrameSettings

STARTUP_TIMEOUT_S = 180.0  # starting a fresh interpreter with PyAV on a busy machine
POLL_S = 0.05  # how often the pool notices that the consumer has taken results


@dataclass
class Decoded:
    """One video's clip (t, S, S, 3) uint8 (``reader.read_clip``), or the reason it failed."""

    index: int
    path: str
    pixels: np.ndarray | None = None
    error: str | None = None


def decode_one(path: str, settings: FrameSettings) -> np.ndarray | str:
    """The clip of one video, (t, S, S, 3) uint8, or a one-line reason why it cannot be read. Never raises."""
    try:
        return reader.read_clip(path, settings)
    except VideoDecodeError as error:
        return error.reason
    except MemoryError:
        return "out of memory while decoding"
    except Exception as error:  # a decoder bug on one odd file must not stop a folder of videos
        return f"the decoder failed unexpectedly ({_one_line(error)}); please report this file"


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text[:200] or "no details"


def decode_inline(paths: Sequence[str], settings: FrameSettings) -> Iterator[Decoded]:
    """Decode in this process, one after another (no parallelism, no timeout)."""
    for index, path in enumerate(paths):
        result = decode_one(path, settings)
        if isinstance(result, str):
            yield Decoded(index, path, error=result)
        else:
            yield Decoded(index, path, pixels=result)


class _Worker:
    """One decoder subprocess and the task it is working on."""

    def __init__(self, settings: FrameSettings):
        env = dict(os.environ)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        args = [sys.executable, "-m", "muse_infer.video.pool", str(os.getpid()), repr(asdict(settings))]
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

    def __init__(self, settings: FrameSettings, workers: int, timeout: float = 120.0, prefetch: int = 16):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.settings, self.workers, self.timeout = settings, workers, timeout
        self.prefetch = max(prefetch, workers)

    def imap(self, paths: Sequence[str]) -> Iterator[Decoded]:
        run = _PoolRun(self, list(paths))
        thread = threading.Thread(target=run.manage, name="muse-decode-pool", daemon=True)
        thread.start()
        try:
            for index in range(len(run.paths)):
                yield run.take(index)
        finally:
            run.stopping = True
            thread.join()


class _PoolRun:
    """State of one ``imap`` call, shared by the consumer and the managing thread."""

    def __init__(self, pool: DecodePool, paths: list[str]):
        self.pool, self.paths = pool, paths
        self.results: dict[int, Decoded] = {}
        self.next_dispatch = self.consumed = 0
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.stopping = False

    def take(self, index: int) -> Decoded:
        """Block until result ``index`` is in, then hand it over (and let the pool fetch more)."""
        with self.cond:
            while index not in self.results and self.error is None:
                self.cond.wait(0.5)
            if self.error is not None:
                raise self.error
            self.consumed = index + 1
            return self.results.pop(index)

    def manage(self) -> None:
        # Runs on its own thread: workers are started here, so PR_SET_PDEATHSIG (which follows the
        # starting thread) kills them when this thread ends, after they were asked to stop.
        workers: list[_Worker] = []
        try:
            workers = [_Worker(self.pool.settings) for _ in range(min(self.pool.workers, len(self.paths)))]
            while not self.stopping and self.consumed < len(self.paths):
                self._dispatch(workers)
                ready = wait([w.reader for w in workers], timeout=POLL_S)
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
        if kind == "ok":
            self._store(Decoded(index, path, pixels=message[2]))
        else:
            self._store(Decoded(index, path, error=message[2]))
        worker.finish(index)
        return worker

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
        return _Worker(self.pool.settings)

    def _store(self, result: Decoded) -> None:
        with self.cond:
            self.results[result.index] = result
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


def _worker_main(parent_pid: int, settings: FrameSettings) -> None:
    """Body of a worker process: decode tasks from stdin, answer on stdout, until end-of-file."""
    import signal

    _die_with_parent(parent_pid)
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
        message = _answer(index, decode_one(path, settings))
        try:
            writer.send(message)
        except (BrokenPipeError, OSError):
            return


def _answer(index: int, result: np.ndarray | str) -> tuple:
    """The message for one decoded task: its clip, or why it failed."""
    return ("error", index, result) if isinstance(result, str) else ("ok", index, result)


if __name__ == "__main__":
    import ast

    _worker_main(int(sys.argv[1]), FrameSettings(**ast.literal_eval(sys.argv[2])))
