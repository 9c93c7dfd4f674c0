"""Re-rooting an index whose videos moved: ``muse-infer index reroot EMB.npy NEW_FOLDER``.

An index's paths are relative to the folder that was encoded (its sidecar's ``root``). When the videos
move (a new disk, a renamed share), ``reroot_index`` points the index at their new folder after
checking that every video is there with the size it had when encoded; nothing is encoded again.
A copy usually changes a file's modification time, which a later ``encode-videos`` run would take for
a changed file: so each video found with its size has its new time recorded (and its keyframes keep
their names). Videos missing or of another size are refused, listed, unless ``allow_missing``: they
then stay in the index as they were (``encode-videos`` on the new folder drops or re-encodes them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IndexInputError
from ..filenames import display_name
from .arrow_columns import numbers
from .files import IndexFiles


@dataclass
class RerootReport:
    """What ``reroot_index`` did: the new root, the videos checked, those missing or resized there
    (exact paths), and how many had a new modification time recorded."""

    root: str
    videos: int
    missing: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    retimed: int = 0

    def line(self) -> str:
        text = f"re-rooted to {display_name(self.root)}: {self.videos} videos checked"
        if self.retimed:
            text += f", {self.retimed} with a new modification time recorded"
        if self.missing or self.resized:
            text += f"; {len(self.missing)} missing and {len(self.resized)} of another size kept as they were"
        return text


def reroot_index(path, new_root: str | os.PathLike, allow_missing: bool = False) -> RerootReport:
    """Point the index at ``path`` (EMB.npy) at ``new_root``, checking its videos there (see the module
    docstring). Raises ``IndexInputError`` naming the videos that are missing or of another size,
    unless ``allow_missing``."""
    from .embedding_index import EmbeddingIndex

    files = IndexFiles.of(path)
    root = Path(os.path.realpath(new_root))
    if not root.is_dir():
        raise IndexInputError(
            f"{display_name(os.fspath(new_root))}: not a folder (give the videos' new folder)"
        )
    index = EmbeddingIndex.load(files.npy, ann=False)
    paths = list(index.paths)
    sizes, mtimes = (index.rows.column(c).to_pylist() for c in ("size", "mtime_ns"))
    found = _stats_under(root, dict(zip(paths, sizes, strict=True)))
    report = RerootReport(str(root), len(found))
    report.missing = [p for p, stat in found.items() if stat is None]
    report.resized = [p for p, stat in found.items() if stat == "resized"]
    if (report.missing or report.resized) and not allow_missing:
        raise IndexInputError(_refusal(root, report))
    new_mtimes = [
        stat[1] if isinstance(stat := found[p], tuple) else old for p, old in zip(paths, mtimes, strict=True)
    ]
    report.retimed = len({p for p, old, new in zip(paths, mtimes, new_mtimes, strict=True) if old != new})
    rows = index.rows
    column = rows.column_names.index("mtime_ns")
    rows = rows.set_column(column, rows.schema.field(column), _int64_array(new_mtimes))
    from .store import rewrite_records

    rewrite_records(files.npy, rows, {"root": str(root)})
    _rename_keyframes(files, index.rows, new_mtimes)
    return report


def _stats_under(root: Path, recorded: dict[str, int | None]) -> dict[str, tuple | str | None]:
    """Each video -> (size, mtime_ns) under ``root`` when there with its recorded size, "resized", or
    None when missing."""
    found = {}
    for path, size in recorded.items():
        try:
            info = os.stat(root / path)
        except OSError:
            found[path] = None
            continue
        found[path] = (
            "resized"
            if size is not None and size >= 0 and info.st_size != size
            else (info.st_size, info.st_mtime_ns)
        )
    return found


def _refusal(root: Path, report: RerootReport) -> str:
    def named(paths: list[str]) -> str:
        shown = ", ".join(display_name(p) for p in paths[:3])
        return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")

    problems = []
    if report.missing:
        problems.append(f"{len(report.missing)} of its videos are not there ({named(report.missing)})")
    if report.resized:
        problems.append(f"{len(report.resized)} have another size ({named(report.resized)})")
    return (
        f"{display_name(str(root))}: {'; '.join(problems)}; nothing was changed. Give the folder that holds "
        "the moved videos, or add --allow-missing to re-root anyway (encode-videos on the new folder then "
        "drops or re-encodes those)"
    )


def _int64_array(values: list):
    import pyarrow as pa

    return numbers(values, pa.int64())


def _rename_keyframes(files: IndexFiles, rows, new_mtimes: list) -> None:
    """Keyframes are named by a row's path, size, time and range: follow the new times."""
    from ..video.thumbnails import ThumbnailStore, thumbnail_sources
    from .store import row_paths

    store = ThumbnailStore(files.thumbs)
    if not store.folder.is_dir():
        return
    columns = [rows.column(name).to_pylist() for name in ("size", "mtime_ns", "start_s", "end_s")]
    paths = row_paths(rows)
    old = thumbnail_sources(paths, *columns)
    new = thumbnail_sources(paths, columns[0], new_mtimes, columns[2], columns[3])
    for before, after in zip(old, new, strict=True):
        if before.key == after.key:
            continue
        for source, target in zip(store.files(before), store.files(after), strict=True):
            if source.exists() and not target.exists():
                os.replace(source, target)
