"""The resumable folder job behind ``muse-infer encode-videos DIR --out EMB.npy`` (the local engine).

Files (beside ``EMB.npy``; see ``muse_infer.index`` for the finished index):
- ``EMB.npy.parts/`` the work directory while a run is unfinished:
  ``job.json`` (model identity, frame settings, root folder: a resume must match them),
  ``chunk-NNNNNN.npz`` (``embeddings`` (n, C) float32 and ``records``, ASCII JSON (a name's bytes
  that are not UTF-8 as ``\\udcXX`` escapes, read back into the exact name: ``muse_infer.filenames``)
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..encoders import VideoEncoder, VideoResult
from ..errors import IndexFileError, JobError
from ..filenames import with_display
from ..index import IndexFiles, PreviousIndex, discard_index, read_previous, read_sidecar
from ..progress import announce as progress_announce
from ..progress import progress_bar
from ..runtime.spec import ModelSpec
from ..video.devices import check_decoder
from ..video.thumbnails import ThumbnailSummary
from ..video.windows import WindowSettings
from .assemble import check_same_job, finish_index, make_thumbnails
from .inputs import Scope, check_inputs
from .work import ChunkStore, Entry, Known

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
            text += f"; skipped {len(self.failures)} ({listed}): see {IndexFiles.of(self.out).failures}"
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
        """The machine-readable summary (``encode-videos --json``). Paths are exact (a name that is not
        UTF-8 as the str ``os.walk`` gives, ``\\udcXX`` in JSON), with ``display_path`` (text for people)
        where a name holds bytes that are not UTF-8 or control characters (``muse_infer.filenames``)."""
        files = IndexFiles.of(self.out).existing()
        return {
            "out": str(self.out),
            "exit_code": self.exit_code,
            "videos": self.total,
            "encoded": self.encoded,
            "encoded_now": self.encoded_now,
            "already_done": self.reused,
            **({"moments": self.moments} if self.moments is not None else {}),
            "skipped": [with_display({"path": f["path"], "reason": f["reason"]}) for f in self.failures],
            "dropped": [with_display(d) for d in self.dropped],
            "files": [str(p) for p in files if p.exists()],
            "thumbnails": None if self.thumbnails is None else dataclasses.asdict(self.thumbnails),
            "approximate_index": self.index_note,
            "seconds": round(self.seconds, 3),
        }


def _reason_kind(reason: str) -> str:
    # "not a readable video container (Invalid data ...)" -> "not a readable video container"
    return reason.split(" (")[0].split(":")[0]


def parts_dir(out: Path) -> Path:
    """EMB.npy -> EMB.npy.parts (the work directory of an unfinished run: ``IndexFiles.work``)."""
    return IndexFiles.of(out).work


def encode_folder(
    root: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    encoder: VideoEncoder | ModelSpec,
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

    root: a folder, or several folders and video files (paths in the index relative to their common
    folder, or to the folder of the index already at ``out``; ``jobs.inputs``). encoder: the model, as a ``ModelSpec`` (loaded only when there is something to encode: a rerun
    with nothing new, or a run refused because another holds the lock, never loads it) or a loaded
    ``VideoEncoder``. batch_size: videos a model call (None: the spec's, else 8 on the CPU, 64 on a GPU).
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
    spec, _ = job_model(encoder)
    if spec.device not in ("auto", "cpu"):
        spec.on_device()  # a device that is not there is said before anything is written
    with open_job(
        root, out, encoder, overwrite, retry_failed, windows, preload=True, announce=progress
    ) as job:
        if job.todo:
            video_encoder = job.video_encoder()
            _encode_todo(job.root, job.todo, video_encoder, job.store, job.summary, options)
        return job.finish(thumbnails, workers, progress)


# --- The job's frame, shared by every engine (this module's and muse_infer.jobs.ray_engine) ------
# An engine opens the job, encodes ``job.todo`` into ``job.store`` (chunk files, any numbering), and
# calls ``job.finish()``: the lock, work directory, identity check, resume rule and assembly are these.


@dataclass
class OpenJob:
    """A folder job whose work directory is locked: what is found, what is already done, what to do.

    spec: the model (identity, settings and source known without loading it); loaded: its encoder,
    once ``video_encoder`` loaded it (or as the caller gave it). entries: every video under ``root``,
    sorted by path; known: results in the work directory (or the finished index), by path; todo: the
    entries to encode now (sorted; none with a ``problem``); previous: the finished index the run
    grows, read once when the job opened (None: a new index).
    """

    root: Path
    out: Path
    job: dict
    spec: ModelSpec
    loaded: VideoEncoder | None
    store: ChunkStore
    entries: list[Entry]
    known: dict[str, Known]
    todo: list[Entry]
    summary: JobSummary
    started: float
    announce: bool = True  # say "loading model ..." on stderr when it loads
    previous: PreviousIndex | None = None

    def video_encoder(self) -> VideoEncoder:
        """The model's encoder, loaded on first use (``load_encoder``)."""
        if self.loaded is None:
            self.loaded = load_encoder(self.spec, self.announce)
        return self.loaded

    def finish(
        self, thumbnails: bool = True, workers: int | None = None, progress: bool = True
    ) -> JobSummary:
        """Write the index from every result in the work directory (rows in ``entries`` order), with
        ``thumbnails`` their keyframes (``make_thumbnails``, ``workers`` decoding threads), then remove
        the directory. Returns the summary, its ``seconds`` set."""
        known = self.store.load()
        precision = rows_precision(known, [e.path for e in self.entries])  # how, not which model
        finished = finish_index(
            self.out,
            self.entries,
            known,
            self.job,
            self.spec.source,
            self.spec.backend,
            self.spec.embed_dim,
            fields=({"precision": precision} if precision else {}) | _windows_field(self.job),
            previous=self.previous,
        )
        self.summary.failures, self.summary.index_note = finished.failures, finished.index_note
        self.summary.dropped = finished.dropped
        self.summary.moments = finished.rows if self.job.get("windows") else None
        if thumbnails:
            self.summary.thumbnails = make_thumbnails(
                self.out, self.job["root"], finished.row_table, workers, progress
            )
        _retire(IndexFiles.of(self.out))
        self.summary.seconds = time.monotonic() - self.started
        return self.summary


def rows_precision(known: dict[str, Known], paths: list[str]) -> str | None:
    """What the rows of ``paths`` were computed in ("bf16"; "mixed: bf16, fp32" when a run was resumed
    in another precision; None when no result records it), for the sidecar."""
    found = sorted({k.precision for p in paths if (k := known.get(p)) is not None and k.precision})
    if len(found) > 1:
        return "mixed: " + ", ".join(found)
    return found[0] if found else None


def load_encoder(spec: ModelSpec, announce: bool = True) -> VideoEncoder:
    """The spec's ``VideoEncoder``, saying "loading model NAME ..." on stderr first when ``announce``
    (loading takes seconds to minutes)."""
    progress_announce(f"loading model {spec.name} ...", enabled=announce)
    encoder = VideoEncoder(spec)
    backend = encoder.backend
    logger.info(
        "model %s: %s backend on %s, %s, settings %s",
        spec.name,
        backend.name,
        backend.device,
        backend.precision,
        encoder.settings,
    )
    return encoder


def job_model(encoder: VideoEncoder | ModelSpec) -> tuple[ModelSpec, VideoEncoder | None]:
    """(the model's spec, its loaded encoder or None) of what a job was given."""
    if isinstance(encoder, ModelSpec):
        return encoder, None
    if encoder.spec is None:
        raise ValueError(
            "the encoder's backend was built by hand: give the job a ModelSpec or a VideoEncoder made from "
            "a model name or file, so the index can record how to load the model again"
        )
    return encoder.spec, encoder


def _windows_field(job: dict) -> dict:
    """The sidecar's "windows" of a moments job ({} for a row a video: such sidecars stay as they were)."""
    return {"windows": job["windows"]} if job.get("windows") else {}


@contextmanager
def open_job(
    root: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    encoder: VideoEncoder | ModelSpec,
    overwrite: bool = False,
    retry_failed: bool = False,
    windows: WindowSettings | None = None,
    preload: bool = False,
    announce: bool = True,
) -> Iterator[OpenJob]:
    """Lock ``out``'s work directory and read what is there (see ``encode_folder`` for the arguments).

    preload: with ``overwrite``, load the model (``load_encoder``, saying so when ``announce``) before
    the earlier work is discarded, so a model that fails to load costs nothing already written; an
    engine that never loads the model here (Ray) leaves it False.

    Raises ``JobError`` for problems the user must fix (bad folder, another run holds the lock, earlier
    work made with another model, settings or folder and no ``overwrite``).
    """
    scope, out = check_inputs(root, out, overwrite)
    root = scope.root
    started = time.monotonic()
    spec, loaded = job_model(encoder)
    check_decoder(spec.decoder)  # a GPU decoder that is not there: said before anything is written
    job = {"format": JOB_FORMAT, "format_version": JOB_FORMAT_VERSION, "root": str(root)}
    job |= {"model": spec.identity, "settings": spec.settings}
    job["windows"] = windows.to_dict() if windows is not None else None  # None: a row a video
    entries = scope.find()
    files = IndexFiles.of(out)
    work = files.work
    made = [folder for folder in (out.parent, *out.parent.parents) if not folder.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise JobError(
            f"--out {out}: cannot create its folder ({error.strerror}); choose another --out"
        ) from None
    _remove_trash(files)
    with _undone_if_failed(work, made) as copied, _locked(work):
        if overwrite:
            if preload:  # never discard the earlier index for a model that then fails to load
                loaded = loaded or load_encoder(spec, announce)
            _discard_previous(work, out)
        fresh = not (work / "job.json").is_file()
        previous = _previous_index(out, job, strict=fresh)  # read once for the whole run
        store = _open_store(work, job, previous)
        copied |= set(store.chunks())  # the finished index's rows, copied: not this run's own work
        known = store.load()
        entries = _with_rows_outside(entries, known, scope)
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
        yield OpenJob(
            root, out, job, spec, loaded, store, entries, known, todo, summary, started, announce, previous
        )


@contextmanager
def _undone_if_failed(work: Path, made: list[Path]) -> Iterator[set]:
    """A run that fails (a model that does not load, Ctrl-C) before it has saved any work of its own
    leaves nothing behind: not the work directory it started (its ``job.json``, the copy of the
    finished index: the chunks the caller adds to the set yielded), nor the folders it made for
    ``--out`` (``made``, deepest first). The finished index is never touched."""
    fresh = not (work / "job.json").exists()
    copied: set = set()
    try:
        yield copied
    except BaseException:
        store = ChunkStore(work)
        if fresh and set(store.chunks()) <= copied:
            for path in [*store.chunks(), work / "job.json", work / "plan.json", work / "lock"]:
                path.unlink(missing_ok=True)
            for folder in [work, *made]:
                with suppress(OSError):
                    folder.rmdir()  # only if empty
        raise


# --- The job's steps -------------------------------------------------------------------------


def saved_work(out: str | os.PathLike) -> int:
    """How many videos' results the work directory of ``out`` holds (what an interrupted run kept)."""
    store = ChunkStore(parts_dir(Path(out).absolute()))
    return len(store.load()) if store.directory.is_dir() else 0


def _with_rows_outside(entries: list[Entry], known: dict[str, Known], scope: Scope) -> list[Entry]:
    """``entries`` and, kept as they are, the earlier results of videos this run does not cover (a run
    given some files or folders grows the index; it never drops what it was not asked to look at)."""
    seen = {entry.path for entry in entries}
    outside = [
        Entry(path, result.size, result.mtime_ns)
        for path, result in known.items()
        if path not in seen and not scope.covers(path)
    ]
    return sorted(entries + outside, key=lambda entry: entry.path) if outside else entries


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


def _open_store(work: Path, job: dict, previous: PreviousIndex | None) -> ChunkStore:
    """The work directory's store, checked against ``job``; a new one starts from the finished index
    ``previous`` (its rows and failures copied in as chunk 0), if any."""
    store = ChunkStore(work)
    job_file = work / "job.json"
    if job_file.is_file():
        try:
            unfinished = json.loads(job_file.read_text())
        except (OSError, ValueError):
            unfinished = {}
        check_same_job(unfinished, job, f"{work} holds an unfinished run")
        return store
    for chunk in store.chunks():  # written before a job.json that never came: not trustworthy
        chunk.unlink()
    if previous is not None:
        _import_index(store, previous, job)
    atomic_write(job_file, lambda handle: handle.write(json.dumps(job, sort_keys=True).encode()))
    return store


def _previous_index(out: Path, job: dict, strict: bool) -> PreviousIndex | None:
    """The finished index at ``out`` that this run grows, read once (``index.read_previous``).

    strict (a new run, which starts from it): an index made with another model, settings or folder, or
    one that cannot be read, is a JobError. Else (a resumed run, which copied its rows when it started)
    such an index is only not grown in place (None): its rows are already in the work directory.
    """
    sidecar = IndexFiles.of(out).sidecar
    try:
        if sidecar.exists():  # the likelier problem first: another model, settings or folder
            check_same_job(read_sidecar(sidecar), job, f"the index {out} was")
        return read_previous(out)
    except JobError:
        if strict:
            raise
    except IndexFileError as error:
        if strict:
            raise JobError(
                f"an index exists at {out} but cannot be extended: {error}; or add --overwrite"
            ) from None
    return None


def _import_index(store: ChunkStore, previous: PreviousIndex, job: dict) -> None:
    """Copy a finished index (rows and failures) into the work directory as chunk 0."""
    failed = [
        [f["path"], f.get("size", -1), f.get("mtime_ns", -1), str(f.get("reason") or "failed before")]
        for f in previous.failures
    ]
    records = {"failed": failed, "precision": previous.sidecar.get("precision")}
    embeddings = np.asarray(previous.embeddings)
    facts = previous.facts()
    if not job.get("windows"):
        store.write_chunk(0, embeddings, {"done": previous.rows, "facts": facts, **records})
        return
    try:
        done, spans = previous.videos()  # moments: a video's rows are consecutive
    except IndexFileError as error:
        raise JobError(
            f"the index {previous.location} cannot be extended: {error}; or add --overwrite"
        ) from None
    firsts = np.cumsum([0] + [len(s) for s in spans[:-1]]).tolist() if spans else []
    records["facts"] = [facts[row] for row in firsts]  # a video's facts, from its first row
    store.write_chunk(0, embeddings, {"done": done, "spans": spans, **records})


def _discard_previous(work: Path, out: Path) -> None:
    """--overwrite: forget earlier work (the lock in ``work`` stays, it is ours) and the finished index."""
    for path in [*ChunkStore(work).chunks(), work / "job.json"]:
        path.unlink(missing_ok=True)
    discard_index(out)


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
    precision = encoder.backend.precision
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
                store.write(pending, todo, precision)
                pending, flushed = [], time.monotonic()
    finally:  # also on Ctrl-C: whole batches already computed are kept
        groups.close()  # stops the decode workers
        if pending:
            store.write(pending, todo, precision)
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


def _retire(files: IndexFiles) -> None:
    """Remove the work directory: renamed first (atomic), so a kill never leaves half of it behind."""
    trash = files.trash(os.getpid())
    os.replace(files.work, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_trash(files: IndexFiles) -> None:
    for trash in files.trash_folders():
        shutil.rmtree(trash, ignore_errors=True)
