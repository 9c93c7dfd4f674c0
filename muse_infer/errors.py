"""Every error a user can fix, under one base: ``MuseError``.

A ``MuseError``'s message says what is wrong, with which file or argument, and what to do; the CLI
prints it as one ``Error:`` line with exit status 2 (``muse_infer.cli``), so every command handles
all of them the same way. Each class also derives from the built-in its callers caught before
(``ValueError`` or ``RuntimeError``), so code written against those keeps working.

This module imports nothing heavy: every layer of the package can raise these.
"""

from __future__ import annotations

import os


class MuseError(Exception):
    """An error caused by input the user controls (files, names, arguments, the machine's setup)."""


class ConfigError(MuseError, ValueError):
    """A model configuration that cannot be built; the message names the field."""


class CheckpointError(MuseError, ValueError):
    """A checkpoint that cannot be read or does not fit its model; the message names file and key."""


class ConversionError(CheckpointError):
    """The input cannot become a MUSE model; the message says what is missing and what to do."""


class PretrainedWeightsError(MuseError, RuntimeError):
    """Pretrained CLIP weights could not be found or fetched; the message says how to pass a local file."""


class ScanChoiceError(MuseError, ValueError):
    """A selective-scan choice (``model.set_scan``, ``MUSE_SCAN``) that is not one of the known ones."""


class BackendError(MuseError, ValueError):
    """A backend or device that cannot be used; the message says what to do instead."""


class VideoDecodeError(MuseError, ValueError):
    """A file that cannot be read as a video; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"cannot read video {self.path!r}: {reason}")

    def __reduce__(self):  # picklable across processes despite the two-argument constructor
        return (type(self), (self.path, self.reason))


class DecodePoolError(MuseError, RuntimeError):
    """The decode workers could not be started or failed as a whole (not one bad file)."""


class IndexFileError(MuseError, ValueError):
    """An index or sidecar that is missing, truncated or inconsistent; the message names the file and the fix."""


class ModelMismatchError(IndexFileError):
    """A model other than the index's was given for searching it."""


class JobError(MuseError, ValueError):
    """A job that cannot run as asked (bad folder, mismatched previous work, locked); the message says what to do."""


class DatasetError(MuseError, ValueError):
    """An annotation file that cannot be read as its layout says; the message names file, line and field."""


class MissingExtraError(MuseError, ImportError):
    """An optional feature whose packages are not installed; the message names the pip extra."""


class ServeError(MuseError, ValueError):
    """The search service cannot start as asked (an unsafe bind, a busy port); the message says what to do."""


class RayEngineError(JobError):
    """The Ray engine cannot run: no cluster at ``--address``, a cluster without the resources asked
    for, or a model that is not the driver's on a worker; the message says what to do. (Ray not
    installed is a ``MissingExtraError``.)"""


class IndexInputError(MuseError, ValueError):
    """Arrays or arguments that cannot make an index (shapes, lengths, non-finite or zero rows, a budget
    too small for any index kind); the message names the argument and what to do."""


class QueryError(MuseError, ValueError):
    """A text query that cannot be searched for (empty, blank, not a string); the message names it."""
