"""Assembling the finished index from a job's results: row order (kept rows first when growing),
the rows dropped from an earlier index, the files written, the approximate index refreshed and the
thumbnails made. Shared by every engine (``muse_infer.jobs.encode``, ``muse_infer.jobs.ray_engine``)
through ``OpenJob.finish``; the row-order rule is described in ``muse_infer.jobs.encode``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import IndexFileError, JobError
from ..filenames import name_bytes
from ..index import IndexFiles, PreviousIndex, Video, row_paths, update_index
from ..loading.identity import identity_difference
from ..video.thumbnails import ThumbnailStore, ThumbnailSummary, sync_thumbnails, thumbnail_sources
from .work import Entry, Known

logger = logging.getLogger(__name__)


def check_same_job(previous: dict, job: dict, what: str) -> None:
    differences = []
    for key in ("model", "settings", "root", "windows"):
        if previous.get(key) != job.get(key):
            if key == "model" and isinstance(previous.get(key), dict):
                differences.append(f"model ({identity_difference(previous[key], job[key])})")
            elif key == "windows":
                differences.append(
                    f"windows ({_describe_windows(previous.get(key))} vs {_describe_windows(job.get(key))})"
                )
            else:
                differences.append(f"{key} ({previous.get(key)!r} vs {job[key]!r})")
    if differences:
        raise JobError(
            f"{what} made with a different {', '.join(differences)}; run with the same --model, --frames, "
            "--window/--stride/--cuts and folder to continue it, or add --overwrite to start again"
        )


def _describe_windows(windows: dict | None) -> str:
    if not windows:
        return "a row a video"
    cuts = " at shot cuts" if windows.get("cuts") == "shots" else ""
    return f"--window {windows['window']:g} --stride {windows['stride']:g}{cuts}"


@dataclass
class FinishedIndex:
    """What ``finish_index`` wrote: the failures (one dict a skipped file), the row count, and what
    happened to the approximate index (or a hint to build one; None when there is nothing to say)."""

    failures: list[dict]
    rows: int
    index_note: str | None
    dropped: list[dict] = field(default_factory=list)  # {"path", "why"}: rows of the earlier index gone
    row_table: object = None  # the Arrow table of row records written (``row_table``)


def finish_index(
    out: Path,
    entries: list[Entry],
    known: dict[str, Known],
    job: dict,
    model_source: dict,
    backend: str,
    dim: int,
    fields: dict | None = None,
    previous: PreviousIndex | None = None,
) -> FinishedIndex:
    """Write the finished index ``out`` (EMB.npy) from the results of a run, and refresh its ANN index.

    entries: every file found under the root (``find_videos``), sorted; known: path -> ``Known`` result
    (an embedding (C,) or a failure reason, with the file's stats when encoded); job: the job dict
    (``root``, ``model`` identity, ``settings``); model_source / backend: how the model loads again and
    what ran it; dim: the embedding size C (for an index of no rows); fields: more sidecar fields that
    describe the run (e.g. {"precision": "bf16"}); previous: the index the run grows, as the job read
    it when it opened (``index.read_previous``; None: a new index). An entry without a current result
    (missing, or stats that differ) is recorded as a failure, never as a stale row. Row order:
    ``index.update`` (the earlier rows first while unchanged). Raises JobError, the work directory
    kept, when the index cannot be written or does not read back as written.
    """
    failures, results = _sort_results(entries, known, dim)
    videos = {
        path: Video(path, result.size, result.mtime_ns, result.rows(), result.spans, result.facts)
        for path, result in results.items()
    }
    described = {**(fields or {}), "root": job["root"], "model": job["model"], "model_source": model_source}
    described |= {"backend": backend, "settings": job["settings"]}
    found = [e.path for e in entries]
    keep = f"the encoded work is kept in {IndexFiles.of(out).work}: run the same command again to write the index"
    try:
        updated = update_index(out, videos, found, previous, dim, described, failures)
    except OSError as error:
        raise JobError(f"could not write the index {out} ({error.strerror or error}); {keep}") from None
    except IndexFileError as error:
        raise JobError(
            f"the index written to {out} does not read back as written ({error}); {keep}"
        ) from None
    except (ValueError, TypeError) as error:  # Arrow refusing a value: a bug, never a lost run
        raise JobError(f"could not write the index {out} ({error}; please report this); {keep}") from None
    rows = len(updated.written)
    return FinishedIndex(failures, rows, updated.ann_note, updated.dropped, updated.rows)


def _sort_results(
    entries: list[Entry], known: dict[str, Known], dim: int
) -> tuple[list[dict], dict[str, Known]]:
    """(failures in entries order, path -> current result of every file encoded and storable)."""
    failures, results = [], {}
    for entry in entries:
        result = known.get(entry.path)
        if entry.problem is not None:
            reason = entry.problem
        elif result is None or not result.matches(entry):
            reason = "not encoded (the file changed during the run?); run the command again"
        else:
            reason = result.reason or unstorable(entry.path, result, dim)
        if reason is not None:
            failures.append(
                {"path": entry.path, "reason": reason, "size": entry.size, "mtime_ns": entry.mtime_ns}
            )
        else:
            results[entry.path] = result
    return failures, results


def unstorable(path: str, result: Known, dim: int) -> str | None:
    """Why one encoded file's row record cannot go into the index (None: it can), so that it fails
    alone rather than the whole index: a name no file has, or an embedding (or window list) the model
    or a damaged work file left unusable."""
    try:
        name_bytes(path)
    except ValueError:
        return "its name cannot be stored (a lone surrogate that no file name has)"
    embedding = np.asarray(result.embedding) if result.embedding is not None else None
    if embedding is None or embedding.ndim not in (1, 2) or embedding.shape[-1] != dim:
        shape = "none" if embedding is None else "x".join(map(str, embedding.shape))
        return (
            f"its saved embedding has the wrong shape ({shape}, not {dim} values a row); run with --overwrite"
        )
    if not embedding.size:
        return "no row came out of it (no time window to encode)"
    rows = embedding.reshape(-1, dim)
    if not np.isfinite(rows).all():
        return "the model gave non-finite values (NaN or infinity) for it"
    if not np.einsum("ij,ij->i", rows, rows).all():
        return "the model gave an all-zero embedding for it (no direction to search)"
    if result.spans is not None and not _usable_spans(result.spans, len(rows)):
        return "its time windows are unusable (not finite, end before start, or not one a row)"
    return None


def _usable_spans(spans, count: int) -> bool:
    try:
        pairs = [(float(start), float(end)) for start, end in spans]
    except (TypeError, ValueError):
        return False
    return len(pairs) == count and all(np.isfinite(pair).all() and pair[0] <= pair[1] for pair in pairs)


def make_thumbnails(
    out: Path, root: str, rows, workers: int | None, progress: bool
) -> ThumbnailSummary | None:
    """The thumbnails step, run once the index ``out`` is written from ``rows`` (its row records,
    ``FinishedIndex.row_table``; videos under ``root``): keyframes for every row that has none, and
    none left for rows that are gone (``muse_infer.video.thumbnails``).

    Here rather than per batch because the finished index is the one list of rows: rows reused from
    an earlier run get theirs too, and a run killed during this step leaves a complete index whose
    next run finishes the thumbnails. A failure is logged, never raised: thumbnails are an extra.
    """
    try:
        columns = ("size", "mtime_ns", "start_s", "end_s")
        sources = thumbnail_sources(
            row_paths(rows), *(rows.column(name).to_pylist() for name in columns)
        )  # exact names (any bytes); moments: their range
        threads = workers or 2  # decoding only: the model's work is done by now
        return sync_thumbnails(ThumbnailStore(IndexFiles.of(out).thumbs), root, sources, threads, progress)
    except Exception as error:  # noqa: BLE001 - an extra must never cost the user the index
        logger.warning("thumbnails not made (%s); the index is complete", error)
        return None
