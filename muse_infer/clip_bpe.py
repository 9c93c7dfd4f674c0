"""CLIP's byte-level BPE tokeniser, without importing open_clip (or torch, or torchvision).

open_clip ships the vocabulary (``bpe_simple_vocab_16e6.txt.gz``: 48,894 merges) but importing its
package imports torchvision, seconds a search cannot afford; this module reads the same file from
open_clip's folder (found without importing it) and applies the same rules, which the tests hold
against open_clip's ``SimpleTokenizer`` on awkward texts:

- text cleaned as CLIP does: ``ftfy.fix_text``, HTML entities unescaped twice, whitespace runs made
  single spaces, stripped, lower-cased;
- split into words by CLIP's pattern (contractions, letter runs, single digits, other symbols);
- each word's UTF-8 bytes mapped to printable characters (``byte_characters``), the last marked with
  ``</w>``, and pairs merged by rank until no ranked pair is left;
- ids: the 512 byte characters (plain and ``</w>``), the merges in order, then
  ``<start_of_text>`` (49406) and ``<end_of_text>`` (49407).
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import os
import re

VOCABULARY_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2  # the merges CLIP uses (the file holds more)
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
WORD_PATTERN = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# Texts that ``ftfy.fix_text`` returns unchanged, told apart without importing ftfy (60-160 ms of a
# search's start-up): printable ASCII, tabs and newlines, no "&". ftfy leaves ASCII's encoding alone,
# and each of its other fixes acts only on non-ASCII characters, control characters, "\r", terminal
# escapes (ESC) or HTML entities (tests/test_search_startup.py holds the two equal on random texts).
LEFT_AS_IS_BY_FTFY = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")


def vocabulary_path() -> str:
    """The BPE merges file open_clip ships, located without importing open_clip."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        from .errors import MissingExtraError

        raise MissingExtraError(
            "the CLIP tokeniser's vocabulary comes with open_clip: pip install open_clip_torch"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], VOCABULARY_FILE)


@functools.cache
def byte_characters() -> dict[int, str]:
    """Each byte 0-255 -> a printable character: printable Latin-1 bytes stand for themselves, the
    others (controls, space, a few more) for the characters from U+0100 on, in byte order. The
    dict's order (printable bytes first, then the others) is the vocabulary's first 256 ids."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in mapping]
    mapping |= {byte: chr(256 + n) for n, byte in enumerate(others)}
    return mapping


def read_merges(path: str, chunk_bytes: int = 1 << 17) -> list[str]:
    """The ``MERGES`` merges CLIP uses ("first second" each): the lines after the file's header.

    The file holds 262,144 merges and CLIP's are the first fifth, so it is decompressed only as far as
    they go (half the tokeniser's set-up). A shorter file is refused (ConfigError naming it)."""
    line_breaks = MERGES + 1  # one ends the header, one each merge
    chunks, seen = [], 0
    with gzip.open(path) as handle:
        while seen < line_breaks and (chunk := handle.read(chunk_bytes)):
            chunks.append(chunk)
            seen += chunk.count(b"\n")
    data = b"".join(chunks)
    whole_lines = data[: data.rfind(b"\n") + 1]  # a chunk may end inside a UTF-8 character
    merges = whole_lines.decode("utf-8").split("\n", line_breaks)[1 : MERGES + 1]
    if len(merges) < MERGES:
        from .errors import ConfigError

        raise ConfigError(
            f"{path}: holds {len(merges)} BPE merges, CLIP's tokeniser needs {MERGES} "
            "(a truncated file? reinstall open_clip_torch)"
        )
    return merges


class ClipBpe:
    """``encode(text)`` -> CLIP token ids (no start/end tokens); ``sot_token_id``, ``eot_token_id``."""

    def __init__(self, path: str | None = None):
        merges = read_merges(path or vocabulary_path())
        characters = list(byte_characters().values())
        vocabulary = characters + [c + "</w>" for c in characters] + [m.replace(" ", "") for m in merges]
        vocabulary += list(SPECIAL_TOKENS)
        self.ids = {token: number for number, token in enumerate(vocabulary)}
        self.ranks = {merge: rank for rank, merge in enumerate(merges)}  # keyed by "first second"
        self.sot_token_id, self.eot_token_id = (self.ids[t] for t in SPECIAL_TOKENS)
        import regex

        self.words = regex.compile(WORD_PATTERN, regex.IGNORECASE)
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in self.words.findall(clean(text)):
            if word not in self._cache:
                self._cache[word] = self._word_ids(word)
            ids += self._cache[word]
        return ids

    def _word_ids(self, word: str) -> list[int]:
        if word in SPECIAL_TOKENS:
            return [self.ids[word]]
        table = byte_characters()
        symbols = [table[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        return [self.ids[symbol] for symbol in self._merged(symbols)]

    def _merged(self, symbols: list[str]) -> list[str]:
        """Merge the best-ranked adjacent pair, everywhere it occurs, until no pair has a rank."""
        unranked = len(self.ranks)
        while len(symbols) > 1:
            pairs = {f"{a} {b}" for a, b in zip(symbols, symbols[1:], strict=False)}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, unranked))
            if best not in self.ranks:
                break
            first, second = best.split(" ")
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols


def clean(text: str) -> str:
    """CLIP's text cleaning: ftfy, HTML entities unescaped twice, whitespace collapsed, lower-cased.
    ftfy is imported only for texts it may change (``LEFT_AS_IS_BY_FTFY``)."""
    if not LEFT_AS_IS_BY_FTFY.fullmatch(text):
        import ftfy

        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()
