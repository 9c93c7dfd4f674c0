"""The resumable folder job behind ``muse-infer encode-videos DIR --out EMB.npy`` (the local engine).

Files (beside ``EMB.npy``; see ``muse_infer.index`` for the finished index):
- ``EMB.npy.parts/`` the work directory while a run is unfinished:
  ``job.json`` (model identity, frame settings, root folder: a resume must match them),
  ``chunk-NNNNNN.npz`` (``embeddings`` (n, C) float32 and ``records``, UTF-8 JSON
  ``{"done": [[path, size, mtime_ns], ...], "failed": [[path, size, mtime_ns, reason], ...]}``; a run
  of moments (``windows``) adds ``"spans": [[[start_s, end_s], ...], ...]``, each done video's windows,
  and its embeddings hold every window's row, video after video),
  ``lock`` (held with ``flock`` by the running job, so two runs cannot write one index);
  with ``--engine ray`` also ``plan.json`` (``muse_infer.jobs.shards``), its shards' results being
  chunk files too, so either engine resumes the other's work.
  Every file is written to a temporary name, fsynced and renamed, so a kill leaves whole files only.
- The finished index (``EMB.npy``, ``EMB.rows.parquet``, ``EMB.failures.jsonl``, ``EMB.json``; see
  ``muse_infer.index.store``) written at the end by ``muse_infer.jobs.assemble.finish_index``, sidecar
  last; then the work directory is renamed away and deleted. An approximate index beside it (``EMB.ann.*``) is brought up
  to date: new rows added where its kind allows, rebuilt where it does not (the summary says which).

Resume: a run reuses every result in the work directory (or, when there is none, in the finished
index) whose file is still there with the same size and mtime, and encodes only the rest. Files
that failed are not retried (a file that hangs would hang again) unless they changed or
``retry_failed`` is set. Removed files leave the index. A first run's rows are in sorted path order;
a later run keeps the rows of unchanged files in their order (so their row numbers stay while nothing
is removed) and appends new and changed files, sorted; a changed file's old row is dropped, so no stale
row survives (with moments: none of its windows). Results are stored in whole model batches (see
``VideoEncoder.encode_groups``), so a resumed run forms the same batches as an uninterrupted one
with the same ``batch_size``, and its rows are bit-identical; new files or another batch size change
rows only by float rounding (<= 1e-7 measured).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..encoders import VideoEncoder, VideoResult
from ..errors import IndexFileError, JobError
from ..index import EmbeddingIndex, failures_path, rows_path, sidecar_path
from ..index.ann import ann_meta_path, ann_path, owned_ann_file, read_ann_meta
from ..index.build import is_index
from ..index.store import read_sidecar
from ..progress import progress_bar
from ..video.thumbnails import ThumbnailStore, ThumbnailSummary
from ..video.windows import WindowSettings
from .assemble import check_same_job, finish_index, make_thumbnails, row_stats
from .work import ChunkStore, Entry, Known, find_videos

logger = logging.getLogger(__name__)
JOB_FORMAT, JOB_FORMAT_VERSION = "muse-infer-encode-job", 1
FLUSH_SECONDS = 30.0  # a chunk is also written after this long, so a kill loses at most this much work


@dataclass
class JobSummary:
    """What a run did. ``exit_code``: 0 every video encoded, 1 some failed (the index holds the rest)."""

    out: Path
    total: int = 0
    encoded_now: int = 0
    reused: int = 0
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    processed_now: int = 0
    encode_seconds: float = 0.0
    thumbnails: ThumbnailSummary | None = None
    index_note: str | None = None  # what happened to the approximate index, or a hint
    dropped: list[dict] = field(default_factory=list)  # {"path", "why"}: earlier rows gone or replaced
    # Rows of an index of moments (None: a row a video): those kept from earlier runs, plus those of this
    # run as it goes (the progress line's "moments"), then the finished index's rows: one count.
    moments: int | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    @property
    def encoded(self) -> int:
        return self.total - len(self.failures)

    def line(self) -> str:
        rate = self.processed_now / self.encode_seconds if self.encode_seconds > 0 else 0.0
        text = (
            f"encoded {self.encoded} of {self.total} videos ({self.encoded_now} now, {self.reused} already done) "
            f"in {self.seconds:.1f} s"
            + (f" ({rate:.2f} videos/s)" if self.processed_now else "")
            + (f", {self.moments} moments" if self.moments is not None else "")
            + f" -> {self.out}"
        )
        if self.failures:
            kinds = Counter(_reason_kind(f["reason"]) for f in self.failures)
            listed = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
            text += f"; skipped {len(self.failures)} ({listed}): see {failures_path(self.out)}"
        if self.dropped:
            whys = Counter(d["why"] for d in self.dropped)
            listed = ", ".join(f"{n} {why}" for why, n in whys.most_common())
            rows = sum(d.get("rows", 1) for d in self.dropped)  # a video of moments: several rows
            text += f"; {rows} rows of the earlier index dropped ({listed})"
        if self.thumbnails is not None:
            text += f"; {self.thumbnails.line()}"
        if self.index_note:
            text += f"\n{self.index_note}"
        return text

    def to_dict(self) -> dict:
        """The machine-readable summary (``encode-videos --json``)."""
        files = [self.out, sidecar_path(self.out), rows_path(self.out), failures_path(self.out)]
        files += [ann_path(self.out), ann_meta_path(self.out), ThumbnailStore.for_index(self.out).folder]
        return {
            "out": str(self.out),
            "exit_code": self.exit_code,
            "videos": self.total,
            "encoded": self.encoded,
            "encoded_now": self.encoded_now,
            "already_done": self.reused,
            **({"moments": self.moments} if self.moments is not None else {}),
            "skipped": [{"path": f["path"], "reason": f["reason"]} for f in self.failures],
            "dropped": self.dropped,
            "files": [str(p) for p in files if p.exists()],
            "thumbnails": None if self.thumbnails is None else dataclasses.asdict(self.thumbnails),
            "approximate_index": self.index_note,
            "seconds": round(self.seconds, 3),
        }


def _reason_kind(reason: str) -> str:
    # "not a readable video container (Invalid data ...)" -> "not a readable video container"
    return reason.split(" (")[0].split(":")[0]


def parts_dir(out: Path) -> Path:
    """EMB.npy -> EMB.npy.parts (the work directory of an unfinished run)."""
    return out.with_name(out.name + ".parts")


def encode_folder(
    root: str | os.PathLike,
    out: str | os.PathLike,
    encoder: VideoEncoder,
    batch_size: int | None = None,
    workers: int | None = None,
    timeout: float = 120.0,
    chunk_size: int = 64,
    overwrite: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    thumbnails: bool = True,
    windows: WindowSettings | None = None,
) -> JobSummary:
    """Encode every video under ``root`` into the index ``out`` (EMB.npy), resuming earlier work.

    batch_size: videos a model call (None: ``encoder.default_batch_size``, 8 on the CPU, 64 on a GPU).
    chunk_size: results are saved every ``chunk_size`` videos (rounded up to whole batches) or
    ``FLUSH_SECONDS``. overwrite: discard a previous index or unfinished run made with another model,
    settings or folder (without it, such leftovers are an error). thumbnails: keep the keyframes of
    every row in ``EMB.thumbs/`` (``make_thumbnails``). windows: encode each video as moments, a row a
    time window (``muse_infer.video.windows``; None: a row a video). The window settings are part of
    the job: a resume or update with others is refused (like another model) unless ``overwrite``.
    Raises ``JobError`` for problems the user must fix; per-file failures are recorded and counted
    instead (``JobSummary.failures``).
    """
    options = _RunOptions(batch_size, workers, timeout, chunk_size, progress, windows)
    with open_job(root, out, encoder, overwrite, retry_failed, windows) as job:
        _encode_todo(job.root, job.todo, encoder, job.store, job.summary, options)
        return job.finish(thumbnails, workers, progress)


# --- The job's frame, shared by every engine (this module's and muse_infer.jobs.ray_engine) ------
# An engine opens the job, encodes ``job.todo`` into ``job.store`` (chunk files, any numbering), and
# calls ``job.finish()``: the lock, work directory, identity check, resume rule and assembly are these.


@dataclass
class OpenJob:
    """A folder job whose work directory is locked: what is found, what is already done, what to do.

    entries: every video under ``root``, sorted by path; known: results in the work directory (or the
    finished index), by path; todo: the entries to encode now (sorted; none with a ``problem``).
    """

    root: Path
    out: Path
    job: dict
    encoder: VideoEncoder
    store: ChunkStore
    entries: list[Entry]
    known: dict[str, Known]
    todo: list[Entry]
    summary: JobSummary
    started: float

    def finish(
        self, thumbnails: bool = True, workers: int | None = None, progress: bool = True
    ) -> JobSummary:
        """Write the index from every result in the work directory (rows in ``entries`` order), with
        ``thumbnails`` their keyframes (``make_thumbnails``, ``workers`` decoding threads), then remove
        the directory. Returns the summary, its ``seconds`` set."""
        known = self.store.load()
        backend = self.encoder.backend
        precision = getattr(backend, "precision", "fp32")  # how, not which model: not checked on search
        finished = finish_index(
            self.out,
            self.entries,
            known,
            self.job,
            backend.source,
            backend.name,
            self.encoder.embed_dim,
            fields={"precision": precision} | _windows_field(self.job),
        )
        self.summary.failures, self.summary.index_note = finished.failures, finished.index_note
        self.summary.dropped = finished.dropped
        self.summary.moments = finished.rows if self.job.get("windows") else None
        if thumbnails:
            self.summary.thumbnails = make_thumbnails(
                self.out, self.job["root"], finished.row_table, workers, progress
            )
        _retire(parts_dir(self.out), self.out)
        self.summary.seconds = time.monotonic() - self.started
        return self.summary


def _windows_field(job: dict) -> dict:
    """The sidecar's "windows" of a moments job ({} for a row a video: such sidecars stay as they were)."""
    return {"windows": job["windows"]} if job.get("windows") else {}


@contextmanager
def open_job(
    root: str | os.PathLike,
    out: str | os.PathLike,
    encoder: VideoEncoder,
    overwrite: bool = False,
    retry_failed: bool = False,
    windows: WindowSettings | None = None,
) -> Iterator[OpenJob]:
    """Lock ``out``'s work directory and read what is there (see ``encode_folder`` for the arguments).

    Raises ``JobError`` for problems the user must fix (bad folder, another run holds the lock, earlier
    work made with another model, settings or folder and no ``overwrite``).
    """
    root, out = check_locations(root, out)
    started = time.monotonic()
    job = {"format": JOB_FORMAT, "format_version": JOB_FORMAT_VERSION, "root": str(root)}
    job |= {"model": encoder.identity, "settings": encoder.settings}
    job["windows"] = windows.to_dict() if windows is not None else None  # None: a row a video
    entries = find_videos(root)
    if not entries:
        kept = f"; the index {out} is left as it is" if out.exists() else ""
        raise JobError(
            f"{root}: no files in this folder, nothing to encode (give the folder of your videos){kept}"
        )
    work = parts_dir(out)
    refuse_foreign_files(out, work)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise JobError(
            f"--out {out}: cannot create its folder ({error.strerror}); choose another --out"
        ) from None
    _remove_trash(out)
    with _locked(work):
        if overwrite:
            _discard_previous(work, out)
        store = _open_store(work, out, job)
        known = store.load()
        summary = JobSummary(out, total=len(entries))
        todo = [e for e in entries if e.problem is None and not _reusable(known.get(e.path), e, retry_failed)]
        redo = {e.path for e in todo}
        reused = [known[e.path] for e in entries if e.path in known and e.path not in redo]
        reused = [result for result in reused if result.reason is None]
        summary.reused = len(reused)
        if windows is not None:
            summary.moments = sum(len(result.rows()) for result in reused)
        logger.info(
            "%d files under %s: %d to encode now, %d already done; work saved in %s",
            len(entries),
            root,
            len(todo),
            summary.reused,
            work,
        )
        yield OpenJob(root, out, job, encoder, store, entries, known, todo, summary, started)


# --- The job's steps -------------------------------------------------------------------------


def saved_work(out: str | os.PathLike) -> int:
    """How many videos' results the work directory of ``out`` holds (what an interrupted run kept)."""
    store = ChunkStore(parts_dir(Path(out).absolute()))
    return len(store.load()) if store.directory.is_dir() else 0


def check_locations(root, out) -> tuple[Path, Path]:
    """(root, out) made absolute, or JobError when root is no folder or out is no writable .npy path."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise JobError(f"{root}: not a folder (give the folder of videos to encode)")
    if out.suffix != ".npy":
        raise JobError(f"--out {out}: the index file must end with .npy (e.g. --out embeddings.npy)")
    if out.is_dir():
        raise JobError(f"--out {out}: is a folder; give a file name such as {out / 'embeddings.npy'}")
    existing = next(
        p for p in out.absolute().parents if p.exists()
    )  # the folder is made after the model loads
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise JobError(
            f"--out {out}: cannot create or write its folder ({existing} is not a writable folder)"
        )
    if not _holds_a_video(root):
        raise JobError(_empty_folder_message(root, out))
    refuse_foreign_files(out.absolute(), parts_dir(out.absolute()))
    return root.resolve(), out.absolute()


def _holds_a_video(root: Path) -> bool:
    """Whether any file with a video extension lies under ``root`` (stops at the first one)."""
    from ..video.reader import VIDEO_EXTENSIONS

    return any(
        os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
        for _, _, names in os.walk(root)
        for name in names
    )


def _empty_folder_message(root: Path, out: Path) -> str:
    kept = f"; the index {out} is left as it is" if out.exists() else ""
    return (
        f"{root}: no video files in this folder or below it (looked for .mp4, .mkv, .webm, .mov, .avi and "
        f"other video extensions), nothing to encode{kept}"
    )


def refuse_foreign_files(out: Path, work: Path) -> None:
    """JobError when a file the index would replace (OUT.npy, its sidecar, rows or failures file) exists
    but is not part of a muse-infer index nor of one of our unfinished runs: never replaced, even with
    --overwrite."""
    if is_index(out) or (work / "job.json").is_file():
        return
    for path in (out, sidecar_path(out), rows_path(out), failures_path(out)):
        if path.exists():
            raise JobError(
                f"--out {out}: {path} exists and was not written by muse-infer (no index sidecar beside it); "
                "it is not replaced, even with --overwrite: choose another --out, or move that file away"
            )


def _reusable(known: Known | None, entry: Entry, retry_failed: bool) -> bool:
    return known is not None and known.matches(entry) and not (retry_failed and known.reason is not None)


class _locked:
    """Hold ``work/lock`` with flock (creating ``work``), or raise JobError if another run holds it."""

    def __init__(self, work: Path):
        self.work = work

    def __enter__(self):
        try:
            self.work.mkdir(exist_ok=True)
            self.handle = open(self.work / "lock", "a")
        except OSError as error:
            raise JobError(
                f"cannot write the work folder {self.work} ({error.strerror}); choose another --out"
            ) from None
        try:
            import fcntl

            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock on this platform: run unguarded
            pass
        except OSError:
            self.handle.close()
            raise JobError(
                f"another encode-videos run is writing {self.work}; wait for it to finish"
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()
        if not (self.work / "job.json").exists():  # refused before any work: leave nothing behind
            (self.work / "lock").unlink(missing_ok=True)
            with suppress(OSError):
                self.work.rmdir()  # only if empty


def _open_store(work: Path, out: Path, job: dict) -> ChunkStore:
    """The work directory's store, checked against ``job``; a new one starts from the finished index, if any."""
    store = ChunkStore(work)
    job_file = work / "job.json"
    if job_file.is_file():
        try:
            previous = json.loads(job_file.read_text())
        except (OSError, ValueError):
            previous = {}
        check_same_job(previous, job, f"{work} holds an unfinished run")
        return store
    for chunk in store.chunks():  # written before a job.json that never came: not trustworthy
        chunk.unlink()
    if sidecar_path(out).exists() or out.exists():
        _import_index(store, out, job)
    atomic_write(job_file, lambda handle: handle.write(json.dumps(job, sort_keys=True).encode()))
    return store


def _import_index(store: ChunkStore, out: Path, job: dict) -> None:
    """Copy a finished index (rows and failures) into the work directory as chunk 0."""
    try:
        check_same_job(
            read_sidecar(sidecar_path(out)), job, f"the index {out} was"
        )  # the likelier problem first
        index = EmbeddingIndex.load(out, ann=False)
    except IndexFileError as error:
        raise JobError(
            f"an index exists at {out} but cannot be extended: {error}; or add --overwrite"
        ) from None
    failed = [[f["path"], f["size"], f["mtime_ns"], f["reason"]] for f in _read_failures(out)]
    stats = row_stats(index)
    if not job.get("windows"):
        store.write_chunk(0, np.asarray(index.embeddings), {"done": stats, "failed": failed})
        return
    done, spans = _video_spans(index, stats)  # moments: a video's rows are consecutive
    store.write_chunk(0, np.asarray(index.embeddings), {"done": done, "failed": failed, "spans": spans})


def _video_spans(index: EmbeddingIndex, stats: list[list]) -> tuple[list[list], list[list]]:
    """A moments index's rows grouped by video: ([[path, size, mtime_ns], ...], [[[start, end], ...], ...])."""
    starts, ends = (index.rows.column(c).to_pylist() for c in ("start_s", "end_s"))
    done, spans = [], []
    for row_stat, start, end in zip(stats, starts, ends, strict=True):
        if not done or done[-1][0] != row_stat[0]:
            done.append(row_stat)
            spans.append([])
        spans[-1].append([start, end])
    if len({row_stat[0] for row_stat in done}) != len(done):
        raise IndexFileError(f"{index.location}: a video's moment rows are not consecutive")
    return done, spans


def _read_failures(out: Path) -> list[dict]:
    try:
        lines = failures_path(out).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return []  # without it, earlier failures are simply tried again


def _discard_previous(work: Path, out: Path) -> None:
    """--overwrite: forget earlier work (the lock in ``work`` stays, it is ours)."""
    ann_ours = read_ann_meta(out)[0] is not None, owned_ann_file(out)  # ANN files only if ours
    ours = [out, sidecar_path(out), rows_path(out), failures_path(out)]
    for path in [*ChunkStore(work).chunks(), work / "job.json", *ours]:
        path.unlink(missing_ok=True)
    for path, owned in zip((ann_meta_path(out), ann_path(out)), ann_ours, strict=True):
        if owned:
            path.unlink()


@dataclass(frozen=True)
class _RunOptions:
    batch_size: int | None
    workers: int | None
    timeout: float
    chunk_size: int
    progress: bool
    windows: WindowSettings | None = None


def _encode_todo(root: Path, todo: list[Entry], encoder, store: ChunkStore, summary: JobSummary, options):
    """Encode ``todo`` entries, saving whole model batches to chunks as they finish."""
    if not todo:
        return
    label = f"encoding ({summary.reused} already done)" if summary.reused else "encoding"
    bar = progress_bar(len(todo), label, enabled=options.progress)
    pending: list[VideoResult] = []
    flushed = encode_started = time.monotonic()
    failed = 0
    paths = [str(root / e.path) for e in todo]
    decoded = 0

    def on_decoded() -> None:  # the model runs a batch at a time: say that decoding goes on meanwhile
        nonlocal decoded
        decoded += 1
        bar.status(decoded=decoded)

    if options.windows is not None:
        moments = _MomentTally(summary, bar)
        groups = encoder.encode_moment_groups(
            paths, options.windows, options.batch_size, options.workers, options.timeout, moments.read
        )
    else:
        groups = encoder.encode_groups(
            paths, options.batch_size, options.workers, options.timeout, on_decoded
        )
    try:
        for group in groups:
            pending += group
            summary.encoded_now += sum(r.error is None for r in group)
            failed += sum(r.error is not None for r in group)
            bar.update(len(group), failed=failed)
            summary.processed_now += len(group)
            if options.windows is not None:
                moments.encoded(group)
            if len(pending) >= options.chunk_size or time.monotonic() - flushed > FLUSH_SECONDS:
                store.write(pending, todo)
                pending, flushed = [], time.monotonic()
    finally:  # also on Ctrl-C: whole batches already computed are kept
        groups.close()  # stops the decode workers
        if pending:
            store.write(pending, todo)
        if options.windows is not None:
            moments.close()
        bar.close()
        summary.encode_seconds = time.monotonic() - encode_started


class _MomentTally:
    """The one count of moments (``JobSummary.moments``) while encoding: the rows kept from earlier runs,
    +1 as each window is read (minus those of a video that then fails), shown on the progress line;
    at the end, the rows the model batches actually gave (what the finished index holds)."""

    def __init__(self, summary: JobSummary, bar):
        self.summary, self.bar = summary, bar
        self.shown = self.kept = summary.moments or 0

    def read(self, change: int) -> None:
        self.shown += change
        self.bar.status(moments=self.shown)

    def encoded(self, group: list[VideoResult]) -> None:
        self.kept += sum(len(result.embedding) for result in group if result.error is None)

    def close(self) -> None:
        self.summary.moments = self.kept
        self.bar.status(moments=self.kept)


def _retire(work: Path, out: Path) -> None:
    """Remove the work directory: renamed first (atomic), so a kill never leaves half of it behind."""
    trash = work.with_name(f".{out.name}.trash-{os.getpid()}")
    os.replace(work, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_trash(out: Path) -> None:
    for trash in out.parent.glob(f".{out.name}.trash-*"):
        shutil.rmtree(trash, ignore_errors=True)
