"""The files of an index, named in one place.

An index ``EMB.npy`` is a set of files beside each other::

    EMB.npy              the rows (N, C) float32                 written together by store.write_index_files,
    EMB.json             the sidecar (format, model, hashes)     the sidecar last
    EMB.rows.parquet     one record a row
    EMB.failures.jsonl   the files that could not be encoded
    EMB.ann.faiss        the approximate index (optional)        index.ann
    EMB.ann.json         its description
    EMB.thumbs/          keyframes a row (optional)              video.thumbnails
    EMB.npy.parts/       the work directory of an unfinished encode-videos run (jobs/)
    .EMB.npy.trash-PID   a work directory being deleted

``IndexFiles`` is the only code that spells these names; everything else asks it. Light: no imports
beyond the standard library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class IndexFiles:
    """The files of the index whose rows are ``npy`` (EMB.npy). ``IndexFiles.of`` also takes the
    sidecar's path (EMB.json), as every command does."""

    npy: Path

    @classmethod
    def of(cls, path: str | os.PathLike | IndexFiles) -> IndexFiles:
        if isinstance(path, IndexFiles):
            return path
        path = Path(path)
        return cls(path.with_suffix(".npy") if path.suffix == ".json" else path)

    @property
    def sidecar(self) -> Path:
        return self.npy.with_suffix(".json")

    @property
    def rows(self) -> Path:
        return self.npy.with_suffix(".rows.parquet")

    @property
    def failures(self) -> Path:
        return self.npy.with_suffix(".failures.jsonl")

    @property
    def ann(self) -> Path:
        return self.npy.with_suffix(".ann.faiss")

    @property
    def ann_meta(self) -> Path:
        return self.npy.with_suffix(".ann.json")

    @property
    def thumbs(self) -> Path:
        return self.npy.with_suffix(".thumbs")

    @property
    def work(self) -> Path:
        """The work directory of an unfinished encode-videos run."""
        return self.npy.with_name(self.npy.name + ".parts")

    @property
    def core(self) -> tuple[Path, Path, Path, Path]:
        """The files written together as one index (rows, sidecar, row records, failures)."""
        return (self.npy, self.sidecar, self.rows, self.failures)

    def trash(self, tag: str | int) -> Path:
        """Where a work directory goes to be deleted (renamed first, so a kill never leaves half)."""
        return self.npy.with_name(f".{self.npy.name}.trash-{tag}")

    def trash_folders(self) -> list[Path]:
        return sorted(self.npy.parent.glob(f".{self.npy.name}.trash-*"))

    def existing(self) -> list[Path]:
        """Every file and folder of the index that is there now (for summaries)."""
        every = (*self.core, self.ann, self.ann_meta, self.thumbs)
        return [path for path in every if path.exists()]
