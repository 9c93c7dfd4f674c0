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

from ..errors import JobError, MuseError
from ..filenames import name_bytes
from ..index import EmbeddingIndex, refresh_ann, sidecar_path
from ..index.ann import plan_ann
from ..index.build import row_table
from ..index.store import FACT_COLUMNS, row_paths, write_index_files
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


def row_stats(index: EmbeddingIndex) -> list[list]:
    """[[path, size, mtime_ns], ...] of an index's rows (-1 where unknown)."""
    sizes, mtimes = (index.rows.column(c).to_pylist() for c in ("size", "mtime_ns"))
    return [
        [path, -1 if size is None else size, -1 if mtime is None else mtime]
        for path, size, mtime in zip(index.paths, sizes, mtimes, strict=True)
    ]


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
) -> FinishedIndex:
    """Write the finished index ``out`` (EMB.npy) from the results of a run, and refresh its ANN index.

    entries: every file found under the root (``find_videos``), sorted; known: path -> ``Known`` result
    (an embedding (C,) or a failure reason, with the file's stats when encoded); job: the job dict
    (``root``, ``model`` identity, ``settings``); model_source / backend: how the model loads again and
    what ran it; dim: the embedding size C (for an index of no rows); fields: more sidecar fields that
    describe the run (e.g. {"precision": "bf16"}). An entry without a current result (missing, or stats that differ) is recorded as a
    failure, never as a stale row. Row order: see this module's docstring. Engines other than the local
    one call this once all results are in.
    """
    failures, results = _sort_results(entries, known, dim)
    previous = _previous_rows(out, job)
    order, kept = _row_order(entries, results, previous)
    blocks = [results[p].rows() for p in order]
    embeddings = np.concatenate(blocks).astype(np.float32) if blocks else np.zeros((0, dim), np.float32)
    rows = _row_records(order, results, len(embeddings))
    described = {**(fields or {}), "root": job["root"], "model": job["model"], "model_source": model_source}
    described |= {"backend": backend, "settings": job["settings"]}
    dropped = _dropped_rows(previous, results, {e.path for e in entries})
    _write_checked(out, embeddings, rows, described, failures)
    note = _refresh_note(out, previous, kept, len(embeddings), dim)
    return FinishedIndex(failures, len(embeddings), note, dropped, rows)


def _write_checked(out: Path, embeddings: np.ndarray, rows, described: dict, failures: list[dict]) -> None:
    """Write the index files, then read them back and compare (every chunk hash, the whole rows table,
    the failures): the run's work directory, removed after this, is the only other copy of the work.
    Raises JobError (the work directory kept: the same command writes the index again) when either fails.
    """
    count, dim = embeddings.shape
    work = out.with_name(out.name + ".parts")
    keep = f"the encoded work is kept in {work}: run the same command again to write the index"
    try:
        write_index_files(out, [embeddings], count, dim, rows, described, failures)
    except OSError as error:
        raise JobError(f"could not write the index {out} ({error.strerror or error}); {keep}") from None
    except (ValueError, TypeError) as error:  # Arrow refusing a value: a bug, never a lost run
        raise JobError(f"could not write the index {out} ({error}; please report this); {keep}") from None
    problem = _written_problem(out, count, rows, failures)
    if problem is not None:
        raise JobError(f"the index written to {out} does not read back as written ({problem}); {keep}")


def _written_problem(out: Path, count: int, rows, failures: list[dict]) -> str | None:
    """What differs between the index files at ``out`` and what was written (None: nothing)."""
    from ..index.store import failure_line, failures_path

    try:
        index = EmbeddingIndex.load(out, verify=True, ann=False)
        written_failures = failures_path(out).read_text(encoding="ascii")
    except (MuseError, OSError, UnicodeDecodeError) as error:
        return str(error)
    if len(index) != count:
        return f"{len(index)} rows instead of {count}"
    if not index.rows.equals(rows):  # every column decoded from the file, compared value by value
        return "the row records differ"
    if written_failures != "".join(failure_line(f) for f in failures):
        return "the failures file differs"
    return None


def _row_records(order: list[str], results: dict[str, Known], count: int):
    """The rows table of the videos ``order``: a row a video, or a row a window (start_s, end_s) of
    moments; each row with its video's facts (duration, size, rate, codec; null where not recorded)."""
    paths, sizes, mtimes, starts, ends = [], [], [], [], []
    facts: dict[str, list] = {name: [] for name in FACT_COLUMNS}
    for path in order:
        result = results[path]
        spans = result.spans if result.spans is not None else [(None, None)]
        paths += [path] * len(spans)
        sizes += [result.size] * len(spans)
        mtimes += [result.mtime_ns] * len(spans)
        starts += [start for start, _ in spans]
        ends += [end for _, end in spans]
        for name, values in facts.items():
            values += [(result.facts or {}).get(name)] * len(spans)
    moments = any(start is not None for start in starts)
    return row_table(
        paths,
        count,
        sizes=sizes,
        mtimes_ns=mtimes,
        start_s=starts if moments else None,
        end_s=ends if moments else None,
        facts=facts,
    )


def row_facts(index: EmbeddingIndex) -> list[dict | None]:
    """Each row's facts dict (``video.facts``; None when its index recorded none), for a job that
    continues an index: its rows keep their facts."""
    present = [name for name in FACT_COLUMNS if name in index.rows.column_names]
    if not present:
        return [None] * len(index)
    columns = {name: index.rows.column(name).to_pylist() for name in present}
    out = []
    for row in range(len(index)):
        values = {name: columns[name][row] for name in present}
        out.append(values if any(v is not None for v in values.values()) else None)
    return out


def _dropped_rows(previous: _Previous | None, results: dict[str, Known], found: set[str]) -> list[dict]:
    """Videos of the earlier index whose rows the new one no longer holds as they were: the file was
    deleted, changed (its rows replaced by new ones), or cannot be read any more. One entry a video
    (a video of moments has several rows: ``rows`` says how many)."""
    counts: dict[tuple, int] = {}
    for path, size, mtime in previous.rows if previous else []:
        counts[(path, size, mtime)] = counts.get((path, size, mtime), 0) + 1
    dropped = []
    for (path, size, mtime), rows in counts.items():
        if path not in found:
            why = "deleted"
        elif path not in results:
            why = "unreadable now"
        elif (results[path].size, results[path].mtime_ns) != (size, mtime):
            why = "changed (encoded again)"
        else:
            continue
        dropped.append({"path": path, "why": why} | ({"rows": rows} if rows > 1 else {}))
    return dropped


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


@dataclass(frozen=True)
class _Previous:
    content_id: str
    rows: list[list]  # [[path, size, mtime_ns], ...] in row order


def _previous_rows(out: Path, job: dict) -> _Previous | None:
    """The finished index already at ``out`` (same model, settings and root), if any."""
    if not sidecar_path(out).exists():
        return None
    try:
        index = EmbeddingIndex.load(out, verify=False, ann=False)
        check_same_job(index.metadata, job, "")
    except MuseError:
        return None
    return _Previous(index.content_id, row_stats(index))


def _row_order(entries: list[Entry], results: dict[str, Known], previous: _Previous | None):
    """(videos in row order, how many leading rows are the previous index's rows unchanged, or None).

    With moments a video has several rows, consecutive; the previous rows are kept when every video
    of them is unchanged (same stats, same number of windows).
    """
    if previous is None:
        return [e.path for e in entries if e.path in results], None
    videos = list(dict.fromkeys(path for path, _, _ in previous.rows))  # in row order, once each
    stats = {path: (size, mtime) for path, size, mtime in previous.rows}
    unchanged = [
        path
        for path in videos
        if path in results and (results[path].size, results[path].mtime_ns) == stats[path]
    ]
    kept = set(unchanged)
    order = unchanged + [e.path for e in entries if e.path in results and e.path not in kept]
    kept_rows = sum(len(results[path].rows()) for path in unchanged)
    return order, kept_rows if kept_rows == len(previous.rows) and len(unchanged) == len(videos) else None


def _refresh_note(out: Path, previous: _Previous | None, kept: int | None, rows: int, dim: int) -> str | None:
    """Bring the ANN index up to date (never failing the run), or hint at building one."""
    try:
        note = refresh_ann(out, previous.content_id if previous else None, kept)
    except MuseError as error:
        return (
            f"approximate index not updated ({error}); searches are exact until: muse-infer index build {out}"
        )
    if note is None and rows and plan_ann(rows, dim).kind != "flat":
        return f"hint: {rows} rows search faster with an approximate index: muse-infer index build {out}"
    return note


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
        return sync_thumbnails(ThumbnailStore.for_index(out), root, sources, threads, progress)
    except Exception as error:  # noqa: BLE001 - an extra must never cost the user the index
        logger.warning("thumbnails not made (%s); the index is complete", error)
        return None
