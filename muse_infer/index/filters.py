"""Search filters: which rows a search may return, decided before ranking, never after the top k is cut.

    filters = SearchFilter.make(under=["holidays/2024"], min_duration=60, modified_after="2024-05-01")
    hits = index.search(vector, top_k=10, filters=filters)        # or the same names as keywords

Row conditions (all must hold; ``under`` folders are alternatives):
- ``under``: the video lies in one of these folders (relative to the index's root, as results show
  paths, or absolute under it). Names are compared exactly (``muse_infer.filenames``: a name that is
  not UTF-8 compares by its bytes; Unicode-normalisation twins are different folders).
- ``min_duration`` / ``max_duration``: the video's duration in seconds (the ``duration_s`` row record,
  ``muse_infer.video.facts``), bounds included. On a moments index it is the whole video's duration.
- ``modified_after`` (inclusive) / ``modified_before`` (exclusive): the file's mtime when it was
  encoded (``mtime_ns``). Dates are ISO 8601 ("2024-05-01", "2024-05-01T13:30", with or without a UTC
  offset; without one, the local time zone), or ``datetime``/``date`` objects.

and a cut-off on the result: ``min_score``, the lowest cosine shown (fewer than k results when few pass).

A row whose record lacks a value (an index written before durations were recorded, a file whose
mtime was unknown) fails a condition on that value. An index with no such record at all cannot serve
the condition: ``RowSelection.build`` raises ``IndexInputError`` naming the filter and what to do.

``RowSelection`` is the allowed rows of one index: a mask (N,) bool, the allowed row numbers, and a
packed bitmap for faiss's ``IDSelectorBitmap``; built once per filter and kept by the index.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone

import numpy as np

from ..errors import IndexInputError
from .arrow_columns import numpy_values

ROW_CONDITIONS = ("under", "min_duration", "max_duration", "modified_after", "modified_before")
FILTER_NAMES = (*ROW_CONDITIONS, "min_score")


@dataclass(frozen=True)
class SearchFilter:
    """Filters of a search (see the module docstring); times as nanoseconds since the epoch (UTC)."""

    under: tuple[str, ...] = ()
    min_duration: float | None = None
    max_duration: float | None = None
    modified_after: int | None = None
    modified_before: int | None = None
    min_score: float | None = None

    @classmethod
    def make(
        cls,
        under=(),
        min_duration: float | None = None,
        max_duration: float | None = None,
        modified_after=None,
        modified_before=None,
        min_score: float | None = None,
    ) -> SearchFilter:
        """A filter from user values: ``under`` a folder or several, dates as text or datetime/date.
        Raises ``IndexInputError`` naming the bad value."""
        folders = (under,) if isinstance(under, (str, os.PathLike)) else tuple(under or ())
        for name, value in (("min_duration", min_duration), ("max_duration", max_duration)):
            if value is not None and not (isinstance(value, (int, float)) and value >= 0):
                raise IndexInputError(f"{name} {value!r}: give a number of seconds >= 0")
        if min_score is not None and not (isinstance(min_score, (int, float)) and -1 <= min_score <= 1):
            raise IndexInputError(f"min_score {min_score!r}: give a cosine from -1 to 1, e.g. 0.25")
        return cls(
            tuple(os.fspath(folder) for folder in folders),
            None if min_duration is None else float(min_duration),
            None if max_duration is None else float(max_duration),
            None if modified_after is None else parse_time(modified_after, "modified_after"),
            None if modified_before is None else parse_time(modified_before, "modified_before"),
            None if min_score is None else float(min_score),
        )

    @property
    def filters_rows(self) -> bool:
        """Whether any row condition is set (``min_score`` alone filters results, not rows)."""
        return bool(self.under) or any(
            getattr(self, name) is not None for name in ROW_CONDITIONS if name != "under"
        )

    def __bool__(self) -> bool:
        return self.filters_rows or self.min_score is not None

    def describe(self) -> str:
        """The filter as a short text ("under a/, duration >= 60 s, score >= 0.2"), "" for none."""
        parts = [f"under {', '.join(self.under)}"] if self.under else []
        if self.min_duration is not None:
            parts.append(f"duration >= {self.min_duration:g} s")
        if self.max_duration is not None:
            parts.append(f"duration <= {self.max_duration:g} s")
        if self.modified_after is not None:
            parts.append(f"modified from {_iso(self.modified_after)}")
        if self.modified_before is not None:
            parts.append(f"modified before {_iso(self.modified_before)}")
        if self.min_score is not None:
            parts.append(f"score >= {self.min_score:g}")
        return ", ".join(parts)


def filter_of(filters: SearchFilter | None = None, **options) -> SearchFilter | None:
    """``filters`` combined with filter keywords (``FILTER_NAMES``; None/empty: not set); None when no
    filter is set. A keyword given twice (in ``filters`` and as a keyword) is refused."""
    given = {name: value for name, value in options.items() if value not in (None, (), [])}
    unknown = sorted(set(given) - set(FILTER_NAMES))
    if unknown:
        raise TypeError(f"unknown filter {unknown[0]!r}; filters: {', '.join(FILTER_NAMES)}")
    if filters is None:
        made = SearchFilter.make(**given) if given else None
        return made if made else None
    if not isinstance(filters, SearchFilter):
        raise TypeError(f"filters must be a SearchFilter, got {type(filters).__name__}")
    both = [name for name in given if getattr(filters, name) not in (None, ())]
    if both:
        raise ValueError(f"{both[0]} given both in filters= and as a keyword")
    extra = SearchFilter.make(**given)
    merged = {name: getattr(extra, name) or getattr(filters, name) for name in FILTER_NAMES}
    merged["under"] = filters.under + extra.under
    result = SearchFilter(**merged)
    return result if result else None


def parse_time(value, name: str = "date") -> int:
    """A time as nanoseconds since the epoch: ISO 8601 text ("2024-05-01", "2024-05-01T13:30:00+02:00";
    local time without an offset), a ``datetime`` (naive: local time) or a ``date`` (its midnight, local)."""
    when = value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise IndexInputError(
                f"{name} {value!r}: give a date as YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]"
            ) from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        when = datetime.combine(value, time())
    if not isinstance(when, datetime):
        raise IndexInputError(f"{name} {value!r}: give a date (text, datetime or date)")
    if when.tzinfo is None:
        when = when.astimezone()  # the local time zone, as `find -newermt` reads a date
    delta = when - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _iso(nanoseconds: int) -> str:
    moment = datetime.fromtimestamp(nanoseconds / 1e9, tz=timezone.utc).astimezone()
    return moment.isoformat(timespec="seconds")


# --- the rows a filter allows -------------------------------------------------------------------


@dataclass
class RowSelection:
    """The rows of one index a filter allows: ``mask`` (N,) bool; ``rows`` (n,) int64 ascending;
    ``bitmap`` the mask packed little-endian, 1 bit a row (faiss's ``IDSelectorBitmap``)."""

    mask: np.ndarray
    rows: np.ndarray = field(init=False)
    _bitmap: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.rows = np.flatnonzero(self.mask).astype(np.int64)

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def fraction(self) -> float:
        """Allowed rows / all rows (1.0 for an index of no rows)."""
        return self.count / len(self.mask) if len(self.mask) else 1.0

    @property
    def bitmap(self) -> np.ndarray:
        if self._bitmap is None:
            self._bitmap = np.packbits(self.mask, bitorder="little")
        return self._bitmap

    @classmethod
    def build(cls, index, filters: SearchFilter) -> RowSelection:
        """The rows of ``index`` (an ``EmbeddingIndex``) that ``filters``' row conditions allow."""
        mask = np.ones(len(index), dtype=bool)
        if filters.under:
            mask &= under_mask(index, filters.under)
        if filters.min_duration is not None or filters.max_duration is not None:
            durations = _values(index, "duration_s", "--min-duration/--max-duration", np.float64, np.nan)
            if filters.min_duration is not None:
                mask &= durations >= filters.min_duration  # NaN (unknown) fails both bounds
            if filters.max_duration is not None:
                mask &= durations <= filters.max_duration
        if filters.modified_after is not None or filters.modified_before is not None:
            mtimes = _values(index, "mtime_ns", "--modified-after/--modified-before", np.int64, -1)
            known = mtimes != -1
            if filters.modified_after is not None:
                mask &= known & (mtimes >= filters.modified_after)
            if filters.modified_before is not None:
                mask &= known & (mtimes < filters.modified_before)
        return cls(mask)


def supported_filters(index) -> dict[str, bool]:
    """Which filter options ``index`` can serve: {"--under": True, "--min-duration/--max-duration":
    whether it records durations, "--modified-after/--modified-before": whether it records mtimes,
    "--min-score": True} (``index info`` shows it)."""
    recorded = {}
    for column in ("duration_s", "mtime_ns"):
        values = index.row_column(column)
        recorded[column] = values is not None and values.null_count < len(values)
    return {
        "--under": True,
        "--min-duration/--max-duration": recorded["duration_s"],
        "--modified-after/--modified-before": recorded["mtime_ns"],
        "--min-score": True,
    }


def _values(index, column: str, option: str, dtype, fill) -> np.ndarray:
    """One numeric row-record column of ``index`` as (N,) ``dtype``, nulls as ``fill``; IndexInputError
    when the index records none of it (written before the column existed, or without the values)."""
    values = index.row_column(column)
    if values is None or values.null_count == len(values):
        where = f"{index.location}: " if getattr(index, "location", None) else ""
        what = "video durations" if column == "duration_s" else "file modification times"
        raise IndexInputError(
            f"{option}: {where}this index records no {what} (written before muse-infer recorded them, or "
            "by write_index without them): encode the folder again (encode-videos ... --overwrite) to "
            "filter on them"
        )
    return numpy_values(values, dtype, fill)


def folder_prefix(folder: str, root) -> str:
    """The path prefix ("a/b/") of the index's rows inside ``folder``, "" for every row.

    folder: relative to the index's ``root`` (as search shows paths), or absolute under it (compared
    as written, then with symlinks resolved). Raises IndexInputError for a folder outside the root.
    """
    text = os.fspath(folder)
    if not text.strip():
        raise IndexInputError("--under: give a folder, e.g. --under holidays/2024")
    if os.path.isabs(text):
        if root is None:  # an index without a root keeps paths as given (absolute ones, then)
            return _with_slash(posixpath.normpath(text))
        relative = _inside(text, os.fspath(root))
        if relative is None:
            relative = _inside(os.path.realpath(text), os.path.realpath(os.fspath(root)))
        if relative is None:
            raise IndexInputError(f"--under {text}: not inside the indexed folder {root}")
        text = relative
    normal = posixpath.normpath(text.replace(os.sep, "/"))
    if normal == "..":
        raise IndexInputError(f"--under {text}: outside the indexed folder (give a folder inside it)")
    if normal.startswith("../"):
        raise IndexInputError(f"--under {text}: outside the indexed folder (give a folder inside it)")
    return "" if normal == "." else _with_slash(normal)


def _inside(path: str, root: str) -> str | None:
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    if path == root:
        return "."
    return path[len(root) :].lstrip("/") if path.startswith(root.rstrip("/") + "/") else None


def _with_slash(path: str) -> str:
    return path if path.endswith("/") else path + "/"


def under_mask(index, folders) -> np.ndarray:
    """(N,) bool: the rows whose exact path lies in one of ``folders`` (see ``folder_prefix``).

    UTF-8 names are matched in Arrow (``starts_with`` on the ``path`` column); names stored with
    their bytes (``path_bytes``, their ``path`` only display text) are matched on their exact str.
    """
    import pyarrow.compute as pc

    from ..filenames import is_utf8

    prefixes = sorted({folder_prefix(folder, index.root) for folder in folders})
    count = len(index)
    if "" in prefixes:
        return np.ones(count, dtype=bool)
    exact = index.paths.exact_names  # {row: exact path} of the names that are not UTF-8
    mask = np.zeros(count, dtype=bool)
    texts = [prefix for prefix in prefixes if is_utf8(prefix)]  # others only match names kept as bytes
    if texts and count:
        column = index.path_column
        if len(texts) == 1:
            found = pc.starts_with(column, texts[0])
        else:  # one pass of RE2 over the names, not one pass a folder (50 folders: 0.07 s, not 1 s)
            found = pc.match_substring_regex(column, "^(?:" + "|".join(re.escape(t) for t in texts) + ")")
        mask |= numpy_values(pc.cast(found, "uint8"), np.uint8, 0).astype(bool)
    for row, path in exact.items():  # their ``path`` is display text: never trust a match on it
        mask[row] = any(path.startswith(prefix) for prefix in prefixes)
    return mask
