"""Index files on disk: writing them, opening them memory-mapped, and checking them.

An index is a set of files beside ``EMB.npy`` (format version 2, written by ``write_index``,
``muse-infer encode-videos`` and ``muse-infer index merge``):

- ``EMB.npy``: (N, C) float32 little-endian, C order, row i the unit-length embedding of row i. Opened
  memory-mapped: never read whole to open or to search approximately.
- ``EMB.rows.parquet``: one record per row (Parquet, zstd), in row order. Columns (``row_schema()``)::

      row       int64    not null   the row number, 0..N-1: the id of the row everywhere
      path      string   not null   POSIX path of the video, relative to the sidecar's "root"
                                     (or as given when the index has no root); when the name is
                                     not UTF-8, its display text (``\\xNN`` for such bytes)
      size      int64    nullable   file size in bytes when encoded
      mtime_ns  int64    nullable   file mtime (ns) when encoded
      start_s   float64  nullable   a row for a time range (a moment) of the video: its start, seconds;
      end_s     float64  nullable   null for a whole-video row
      path_bytes binary  nullable   the path's bytes when they are not UTF-8 (a Latin-1 name, say),
                                     null otherwise: then they are the exact path and ``path`` only
                                     shows it; a reader takes ``os.fsdecode(path_bytes)`` (the str
                                     ``os.walk`` gives, ``muse_infer.filenames``) where it is set
      duration_s float64, width int32, height int32, fps float64, codec string   nullable
                the video's facts, noted by the decoder when encoding (``muse_infer.video.facts``; a
                moment row has its video's); null where unknown; indexes written before them lack
                the columns and open as before (the search filters that need them say so)

  So a file name of any bytes is stored losslessly, and every ``path`` is valid UTF-8 for readers that
  know nothing of ``path_bytes`` (indexes written before it, without the column, still open: every
  name then is its ``path``). Names that differ only by Unicode normalisation stay distinct rows.
  Writers may add more columns (``write_index(columns=...)``); readers keep the ones they do not know.
- ``EMB.failures.jsonl``: one ``{"path", "reason", "size", "mtime_ns"}`` a line per file that could not
  be encoded (empty when none), plus ``"display_path"`` where the name is not plain text (see below).
- ``EMB.json``, the sidecar, written last: its presence means the set is complete::

      {"format": "muse-infer-index", "format_version": 2, "count": N, "dim": C, "dtype": "float32",
       "normalized": true, "embeddings_file": "EMB.npy", "embeddings_bytes": <file size>,
       "chunk_rows": R, "chunk_sha256": ["...", ...],  # SHA-256 of rows [iR, (i+1)R) as stored
       "content_id": "...",                            # SHA-256 of (N, C, R, chunk hashes): the rows' identity
       "rows_file": "EMB.rows.parquet", "rows_sha256": "...",
       "root": "/abs/videos" | null, "model": {identity} | null, "model_source": {...} | null,
       "backend": "torch" | null, "precision": "bf16" | null, "settings": {...} | null,
       "failures_file": "EMB.failures.jsonl", "failed": M, "written_by": "muse-infer 0.1.0"}

  ``precision``, like ``backend``, says how the run that wrote the index computed its rows; neither is
  part of the model identity. Rows computed in bf16 lie within cosine 0.999 of fp32 ones, so queries
  in any precision search any index, and a resumed run may add rows in another precision.

- ``EMB.ann.faiss`` + ``EMB.ann.json``: the optional approximate index (``muse_infer.index.ann``).

Every JSON file here (sidecar, failures) is written by Python's ``json`` with ``ensure_ascii``: plain
ASCII, a byte of a name that is not UTF-8 written as the escape ``\\udcXX``, which Python's ``json``
reads back into the exact name (``muse_infer.filenames``).

Integrity without reading everything: opening checks the .npy header and size, the rows file (whole:
it is small) and the chunk hashes of the embeddings, all of them when the embeddings are at most
``AUTO_VERIFY_BYTES``, else the first and last chunk; ``verify=True`` checks every chunk. Files are
replaced atomically: new files are written under temporary names first, then the old sidecar is
removed, the files renamed into place, and the new sidecar renamed last, so a reader sees the old set,
the new set, or no sidecar (an incomplete index, reported as such), never a mix.

Version 1 (muse-infer before the approximate index) kept paths and file stats in the sidecar and one
SHA-256 of all rows; such indexes still open (rows read whole, norms computed) and are rewritten as
version 2 by ``muse-infer index build`` or the next ``encode-videos`` run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import IndexFileError, IndexInputError
from .arrow_columns import binaries, int64_values, texts
from .files import IndexFiles

logger = logging.getLogger(__name__)

INDEX_FORMAT, INDEX_FORMAT_VERSION, READABLE_VERSIONS = "muse-infer-index", 2, (1, 2)
CHUNK_BYTES = 16 << 20  # rows hashed together: a chunk checks in ~10 ms
AUTO_VERIFY_BYTES = 64 << 20  # embeddings up to this size are checked whole on every open (~40 ms)
NORM_TOLERANCE = 1e-5  # rows this close to unit length are stored bit for bit
BLOCK_BYTES = 32 << 20  # rows normalised and written at a time
FIX = "re-run the command that wrote it (encode-videos, index merge or write_index)"
V1_REQUIRED = ("format", "count", "dim", "paths", "model", "model_source", "settings", "embeddings_sha256")
V2_REQUIRED = (
    "format",
    "count",
    "dim",
    "chunk_rows",
    "chunk_sha256",
    "content_id",
    "rows_file",
    "rows_sha256",
)
FACT_COLUMNS = ("duration_s", "width", "height", "fps", "codec")  # muse_infer.video.facts
ROW_COLUMNS = ("row", "path", "size", "mtime_ns", "start_s", "end_s", "path_bytes", *FACT_COLUMNS)
DESCRIPTIVE_FIELDS = ("root", "model", "model_source", "backend", "settings")


def sidecar_path(npy_path: str | os.PathLike) -> Path:
    """EMB.npy -> EMB.json (``IndexFiles``)"""
    return IndexFiles.of(npy_path).sidecar


def failures_path(npy_path: str | os.PathLike) -> Path:
    """EMB.npy -> EMB.failures.jsonl (``IndexFiles``)"""
    return IndexFiles.of(npy_path).failures


def rows_path(npy_path: str | os.PathLike) -> Path:
    """EMB.npy -> EMB.rows.parquet (``IndexFiles``)"""
    return IndexFiles.of(npy_path).rows


def pyarrow_modules():
    """(pyarrow, pyarrow.parquet), or IndexFileError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise IndexFileError(
            "muse-infer's index format needs pyarrow (row metadata in Parquet): pip install pyarrow"
        ) from None
    return pyarrow, pyarrow.parquet


def row_schema():
    """The Arrow schema of ``EMB.rows.parquet`` (see the module docstring)."""
    pa, _ = pyarrow_modules()
    return pa.schema(
        [
            pa.field("row", pa.int64(), nullable=False),
            pa.field("path", pa.string(), nullable=False),
            pa.field("size", pa.int64()),
            pa.field("mtime_ns", pa.int64()),
            pa.field("start_s", pa.float64()),
            pa.field("end_s", pa.float64()),
            pa.field("path_bytes", pa.binary()),
            pa.field("duration_s", pa.float64()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("fps", pa.float64()),
            pa.field("codec", pa.string()),
        ]
    )


def path_arrays(paths) -> tuple:
    """The ``path`` and ``path_bytes`` Arrow arrays of exact paths (str, as ``os.walk`` gives them; see
    ``row_schema``). Raises ValueError for a str no file name gives (``filenames.name_bytes``)."""
    from ..filenames import stored_name

    pa, _ = pyarrow_modules()
    paths = list(paths)
    try:  # every name UTF-8 (the usual case)
        return texts(paths), pa.nulls(len(paths), pa.binary())
    except UnicodeEncodeError:
        pass
    shown, raw = zip(*(stored_name(path) for path in paths), strict=True)
    return texts(shown), binaries(raw)


def exact_paths(bytes_column) -> dict[int, str]:
    """{row: exact path} of the rows whose ``path_bytes`` is set (the others' exact path is ``path``);
    {} for an index without the column (None) or with every value null (the usual case: read nothing)."""
    if bytes_column is None or bytes_column.null_count == len(bytes_column):
        return {}
    import pyarrow.compute as pc  # only here: its import costs a search a tenth of a second

    from ..filenames import from_bytes

    rows = pc.indices_nonzero(pc.is_valid(bytes_column))  # not to_numpy: that imports pandas (~1 s)
    values = bytes_column.take(rows).to_pylist()
    return {row: from_bytes(value) for row, value in zip(rows.to_pylist(), values, strict=True)}


def chunk_rows_for(dim: int) -> int:
    """Rows a hashed chunk holds: ``CHUNK_BYTES`` of float32 rows of ``dim``."""
    return max(1, CHUNK_BYTES // (4 * max(dim, 1)))


def content_id(count: int, dim: int, chunk_rows: int, chunk_hashes: list[str]) -> str:
    """The identity of a set of rows: equal iff the stored rows are (up to SHA-256 collisions)."""
    text = json.dumps([count, dim, chunk_rows, chunk_hashes])
    return hashlib.sha256(text.encode()).hexdigest()


def row_paths(rows) -> list[str]:
    """The exact paths of a rows table (Arrow, ``row_schema``'s columns; ``path_bytes`` optional), in row
    order: ``path``, or the name its ``path_bytes`` hold."""
    texts = rows.column("path").to_pylist()
    for row, path in exact_paths(
        rows.column("path_bytes") if "path_bytes" in rows.column_names else None
    ).items():
        texts[row] = path
    return texts


# --- writing ------------------------------------------------------------------------------------


def unit_blocks(embeddings, block_rows: int | None = None) -> Iterator[np.ndarray]:
    """Blocks (n, C) float32 of ``embeddings`` (N, C) with every row scaled to unit length.

    Rows already within ``NORM_TOLERANCE`` of unit length are passed on unchanged (bit for bit). Raises
    ``IndexInputError`` for a non-finite or all-zero row.
    """
    count, dim = embeddings.shape
    block_rows = block_rows or max(1, BLOCK_BYTES // (4 * max(dim, 1)))
    for start in range(0, count, block_rows):
        block = np.array(embeddings[start : start + block_rows], dtype=np.float32, order="C")
        if not np.all(np.isfinite(block)):
            bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise IndexInputError(f"embeddings: row {bad} holds NaN or infinite values")
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        if np.any(norms == 0):
            raise IndexInputError(
                f"embeddings: row {start + int(np.flatnonzero(norms == 0)[0])} is all zeros (no direction: "
                "it cannot be searched by cosine); leave it out"
            )
        off = np.abs(norms - 1.0) > NORM_TOLERANCE
        if off.any():
            block[off] = (block[off].astype(np.float64) / norms[off, None]).astype(np.float32)
        yield block


class _ChunkHasher:
    """SHA-256 of every ``chunk_rows`` rows of a stream of (n, C) float32 blocks."""

    def __init__(self, chunk_rows: int):
        self.chunk_rows, self.filled, self.hashes = chunk_rows, 0, []
        self.digest = hashlib.sha256()

    def update(self, block: np.ndarray) -> None:
        position = 0
        while position < len(block):
            take = min(self.chunk_rows - self.filled, len(block) - position)
            self.digest.update(memoryview(block[position : position + take]).cast("B"))
            self.filled, position = self.filled + take, position + take
            if self.filled == self.chunk_rows:
                self.hashes.append(self.digest.hexdigest())
                self.digest, self.filled = hashlib.sha256(), 0

    def finish(self) -> list[str]:
        if self.filled:
            self.hashes.append(self.digest.hexdigest())
        return self.hashes


def _write_npy(path: Path, blocks: Iterable[np.ndarray], count: int, dim: int, chunk_rows: int) -> list[str]:
    """Stream (n, C) float32 blocks into a .npy file of (count, dim); returns the chunk hashes."""
    hasher, written = _ChunkHasher(chunk_rows), 0
    with open(path, "wb") as handle:
        header = {"descr": "<f4", "fortran_order": False, "shape": (count, dim)}
        np.lib.format.write_array_header_1_0(handle, header)
        for block in blocks:
            block = np.ascontiguousarray(block, dtype="<f4")
            if block.ndim != 2 or block.shape[1] != dim:
                raise ValueError(f"a block of shape {block.shape} for rows of {dim}")
            if len(block):  # an index of no rows (every file failed) is still an index
                handle.write(memoryview(block).cast("B"))
                hasher.update(block)
            written += len(block)
    if written != count:
        raise ValueError(f"{written} rows written for an index of {count}")
    return hasher.finish()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def write_index_files(
    out: Path, blocks: Iterable[np.ndarray], count: int, dim: int, rows, fields: dict, failures: list[dict]
) -> dict:
    """Write the whole set (see the module docstring), replacing an earlier set atomically.

    blocks: (n, C) float32 unit rows, ``count`` in all, in row order; rows: an Arrow table with
    ``row_schema()``'s columns and ``count`` records; fields: the sidecar's descriptive fields
    (``DESCRIPTIVE_FIELDS``, null when absent, and any others, e.g. "precision"; the format's own keys
    cannot be overridden). Returns the sidecar written.
    """
    from .. import __version__

    _, pq = pyarrow_modules()
    chunk_rows = chunk_rows_for(dim)
    with ExitStack() as stack:  # leaves in reverse: the .npy is renamed first, the sidecar last
        targets = [sidecar_path(out), failures_path(out), rows_path(out), out]
        tmp_sidecar, tmp_failures, tmp_rows, tmp_npy = [stack.enter_context(atomic_path(t)) for t in targets]
        hashes = _write_npy(tmp_npy, blocks, count, dim, chunk_rows)
        with open(tmp_rows, "wb") as handle:  # a handle: pyarrow refuses a path that is not UTF-8
            pq.write_table(rows, handle, compression="zstd", row_group_size=1 << 20)
        tmp_failures.write_text("".join(failure_line(f) for f in failures), encoding="ascii")
        sidecar = {
            **dict.fromkeys(DESCRIPTIVE_FIELDS),
            **fields,  # any other descriptive field (e.g. "precision") is kept; the ones below win
            "format": INDEX_FORMAT,
            "format_version": INDEX_FORMAT_VERSION,
            "count": count,
            "dim": dim,
            "dtype": "float32",
            "normalized": True,
            "embeddings_file": out.name,
            "embeddings_bytes": tmp_npy.stat().st_size,
            "chunk_rows": chunk_rows,
            "chunk_sha256": hashes,
            "content_id": content_id(count, dim, chunk_rows, hashes),
            "rows_file": rows_path(out).name,
            "rows_sha256": file_sha256(tmp_rows),
            "failures_file": failures_path(out).name,
            "failed": len(failures),
            "written_by": f"muse-infer {__version__}",
        }
        tmp_sidecar.write_text(sidecar_text(sidecar))
        sidecar_path(out).unlink(missing_ok=True)  # the old set is incomplete from here until the rename
    return sidecar


def rewrite_records(out: Path, rows, changes: dict) -> dict:
    """Replace the row records of the index ``out`` by ``rows`` (an Arrow table of its row count, its
    columns) and set the sidecar's descriptive ``changes`` (e.g. {"root": ...}); the rows themselves
    and the failures are left as they are. The rows file is renamed first, the sidecar last (as
    ``write_index_files`` does). Returns the sidecar written."""
    _, pq = pyarrow_modules()
    sidecar = read_sidecar(sidecar_path(out))
    if rows.num_rows != sidecar["count"]:
        raise IndexInputError(f"{out}: {rows.num_rows} row records for {sidecar['count']} rows")
    with ExitStack() as stack:
        tmp_sidecar, tmp_rows = [
            stack.enter_context(atomic_path(t)) for t in (sidecar_path(out), rows_path(out))
        ]
        with open(tmp_rows, "wb") as handle:
            pq.write_table(rows, handle, compression="zstd", row_group_size=1 << 20)
        sidecar = {**sidecar, **changes, "rows_sha256": file_sha256(tmp_rows)}
        tmp_sidecar.write_text(sidecar_text(sidecar))
    return sidecar


def read_failures(npy_path: str | os.PathLike) -> list[dict]:
    """The records of an index's failures file (``EMB.failures.jsonl``), the one reader of it: [] when
    there is none; a damaged line (not JSON, not a record with a path) is left out, so its file is
    simply tried again by the next run."""
    try:
        lines = IndexFiles.of(npy_path).failures.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return []
    records = []
    for line in lines.splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("path"), str):
            records.append(record)
    return records


def failure_line(failure: dict) -> str:
    """One line of the failures file: the record (its ``display_path`` made again from its ``path``),
    ASCII JSON (a name's bytes that are not UTF-8 as ``\\udcXX`` escapes: see the module docstring)."""
    from ..filenames import with_display

    record = with_display({key: value for key, value in failure.items() if key != "display_path"})
    return json.dumps(record, sort_keys=True, ensure_ascii=True) + "\n"


def sidecar_text(sidecar: dict) -> str:
    # One key a line, each value compact: readable, and a long list stays one line.
    # ensure_ascii: a root folder whose name is not UTF-8 is written as \udcXX escapes (read back exactly).
    lines = [
        f" {json.dumps(key)}: {json.dumps(sidecar[key], sort_keys=True, ensure_ascii=True)}"
        for key in sorted(sidecar)
    ]
    return "{\n" + ",\n".join(lines) + "\n}\n"


# --- opening ------------------------------------------------------------------------------------


@dataclass
class OpenedIndex:
    """An opened index: ``embeddings`` (N, C) float32 memory-mapped; ``rows`` an Arrow table of N records
    holding the columns search needs (``path``, and ``start_s``/``end_s`` unless all null: see
    ``read_rows``); ``rows_data`` the rows file's bytes, from which the whole table decodes on demand
    (None: ``rows`` is whole); ``metadata`` the sidecar dict; ``inverse_norms`` (N,) for version-1 rows
    (None: rows are unit length)."""

    npy: Path
    sidecar: Path
    metadata: dict
    embeddings: np.ndarray
    rows: object
    inverse_norms: np.ndarray | None = None
    rows_data: bytes | None = None

    @property
    def content_id(self) -> str:
        if self.metadata.get("format_version") == 1:
            return "v1:" + self.metadata["embeddings_sha256"]
        return self.metadata["content_id"]


def open_v2(npy: Path, sidecar: Path, metadata: dict, embeddings: np.ndarray, verify) -> OpenedIndex:
    """The version-2 part of ``muse_infer.index.opening.open_index``: row records read, chunk hashes
    checked (``verify`` as there)."""
    rows_data, rows = read_rows(npy, sidecar, metadata)
    check_chunks(embeddings, metadata, npy, sidecar, chunks_to_check(verify, embeddings, metadata))
    return OpenedIndex(npy, sidecar, metadata, embeddings, rows, rows_data=rows_data)


def resolve_pair(path: Path) -> tuple[Path, Path]:
    """(EMB.npy, EMB.json) from either file's name."""
    if path.suffix == ".json":
        try:
            npy = path.parent / json.loads(path.read_text()).get(
                "embeddings_file", path.with_suffix(".npy").name
            )
        except (OSError, ValueError, AttributeError):
            npy = path.with_suffix(".npy")
        return npy, path
    if path.suffix != ".npy":
        raise IndexFileError(f"{path}: an index is an EMB.npy file (with its EMB.json sidecar)")
    return path, sidecar_path(path)


def read_sidecar(sidecar: Path) -> dict:
    """The sidecar dict, checked for the fields every index of its version has."""
    if not sidecar.is_file():
        raise IndexFileError(_missing_sidecar_message(sidecar))
    try:
        metadata = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFileError(f"{sidecar}: unreadable or truncated sidecar ({error}); {FIX}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != INDEX_FORMAT:
        raise IndexFileError(f'{sidecar}: not a muse-infer index sidecar (no "format": "{INDEX_FORMAT}")')
    version = metadata.setdefault("format_version", 1)
    if version not in READABLE_VERSIONS:
        raise IndexFileError(
            f"{sidecar}: index format version {version!r}; this muse-infer reads versions "
            f"{READABLE_VERSIONS[0]}-{READABLE_VERSIONS[-1]}: upgrade muse-infer (pip install -U muse-infer)"
        )
    missing = [key for key in (V1_REQUIRED if version == 1 else V2_REQUIRED) if key not in metadata]
    if missing:
        raise IndexFileError(f"{sidecar}: sidecar lacks {missing}; {FIX}")
    if version == 1 and (not metadata["model"] or not isinstance(metadata["model"], dict)):
        raise IndexFileError(f"{sidecar}: no model identity recorded; re-run encode-videos")
    return metadata


def _missing_sidecar_message(sidecar: Path) -> str:
    """Why there is no sidecar, in the words of the likeliest case: a mistyped path, a file that is not
    an index, or an index still being written."""
    files = IndexFiles.of(sidecar)
    npy = files.npy
    if files.work.is_dir():
        return (
            f"{npy}: not finished: an encode-videos run into it stopped before the end (its work is in "
            f"{files.work}/); run the same encode-videos command again to finish it"
        )
    if not npy.exists():
        return f"{npy}: no such index (check the path; an index is the .npy that encode-videos --out wrote)"
    return (
        f"{npy}: not a muse-infer index (no {sidecar.name} beside it, which every index has); give the .npy "
        "that encode-videos, index merge or write_index wrote"
    )


def map_embeddings(npy: Path, sidecar: Path, metadata: dict) -> np.ndarray:
    """``EMB.npy`` memory-mapped (read-only), after checking its header and size against the sidecar."""
    if not npy.is_file():
        raise IndexFileError(f"{npy}: embeddings file not found (its sidecar {sidecar.name} exists); {FIX}")
    try:
        with open(npy, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(handle)
            offset = handle.tell()
    except (OSError, ValueError, EOFError) as error:
        raise IndexFileError(f"{npy}: unreadable or truncated .npy file ({error}); {FIX}") from None
    count, dim = int(metadata["count"]), int(metadata["dim"])
    problem = None
    if dtype != np.float32 or len(shape) != 2 or fortran_order:
        problem = f"holds {dtype} of shape {shape}{' (Fortran order)' if fortran_order else ''}, expected float32 (N, C)"
    elif shape != (count, dim):
        problem = f"has shape {shape} but the sidecar says {count} rows of {dim}"
    else:
        size, expected = npy.stat().st_size, offset + count * dim * 4
        if size < expected:
            problem = f"is truncated ({size} bytes, {expected} expected)"
        elif size > expected:
            problem = f"has {size - expected} bytes more than its {count} rows of {dim}"
    if problem:
        raise IndexFileError(f"{npy}: {problem}; the index is inconsistent: {FIX}")
    if count == 0:
        return np.zeros((0, dim), np.float32)
    return np.memmap(npy, dtype=dtype, mode="r", offset=offset, shape=(count, dim))


def random_access_view(embeddings: np.ndarray) -> np.ndarray:
    """A second memory map of the same rows, advised ``MADV_RANDOM``, for reading scattered rows.

    Re-ranking reads a few hundred rows spread over the file: with the default advice each read also
    pulls the neighbouring 64-128 KiB (read-ahead, fault-around), 30-60 times the row itself when the
    file is not cached. The sequential exact scan keeps the default mapping. Falls back to
    ``embeddings`` itself where ``madvise`` is not available.
    """
    import mmap

    if not isinstance(embeddings, np.memmap) or not len(embeddings) or not hasattr(mmap, "MADV_RANDOM"):
        return embeddings
    try:
        view = np.memmap(embeddings.filename, embeddings.dtype, "r", embeddings.offset, embeddings.shape)
        view._mmap.madvise(mmap.MADV_RANDOM)
    except (AttributeError, OSError, ValueError):
        return embeddings
    return view


SEARCH_COLUMNS = ("path", "path_bytes", "start_s", "end_s")  # what results need; the rest on demand


def read_rows(npy: Path, sidecar: Path, metadata: dict):
    """(the bytes of ``EMB.rows.parquet``, an Arrow table of its search columns), checked against the
    sidecar (hash, count, row numbers).

    Only ``path`` and the name-bytes and time-range columns that hold a value are decoded (a million paths take
    ~40 MiB); ``decode_rows`` gives the whole table from the bytes, which stay compressed meanwhile.
    """
    pa, pq = pyarrow_modules()
    path = npy.parent / metadata["rows_file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IndexFileError(
            f"{path}: rows file not found (its sidecar {sidecar.name} exists); {FIX}"
        ) from None
    except OSError as error:
        raise IndexFileError(f"{path}: unreadable rows file ({error.strerror}); {FIX}") from None
    if hashlib.sha256(data).hexdigest() != metadata["rows_sha256"]:
        raise IndexFileError(f"{path}: does not match its sidecar {sidecar.name} (different SHA-256); {FIX}")
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))  # not pq.read_table: it imports pandas (~1 s)
        problem = _rows_problem(parquet, int(metadata["count"]))
        wanted = [c for c in SEARCH_COLUMNS if c in parquet.schema_arrow.names and not _all_null(parquet, c)]
        rows = parquet.read(columns=wanted) if not problem else None
    except (OSError, ValueError, pa.ArrowException) as error:
        raise IndexFileError(f"{path}: unreadable rows file ({error}); {FIX}") from None
    if problem:
        raise IndexFileError(f"{path}: {problem}; {FIX}")
    pa.default_memory_pool().release_unused()  # decoding buffers, not kept
    return data, rows


def _rows_problem(parquet, count: int) -> str | None:
    """What is wrong with a rows file's columns, count or row numbers (None: nothing)."""
    missing = [c for c in ("row", "path") if c not in parquet.schema_arrow.names]
    if missing:
        return f"lacks the columns {missing}"
    if parquet.metadata.num_rows != count:
        return f"lists {parquet.metadata.num_rows} rows but the sidecar says {count}"
    if not np.array_equal(int64_values(parquet.read(columns=["row"]).column("row")), np.arange(count)):
        return "has row numbers out of order"
    return None


def _all_null(parquet, column: str) -> bool:
    """Whether every value of ``column`` is null, from the row groups' statistics (False when unknown)."""
    where = parquet.schema_arrow.names.index(column)
    nulls = 0
    for group in range(parquet.metadata.num_row_groups):
        statistics = parquet.metadata.row_group(group).column(where).statistics
        if statistics is None or not statistics.has_null_count:
            return False
        nulls += statistics.null_count
    return nulls == parquet.metadata.num_rows


def decode_rows(data: bytes):
    """The whole rows table (every column) of a rows file's bytes."""
    pa, pq = pyarrow_modules()
    return pq.ParquetFile(pa.BufferReader(data)).read()


def chunks_to_check(verify: bool | str, embeddings: np.ndarray, metadata: dict) -> list[int]:
    """Which chunk hashes to check (see ``muse_infer.index.opening.open_index``)."""
    chunks = len(metadata["chunk_sha256"])
    if verify not in (True, False, "auto"):
        raise ValueError(f'verify must be True, False or "auto", got {verify!r}')
    if verify is False or chunks == 0:
        return []
    if verify is True or embeddings.nbytes <= AUTO_VERIFY_BYTES:
        return list(range(chunks))
    return sorted({0, chunks - 1})


def check_chunks(embeddings: np.ndarray, metadata: dict, npy: Path, sidecar: Path, chunks: list[int]) -> None:
    """Compare the listed chunks with their hashes in the sidecar; raise ``IndexFileError`` on a difference."""
    chunk_rows, hashes = int(metadata["chunk_rows"]), metadata["chunk_sha256"]
    if len(hashes) != -(-len(embeddings) // chunk_rows):
        raise IndexFileError(f"{sidecar}: lists {len(hashes)} chunk hashes for {len(embeddings)} rows; {FIX}")
    for chunk in chunks:
        block = np.ascontiguousarray(embeddings[chunk * chunk_rows : (chunk + 1) * chunk_rows], dtype="<f4")
        if hashlib.sha256(memoryview(block).cast("B")).hexdigest() != hashes[chunk]:
            first, last = chunk * chunk_rows, chunk * chunk_rows + len(block) - 1
            raise IndexFileError(
                f"{npy}: does not match its sidecar {sidecar.name} at rows {first}-{last} (different SHA-256: "
                f"from another run, or damaged); {FIX}"
            )


def read_column(data: bytes, name: str):
    """One column (Arrow) of a rows file's bytes, or None when the file has no such column."""
    pa, pq = pyarrow_modules()
    parquet = pq.ParquetFile(pa.BufferReader(data))
    if name not in parquet.schema_arrow.names:
        return None
    return parquet.read(columns=[name]).column(name)
