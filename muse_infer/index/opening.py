"""Opening an index of any readable format version: version 2 (``store``) or version 1 (``legacy``)."""

from __future__ import annotations

import os
from pathlib import Path

from .legacy import open_v1
from .store import OpenedIndex, map_embeddings, open_v2, read_sidecar, resolve_pair


def open_index(path: str | os.PathLike, verify: bool | str = "auto") -> OpenedIndex:
    """Open ``EMB.npy`` (or its sidecar): sidecar, memory-mapped rows and row metadata, checked.

    verify: ``"auto"`` checks every chunk hash of embeddings up to ``store.AUTO_VERIFY_BYTES``, the
    first and last chunk of larger ones; ``True`` every chunk; ``False`` none (shapes and sizes are
    always checked). Raises ``IndexFileError`` naming the file and what to do.
    """
    npy, sidecar = resolve_pair(Path(path))
    metadata = read_sidecar(sidecar)
    embeddings = map_embeddings(npy, sidecar, metadata)
    opener = open_v1 if metadata["format_version"] == 1 else open_v2
    return opener(npy, sidecar, metadata, embeddings, verify)
