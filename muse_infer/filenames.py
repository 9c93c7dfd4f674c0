"""File names of any bytes: the exact name, the name as text for people, and the name as stored.

A POSIX file name is bytes, often not UTF-8 (Latin-1 names from old archives, network shares, zips).
Python hands such a name over as a str holding lone surrogates (PEP 383: byte 0xE9 becomes
'\\udce9'); ``os.fsencode`` gives the bytes back and every ``os`` function opens it. That str cannot
be written as UTF-8: Parquet, an HTML page or a UTF-8 terminal refuse it. So muse-infer keeps three
forms of a path:

- the **exact** form, everywhere in memory and in what programs read back: that str, as ``os.walk``
  gives it (``open(path)`` works). In JSON (written by Python's ``json`` with ``ensure_ascii``, so the
  file is plain ASCII) a byte that is not UTF-8 is the escape ``\\udcXX``, which Python's ``json``
  reads back into the same str;
- the **display** form (``display_name``): text for people and for strict UTF-8 consumers, every
  byte that is not UTF-8 shown as ``\\xNN`` and control characters (a newline, a tab, ESC) as
  ``\\n``, ``\\t``, ``\\x1b``; two names may look alike here (it is for reading, never for opening).
  JSON records add it as ``display_path`` only where it differs from the exact path;
- the **stored** form (``stored_name``): what the index's Parquet rows hold, the exact text when the
  name is UTF-8, else its display text plus its bytes (``muse_infer.index.store``).

Names that differ only by Unicode normalisation (NFC ``é`` and NFD ``e`` + U+0301) are different files
on Linux and stay different here: nothing normalises a name.

This module imports nothing of muse-infer (every layer may use it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

# C0 controls, DEL and C1 controls: a name holding one would break a line of a listing or a log.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_utf8(path: str) -> bool:
    """Whether ``path`` is text UTF-8 can hold (no lone surrogate: every byte of the name was UTF-8)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def name_bytes(path: str) -> bytes:
    """The name's bytes on disk (``os.fsencode``). Raises ValueError for a str that no file name gives
    (a lone surrogate outside U+DC80..U+DCFF, which ``os.walk`` never returns)."""
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:
        raise ValueError(f"{display_name(path)}: holds a lone surrogate that no file name has") from None


def from_bytes(data: bytes) -> str:
    """The exact str of a name's bytes (``os.fsdecode``): what ``os.walk`` would have given."""
    return os.fsdecode(bytes(data))


def display_name(path: str) -> str:
    """``path`` as text for people: valid Unicode, bytes that are not UTF-8 as ``\\xNN``, control
    characters as ``\\n``, ``\\t``, ``\\xNN``. Equal to ``path`` for an ordinary name."""
    if not is_utf8(path):
        try:
            path = os.fsencode(path).decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate no file name has: shown as \udXXX
            path = path.encode("utf-8", "backslashreplace").decode("ascii")
    if _CONTROL.search(path):
        path = _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), path)
    return path


def stored_name(path: str) -> tuple[str, bytes | None]:
    """(text, bytes) as the index's rows store ``path``: (path, None) for a UTF-8 name, else (its display
    text, its bytes). ``from_stored`` inverts it. Raises ValueError as ``name_bytes``."""
    if is_utf8(path):
        return path, None
    return display_name(path), name_bytes(path)


def from_stored(text: str, data: bytes | None) -> str:
    """The exact path of a stored (text, bytes) pair: the bytes when there are some, else the text."""
    return text if data is None else from_bytes(data)


def with_display(record: dict, key: str = "path", display_key: str = "display_path") -> dict:
    """``record`` with ``display_key`` added after ``key`` when ``record[key]``'s display form differs
    (a name holding bytes that are not UTF-8, or control characters); the same dict otherwise."""
    value = record.get(key)
    if not isinstance(value, str) or display_name(value) == value:
        return record
    out = {}
    for name, item in record.items():
        out[name] = item
        if name == key:
            out[display_key] = display_name(value)
    return out


@contextmanager
def c_library_path(path: str | os.PathLike, flags: int = os.O_RDONLY) -> Iterator[str]:
    """A name a C library (faiss, OpenCV) can open for ``path``: the path itself when it is UTF-8, else
    ``/proc/self/fd/N`` of the file opened here with ``flags`` (those libraries take UTF-8 C strings: a
    name that is not UTF-8 fails there, or, in OpenCV, crashes the process). Raises OSError as
    ``os.open`` does, or when the system has no ``/proc/self/fd`` (then such a name cannot be handed on).
    """
    text = os.fspath(path)
    if is_utf8(text):
        yield text
        return
    descriptor = os.open(text, flags, 0o644)
    try:
        proxy = f"/proc/self/fd/{descriptor}"
        if not os.path.exists(proxy):
            raise OSError(
                f"{display_name(text)}: a name that is not UTF-8 cannot be handed to this library here"
            )
        yield proxy
    finally:
        os.close(descriptor)
