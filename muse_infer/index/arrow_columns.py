"""Arrow columns to and from NumPy and Python values, through their buffers: never through pandas.

pyarrow's ``pa.array``, ``pa.scalar`` and ``to_numpy`` first ask whether a value is a pandas object,
and asking imports pandas when it is installed (Ray Data installs it): 0.5-0.7 s of a command's
start on the 2-core development machine, paid by every ``encode-videos``, by a search over an index
of moments and by ``index merge`` / ``index reroot``. The functions here build the same arrays from
NumPy buffers (``pa.Array.from_buffers``, which asks nothing) and read numeric columns back the same
way. ``tests/test_arrow_columns.py`` checks them against ``pa.array`` and ``to_pylist``.
"""

from __future__ import annotations

import numpy as np

_NUMPY_TYPES = {"double": "<f8", "float": "<f4", "int64": "<i8", "int32": "<i4", "uint8": "u1"}
_LARGEST_OFFSET = 2**31 - 1  # string and binary arrays keep int32 offsets


def array(values, type):
    """``pa.array(values, type)`` for int64, int32, float64, float32, uint8, string and binary columns.

    values: a sequence with None for null (or, for numbers, a NumPy array, none null). Another type goes
    to ``pa.array`` (it may import pandas)."""
    import pyarrow as pa

    name = str(type)
    if name in _NUMPY_TYPES:
        return numbers(values, type)
    if type == pa.string():
        return texts(values)
    if type == pa.binary():
        return binaries(values)
    return pa.array(values, type)


def numbers(values, type):
    """A numeric Arrow array of ``type`` (int64, int32, float64, float32 or uint8) from ``values``.

    values: a NumPy array (none null) or a sequence of numbers with None for null. Raises TypeError for a
    value that is not a number (or, for an integer type, a float with a fraction, which ``pa.array``
    truncates) and OverflowError for one out of the type's range (``pa.array``: ArrowInvalid)."""
    import pyarrow as pa

    dtype = np.dtype(_NUMPY_TYPES[str(type)])
    if isinstance(values, np.ndarray):
        missing, given = None, values
    else:
        values = list(values)
        missing = _missing(values)
        present = [0 if v is None else v for v in values] if missing is not None else values
        given = np.array(present) if values else np.zeros(0, dtype)
    _check_numbers(given, dtype, type)
    data = np.ascontiguousarray(given, dtype=dtype)
    validity, nulls = _validity(missing)
    return pa.Array.from_buffers(type, len(data), [validity, pa.py_buffer(data)], null_count=nulls)


def _check_numbers(given: np.ndarray, dtype: np.dtype, type) -> None:
    if given.dtype.kind not in "biuf":
        raise TypeError(f"a {type} column takes numbers, got {given.dtype} values")
    if dtype.kind in "iu":
        if given.dtype.kind == "f" and not np.all(np.isfinite(given) & (given == np.trunc(given))):
            raise TypeError(f"a {type} column takes integers, got a fraction or a non-finite float")
        info = np.iinfo(dtype)
        if given.size and (given.min() < info.min or given.max() > info.max):
            raise OverflowError(f"a value out of the range of {type}")


def texts(values):
    """A string Arrow array from str values (None for null); UnicodeEncodeError for a str that is not
    UTF-8 (a lone surrogate, as ``os.fsdecode`` gives for a name that is not UTF-8), as ``pa.array``."""
    import pyarrow as pa

    values = list(values)
    strings = ["" if v is None else v for v in values] if None in values else values
    try:
        joined = "".join(strings)
    except TypeError:
        raise TypeError("a string column takes str values (or None)") from None
    if joined.isascii():  # the usual case: a character a byte, so the str lengths are the offsets
        return _variable_width(pa.string(), joined.encode("ascii"), map(len, strings), values)
    encoded = [string.encode("utf-8") for string in strings]
    return _variable_width(pa.string(), b"".join(encoded), map(len, encoded), values)


def binaries(values):
    """A binary Arrow array from bytes values (None for null)."""
    import pyarrow as pa

    values = list(values)
    if any(v is not None and not isinstance(v, (bytes, bytearray)) for v in values):
        raise TypeError("a binary column takes bytes values (or None)")
    encoded = [b"" if v is None else bytes(v) for v in values]
    return _variable_width(pa.binary(), b"".join(encoded), map(len, encoded), values)


def _variable_width(type, data: bytes, lengths, values: list):
    """A string or binary array of ``data``, the values' bytes end to end, ``lengths`` bytes each."""
    import pyarrow as pa

    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(lengths, dtype=np.int64, count=len(values)), out=offsets[1:])
    if offsets[-1] > _LARGEST_OFFSET:  # over 2 GiB: pyarrow's own conversion (chunked, large)
        return pa.array(values, type)
    validity, nulls = _validity(_missing(values))
    buffers = [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    return pa.Array.from_buffers(type, len(values), buffers, null_count=nulls)


def _missing(values: list) -> np.ndarray | None:
    """(N,) bool, True where a value is None; None when none is (checked in one C-level scan)."""
    if None not in values:
        return None
    return np.fromiter((v is None for v in values), dtype=bool, count=len(values))


def _validity(missing: np.ndarray | None) -> tuple:
    """(validity bitmap buffer or None, null count) for a (N,) bool mask of the null rows."""
    import pyarrow as pa

    nulls = 0 if missing is None else int(missing.sum())
    if not nulls:
        return None, 0
    return pa.py_buffer(np.packbits(~missing, bitorder="little")), nulls


def numpy_values(column, dtype, fill) -> np.ndarray:
    """A numeric Arrow (chunked) array as a (N,) NumPy array of ``dtype``, nulls as ``fill``."""
    import pyarrow as pa

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [_chunk_values(chunk, dtype, fill) for chunk in chunks if len(chunk)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _chunk_values(chunk, dtype, fill) -> np.ndarray:
    stored = np.dtype(_NUMPY_TYPES[str(chunk.type)])
    validity, data = chunk.buffers()[:2]
    raw = np.frombuffer(data, dtype=stored, count=len(chunk), offset=chunk.offset * stored.itemsize)
    values = raw.astype(dtype, copy=bool(chunk.null_count))  # nulls filled in a copy, never the buffer
    if chunk.null_count:
        bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
        values[~bits[chunk.offset : chunk.offset + len(chunk)].astype(bool)] = fill
    return values


def int64_values(column) -> np.ndarray:
    """A non-null int64 Arrow (chunked) array as a (N,) NumPy int64 array."""
    return numpy_values(column, np.int64, 0)
