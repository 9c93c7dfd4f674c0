"""The one atomic file writer: whole new files or the old ones, never half of one.

A file is written under a temporary name beside its destination, flushed to disk (fsync), given the
usual mode (0666 minus the umask: ``mkstemp`` makes owner-only files), then renamed onto the
destination. A reader, or a run killed at any instant, sees the old file or the new one.

``durable=False`` skips the fsync (4-7 ms a file on a busy disk): readers and killed runs still see
whole files only, but a power cut may leave an empty one. Only for caches that are checked on use and
remade (thumbnails).
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class atomic_path:
    """Context manager yielding a temporary path beside ``path``; on success the file written there is
    fsynced and renamed onto ``path``, on an exception it is removed.

    For writers that want a file name (``safetensors.save_file``, ``np.save`` of a path)::

        with atomic_path("model.safetensors") as tmp:
            save_file(tensors, str(tmp))
    """

    def __init__(self, path: str | os.PathLike, durable: bool = True):
        self.path, self.durable = Path(path), durable

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        try:
            if self.durable:
                _fsync(self.tmp)
            os.chmod(self.tmp, 0o666 & ~_umask())
            os.replace(self.tmp, self.path)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], durable: bool = True) -> Path:
    """Call ``write(binary_handle)`` on a temporary file beside ``path``, then put it in place atomically."""
    with atomic_path(path, durable) as tmp:
        with open(tmp, "wb") as handle:
            write(handle)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(data), durable)


def replace_folder(staging: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Put the finished folder ``staging`` (beside ``destination``) in place of ``destination``: every
    file in it and the folder itself fsynced, given the usual folder mode, then renamed; a folder
    already at ``destination`` is moved aside first and deleted after. A run killed at any instant
    leaves the old folder or the new one in place (and at worst a hidden leftover beside it)."""
    import shutil

    staging, destination = Path(staging), Path(destination)
    for folder, _, names in os.walk(staging):
        for name in names:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it owner-only
    old = None
    if destination.exists():
        old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        os.replace(destination, old)
    os.replace(staging, destination)
    _fsync(destination.parent)  # the rename itself survives a power cut
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return destination


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    # Linux reports it without changing it; os.umask can only be read by setting it (racy with threads).
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
