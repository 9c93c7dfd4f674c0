"""What an encode job covers: the files and folders it was given (``Scope``), the folder its paths are
relative to, and the checks made before anything is written.

``encode-videos a.mp4 b.webm dir/ --out X.npy`` covers two files and a folder; paths in the index are
relative to their common folder. When ``X.npy`` already exists its folder is kept (every input must
lie inside it, else the command says to re-root the index or start again), so a later run with other
inputs grows the same index: videos inside what the run covers are found again (new, changed,
deleted), rows of videos outside it stay as they are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import IndexFileError, JobError
from ..filenames import display_name
from ..index import IndexFiles, is_our_index, read_sidecar
from .work import Entry, file_entry, find_videos


@dataclass(frozen=True)
class Scope:
    """What a run covers under ``root``: whole ``folders`` (relative POSIX paths, "" for the root
    itself) and single ``files`` (relative POSIX paths)."""

    root: Path
    folders: tuple[str, ...] = ("",)
    files: tuple[str, ...] = ()

    def covers(self, path: str) -> bool:
        """Whether the video at ``path`` (relative to the root) is one this run looks at."""
        return path in self.files or any(
            folder == "" or path == folder or path.startswith(folder + "/") for folder in self.folders
        )

    def find(self) -> list[Entry]:
        """The entries of every video covered: files found in the folders (by extension) and the files
        named (whatever their extension: they were asked for), once each, sorted by path."""
        entries = {e.path: e for folder in self.folders for e in find_videos(self.root, folder)}
        for path in self.files:
            entries.setdefault(path, file_entry(os.path.join(self.root, path), path))
        return sorted(entries.values(), key=lambda entry: entry.path)

    def holds_a_video(self) -> bool:
        """Whether anything is to be encoded: a file named, or a video file in a folder (stops at one)."""
        from ..video.reader import VIDEO_EXTENSIONS

        return bool(self.files) or any(
            os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
            for folder in self.folders
            for _, _, names in os.walk(self.root / folder)
            for name in names
        )


def check_inputs(
    inputs: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False
) -> tuple[Scope, Path]:
    """(what the run covers, ``out`` made absolute), or JobError when an input is missing, ``out`` is
    not a writable .npy path, nothing is to be encoded, or the inputs lie outside the folder of the
    index already at ``out`` (without ``overwrite``)."""
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not inputs:
        raise JobError("no videos given: name the folders or files to encode")
    for given in inputs:
        if not os.path.lexists(given):
            raise JobError(
                f"{display_name(os.fspath(given))}: no such file, and not a folder: give the folder of your "
                "videos, or video files"
            )
    out = _check_out(Path(out))
    places = [_real(given) for given in inputs]
    recorded = None if overwrite else _recorded_root(out)
    root = recorded or Path(os.path.commonpath([p if p.is_dir() else p.parent for p in places]))
    outside = [given for given, place in zip(inputs, places, strict=True) if not place.is_relative_to(root)]
    if outside:
        raise JobError(_outside_message(outside[0], root, out))
    scope = _scope(root, places)
    if not scope.holds_a_video():
        raise JobError(_empty_message(inputs, out))
    refuse_foreign_files(out, IndexFiles.of(out).work)
    return scope, out


def _real(given) -> Path:
    """An input's place: a folder resolved (links followed), a file's folder resolved and its own name
    kept (a link to a video is that name in the index, as when found in a folder)."""
    path = Path(os.path.abspath(given))
    return Path(os.path.realpath(path)) if path.is_dir() else Path(os.path.realpath(path.parent)) / path.name


def _scope(root: Path, places: list[Path]) -> Scope:
    folders = sorted({p.relative_to(root).as_posix() for p in places if p.is_dir()})
    folders = [f if f != "." else "" for f in folders]
    if "" in folders:
        folders = [""]  # the whole root
    files = sorted({p.relative_to(root).as_posix() for p in places if not p.is_dir()})
    return Scope(root, tuple(folders), tuple(files))


def _check_out(out: Path) -> Path:
    if out.suffix != ".npy":
        raise JobError(f"--out {out}: the index file must end with .npy (e.g. --out embeddings.npy)")
    if out.is_dir():
        raise JobError(f"--out {out}: is a folder; give a file name such as {out / 'embeddings.npy'}")
    existing = next(p for p in out.absolute().parents if p.exists())  # made only once the run starts
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise JobError(
            f"--out {out}: cannot create or write its folder ({existing} is not a writable folder)"
        )
    return out.absolute()


def _recorded_root(out: Path) -> Path | None:
    """The folder of the index at ``out`` (or of its unfinished run), None when there is neither."""
    files = IndexFiles.of(out)
    try:
        job = json.loads((files.work / "job.json").read_text())
        if isinstance(job, dict) and job.get("root"):
            return Path(job["root"])
    except (OSError, ValueError):
        pass
    if not is_our_index(out):
        return None
    try:
        root = read_sidecar(files.sidecar).get("root")
    except IndexFileError:
        return None
    return Path(root) if root else None


def _outside_message(given, root: Path, out: Path) -> str:
    return (
        f"{display_name(os.fspath(given))} is not inside {display_name(str(root))}, the folder of the index "
        f"{out}: if the videos moved, run `muse-infer index reroot {out} NEW_FOLDER` first; else use "
        "another --out, or --overwrite to start the index again"
    )


def _empty_message(inputs: list, out: Path) -> str:
    kept = f"; the index {out} is left as it is" if out.exists() else ""
    named = ", ".join(display_name(os.fspath(given)) for given in inputs[:3])
    return (
        f"{named}: no video files in this folder or below it (looked for .mp4, .mkv, .webm, .mov, .avi and "
        f"other video extensions), nothing to encode{kept}"
    )


def refuse_foreign_files(out: Path, work: Path) -> None:
    """JobError when a file the index would replace (OUT.npy, its sidecar, rows or failures file) exists
    but is not part of a muse-infer index nor of one of our unfinished runs: never replaced, even with
    --overwrite."""
    if is_our_index(out) or (work / "job.json").is_file():
        return
    for path in IndexFiles.of(out).core:
        if path.exists():
            raise JobError(
                f"--out {out}: {path} exists and was not written by muse-infer (no index sidecar beside it); "
                "it is not replaced, even with --overwrite: choose another --out, or move that file away"
            )
