"""``PathColumn``: an index's row paths as a read-only sequence of exact names, over the Arrow column."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PathColumn(Sequence):
    """The rows' exact paths as a read-only sequence of str, without a Python list of N strings (nor a
    copy of the Arrow column: its chunks are indexed where they are).

    column: the ``path`` column; exact: {row: exact path} of the rows whose name is not UTF-8
    (``store.exact_paths`` of the ``path_bytes`` column: their ``path`` is only display text).
    """

    def __init__(self, column, exact: dict[int, str] | None = None):
        self._chunks = [chunk for chunk in column.chunks if len(chunk)]
        self._starts = np.cumsum([0] + [len(chunk) for chunk in self._chunks])  # (chunks + 1,)
        self._exact = exact or {}

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def exact_names(self) -> dict[int, str]:
        """{row: exact path} of the rows whose name is not UTF-8 (their ``path`` column is display text)."""
        return self._exact

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        if item < 0:
            item += len(self)
        if not 0 <= item < len(self):
            raise IndexError(f"row {item} out of range for {len(self)} rows")
        if item in self._exact:
            return self._exact[item]
        chunk = int(np.searchsorted(self._starts, item, side="right")) - 1
        return self._chunks[chunk][item - int(self._starts[chunk])].as_py()

    def __iter__(self):
        row = 0
        for chunk in self._chunks:
            for start in range(0, len(chunk), 65536):
                texts = chunk[start : start + 65536].to_pylist()
                if self._exact:
                    texts = [self._exact.get(row + n, text) for n, text in enumerate(texts)]
                yield from texts
                row += len(texts)

    def counts(self) -> dict[str, int]:
        """{exact path: how many rows hold it} (a video of moments has several rows)."""
        counts: dict[str, int] = {}
        if not self._exact:
            for chunk in self._chunks:
                found = chunk.value_counts()
                for path, count in zip(found.field(0).to_pylist(), found.field(1).to_pylist(), strict=True):
                    counts[path] = counts.get(path, 0) + count
            return counts
        for path in self:
            counts[path] = counts.get(path, 0) + 1
        return counts

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"PathColumn({len(self)} paths)"
