"""Progress of a long step, shown one way everywhere: a labelled tqdm bar on a terminal, plain lines
into a log file.

On a terminal (stderr is a TTY) the bar shows count, rate and time left. Redirected, a bar's ``\\r``
updates would fill the log with one long line, so instead a line such as
``encoding: 40/230 videos, 2 failed, 1.9 videos/s, about 1 min 40 s left`` is written every
``LINE_SECONDS`` seconds and once at the end.

    with progress_bar(len(paths), "encoding", unit="video") as bar:
        bar.status(decoded=12)     # what goes on before anything is counted (shown, not counted)
        bar.update(8, failed=1)    # 8 videos done, 1 of them failed
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

LINE_SECONDS = 30.0


def progress_bar(
    total: int, label: str, unit: str = "video", enabled: bool = True, stream: TextIO | None = None
):
    """A bar over ``total`` items named ``label`` (a ``TerminalBar`` on a TTY, a ``LineProgress``
    otherwise, ``NoProgress`` when not ``enabled``)."""
    stream = stream or sys.stderr
    if not enabled:
        return NoProgress()
    if _is_terminal(stream):
        return TerminalBar(total, label, unit, stream)
    return LineProgress(total, label, unit, stream)


def announce(message: str, enabled: bool = True, stream: TextIO | None = None) -> None:
    """One line about a step that is starting (e.g. "loading model ViT-B-32 ..."), when ``enabled``."""
    if enabled:
        print(message, file=stream or sys.stderr, flush=True)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class NoProgress:
    """Shows nothing."""

    def update(self, count: int = 1, **status) -> None:
        pass

    def status(self, **values) -> None:
        """Show ``values`` (e.g. decoded=12) without counting anything: progress between counts."""
        self.update(0, **values)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TerminalBar(NoProgress):
    """tqdm with a label from the start (no unlabelled first frame), rate and time left."""

    def __init__(self, total: int, label: str, unit: str, stream: TextIO):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, unit=unit, file=stream, dynamic_ncols=True)

    def update(self, count: int = 1, **status) -> None:
        if status:
            self.bar.set_postfix(status, refresh=False)
        self.bar.update(count)

    def close(self) -> None:
        self.bar.close()


class LineProgress(NoProgress):
    """A plain line every ``every`` seconds and one at the end (when anything was counted)."""

    def __init__(self, total: int, label: str, unit: str, stream: TextIO, every: float = LINE_SECONDS):
        self.total, self.label, self.unit, self.stream, self.every = total, label, unit, stream, every
        self.done, self.shown = 0, {}  # counted so far, the latest status values
        self.started = self.last = time.monotonic()
        self.written = None  # (done, status) of the last line written: close repeats no line

    def update(self, count: int = 1, **status) -> None:
        self.done += count
        self.shown.update(status)
        if time.monotonic() - self.last >= self.every:
            self._write()

    def close(self) -> None:
        if self.done and self.last != -1 and self.written != (self.done, self.shown):
            self._write()
        self.last = -1  # closed: a second close writes nothing

    def _write(self) -> None:
        self.last = time.monotonic()
        self.written = (self.done, dict(self.shown))
        self.stream.write(
            progress_line(self.label, self.done, self.total, self.unit, self.shown, self.last - self.started)
        )
        self.stream.write("\n")
        self.stream.flush()


def progress_line(label: str, done: int, total: int, unit: str, status: dict, seconds: float) -> str:
    """``encoding: 40/230 videos, 2 failed, 1.9 videos/s, about 1 min 40 s left``."""
    parts = [f"{label}: {done}/{total} {unit}s"]
    parts += [f"{value} {key}" for key, value in status.items() if value]
    if seconds > 0 and done:
        rate = done / seconds
        parts.append(f"{rate:.3g} {unit}s/s")
        if done < total:
            parts.append(f"about {duration_text((total - done) / rate)} left")
    return ", ".join(parts)


def duration_text(seconds: float) -> str:
    """``45 s``, ``3 min 05 s``, ``2 h 10 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
