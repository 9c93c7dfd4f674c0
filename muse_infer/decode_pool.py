"""Decode videos in worker processes, in input order, each decode cut off after a per-file timeout.

Why plain subprocesses (``python -m muse_infer.decode_pool``) and not ``multiprocessing``:
- a decode that hangs inside FFmpeg cannot be interrupted, only its process killed; a pool of our own
  processes lets us kill one worker and start another (``concurrent.futures`` cannot kill one task);
- the ``spawn`` start method re-runs the caller's ``__main__`` script in every worker, which breaks
  SDK users whose scripts lack an ``if __name__ == "__main__":`` guard; ``fork`` after torch has
  started its threads can deadlock. A fresh interpreter avoids both.
Workers die with the process that started them (Linux ``PR_SET_PDEATHSIG``, and end-of-file on
their pipes), so a ``kill -9`` of the main process leaves no decoder behind, hung or not.

Protocol over the worker's stdin/stdout (pickled ``multiprocessing.connection`` messages):
parent -> worker ``(index, path)`` or ``None`` (stop); worker -> parent ``("ready",)``, then
``("pixels", index, pixels, mask)``, ``("ok", index, frames, mask)`` or ``("error", index, reason)``
for each task. "pixels" sends the uint8 pixels the CLIP-normalised frames were computed from (4x
less data through the pipe, which bounds throughput with many workers: 7 MB of float32 a 12-frame
video); the parent normalises them again with the same float32 operations, so the frames are
bit-identical to ``load_video``'s. A worker checks that before sending and sends "ok" (float32)
whenever the round trip is not exact.

Test hook: ``MUSE_TEST_DECODE_DELAY="PATTERN=SECONDS[;PATTERN=SECONDS...]"`` makes a decode of a
file whose name matches the glob PATTERN sleep first, to test timeouts without real hangs.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait

import numpy as np

TEST_DELAY_ENV = "MUSE_TEST_DECODE_DELAY"
STARTUP_TIMEOUT_S = 180.0  # importing torch and PyAV in a fresh interpreter on a busy machine
POLL_S = 0.05  # how often the pool notices that the consumer has taken results


class DecodePoolError(RuntimeError):
    """The decode workers could not be started or failed as a whole (not one bad file)."""


@dataclass(frozen=True)
class DecodeSettings:
    """How frames are sampled and sized (``muse_infer.video.load_video`` arguments)."""

    max_frames: int = 12
    framerate: float = 1.0
    slice_mode: str = "uniform"
    size: int = 224


@dataclass
class Decoded:
    """One video's frames (T, 3, size, size) float32 and mask (T,) int64, or the reason it failed."""

    index: int
    path: str
    frames: np.ndarray | None = None
    mask: np.ndarray | None = None
    error: str | None = None


def decode_one(path: str, settings: DecodeSettings) -> tuple[np.ndarray, np.ndarray] | str:
    """(frames, mask) of one video, or a one-line reason why it cannot be read. Never raises."""
    from .video import VideoDecodeError, load_video

    try:
        _test_delay(path)
        frames, mask = load_video(
            path, settings.max_frames, settings.framerate, settings.slice_mode, settings.size
        )
        return frames.numpy(), mask.numpy()
    except VideoDecodeError as error:
        return error.reason
    except MemoryError:
        return "out of memory while decoding"
    except Exception as error:  # a decoder bug on one odd file must not stop a folder of videos
        return f"decoder error: {type(error).__name__}: {error}"


def normalise_pixels(pixels: np.ndarray) -> np.ndarray:
    """(n, 3, S, S) uint8 -> float32 CLIP-normalised, by the element-wise float32 operations of
    ``muse_infer.video.preprocess_frame`` (each element rounds the same way, hence the same bits)."""
    from .video import CLIP_MEAN, CLIP_STD

    mean = np.float32(CLIP_MEAN)[:, None, None]
    std = np.float32(CLIP_STD)[:, None, None]
    return (pixels.astype(np.float32) / np.float32(255) - mean) / std


def frames_to_pixels(frames: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The uint8 pixels (n, 3, S, S) of the n real frames of ``frames`` (T, 3, S, S), or None when
    ``normalise_pixels`` of them does not give back exactly these frames."""
    from .video import CLIP_MEAN, CLIP_STD

    real = frames[: int(mask.sum())]
    mean = np.float32(CLIP_MEAN)[:, None, None]
    std = np.float32(CLIP_STD)[:, None, None]
    pixels = np.clip(np.rint((real * std + mean) * np.float32(255)), 0, 255).astype(np.uint8)
    return pixels if np.array_equal(normalise_pixels(pixels), real) else None


def pixels_to_frames(pixels: np.ndarray, max_frames: int) -> np.ndarray:
    """(n, 3, S, S) uint8 -> (max_frames, 3, S, S) float32 frames, zero after the n real ones."""
    frames = np.zeros((max_frames, *pixels.shape[1:]), dtype=np.float32)
    frames[: len(pixels)] = normalise_pixels(pixels)
    return frames


def _test_delay(path: str) -> None:
    for rule in filter(None, os.environ.get(TEST_DELAY_ENV, "").split(";")):
        pattern, _, seconds = rule.rpartition("=")
        if fnmatch.fnmatch(os.path.basename(path), pattern):
            time.sleep(float(seconds))


def decode_inline(paths: Sequence[str], settings: DecodeSettings) -> Iterator[Decoded]:
    """Decode in this process, one after another (no parallelism, no timeout)."""
    for index, path in enumerate(paths):
        result = decode_one(path, settings)
        if isinstance(result, str):
            yield Decoded(index, path, error=result)
        else:
            yield Decoded(index, path, *result)


class _Worker:
    """One decoder subprocess and the task it is working on."""

    def __init__(self, settings: DecodeSettings):
        env = dict(os.environ)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        args = [sys.executable, "-m", "muse_infer.decode_pool", str(os.getpid()), repr(asdict(settings))]
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

    def __init__(self, settings: DecodeSettings, workers: int, timeout: float = 120.0, prefetch: int = 16):
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
            result = self.results.pop(index)
        if result.frames is not None and result.frames.dtype == np.uint8:
            result.frames = pixels_to_frames(result.frames, len(result.mask))
        return result

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
        if kind in ("ok", "pixels"):  # uint8 pixels are normalised by the consumer, off this pump thread
            self._store(Decoded(index, path, frames=message[2], mask=message[3]))
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


def _worker_main(parent_pid: int, settings: DecodeSettings) -> None:
    """Body of a worker process: decode tasks from stdin, answer on stdout, until end-of-file."""
    import signal

    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    reader = Connection(os.dup(0), writable=False)
    writer = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, not into the message stream
    import torch

    from . import video  # noqa: F401  (import before "ready" so startup is not billed to a task)

    torch.set_num_threads(1)  # the main process runs the model; workers should not compete for cores
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


def _answer(index: int, result: tuple[np.ndarray, np.ndarray] | str) -> tuple:
    """The message for one decoded task: an error, uint8 pixels when exact, else float32 frames."""
    if isinstance(result, str):
        return ("error", index, result)
    frames, mask = result
    pixels = frames_to_pixels(frames, mask)
    return ("ok", index, frames, mask) if pixels is None else ("pixels", index, pixels, mask)


if __name__ == "__main__":
    import ast

    _worker_main(int(sys.argv[1]), DecodeSettings(**ast.literal_eval(sys.argv[2])))
