"""Text tokenisers: CLIP's BPE as CLIP4Clip uses it, and the Hugging Face tokenizers of other towers.

- ``tokenize`` / ``ClipBpeTokenizer``: CLIP4Clip's layout: [start] + BPE tokens cut to max_words - 2,
  [end], zero-padded (the same ids as open_clip's ``SimpleTokenizer`` at that context length).
- ``HfTokenizer``: what open_clip's ``HFTokenizer`` does for SigLIP, SigLIP2 and the xlm-roberta towers
  (clean the text, encode with the tokenizer's special tokens, truncate and pad to the context length,
  optionally zero the separator), read with the ``tokenizers`` package from a local ``tokenizer.json``:
  these files cannot be downloaded on every machine, so they come from a folder the user gives
  (``--tokenizer DIR``) or the Hugging Face cache, and the error says which files to fetch.

``text_tokenizer(config, folder)`` picks the one a model config names (``MuseConfig.tokenizer``).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch

from .errors import ConfigError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
HF_TEXT_CONFIG = "config.json"  # a Hugging Face text tower's architecture (xlm-roberta's)


@functools.lru_cache(maxsize=1)
def _bpe():
    # open_clip ships the BPE vocabulary; reading it takes a moment, so do it once and only when needed
    # (``clip_bpe`` reads it without importing open_clip, whose import costs seconds).
    from .clip_bpe import ClipBpe

    return ClipBpe()


def _check_texts(texts: list[str] | str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a string or a list of strings")
    return list(texts)


def tokenize(texts: list[str] | str, max_words: int = 32) -> torch.Tensor:
    """texts -> token ids (N, max_words) long, as CLIP4Clip builds them (text lower-cased and cleaned)."""
    texts = _check_texts(texts)
    bpe = _bpe()
    ids = torch.zeros(len(texts), max_words, dtype=torch.long)
    for row, text in enumerate(texts):
        tokens = [bpe.sot_token_id] + bpe.encode(text)[: max_words - 2] + [bpe.eot_token_id]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids


class ClipBpeTokenizer:
    """CLIP's BPE (``tokenize``) at ``max_words`` tokens: texts -> (N, max_words) long."""

    kind = "clip"

    def __init__(self, max_words: int):
        self.max_words = max_words

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        return tokenize(texts, self.max_words)

    def describe(self) -> dict:
        """What an export manifest records of it."""
        bpe = _bpe()
        return {
            "kind": "CLIP BPE (open_clip SimpleTokenizer, lower-cased, cleaned)",
            "max_words": self.max_words,
            "layout": "[sot] + BPE tokens cut to max_words - 2 + [eot], zero-padded to max_words",
            "sot_token_id": bpe.sot_token_id,
            "eot_token_id": bpe.eot_token_id,
            "pad_token_id": 0,
        }


class HfTokenizer:
    """A Hugging Face fast tokenizer from ``folder`` (its tokenizer.json and, when there,
    tokenizer_config.json / special_tokens_map.json for the pad token and sides), used as open_clip's
    ``HFTokenizer`` uses it: texts cleaned (``clean``: open_clip's "whitespace", "canonicalize" or
    "lower"), special tokens added, truncated and padded to ``max_words``; ``strip_sep_token`` zeroes the
    separator. texts -> (N, max_words) long."""

    kind = "hf"

    def __init__(
        self, folder: str | os.PathLike, max_words: int, clean: str = "whitespace", strip_sep_token=False
    ):
        from tokenizers import Tokenizer

        self.folder, self.max_words, self.clean = Path(folder), max_words, clean
        self._tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        special = _special_tokens(self.folder)
        pad = special.get("pad_token")
        self.pad_id = self._token_id(pad, "pad_token") if pad else 0
        self.sep_id = self._token_id(special.get("sep_token"), "sep_token") if strip_sep_token else None
        self._tokenizer.enable_truncation(max_words, direction=special.get("truncation_side", "right"))
        self._tokenizer.enable_padding(
            length=max_words,
            pad_id=self.pad_id,
            pad_token=pad or "[PAD]",
            direction=special.get("padding_side", "right"),
        )

    def _token_id(self, token: str | None, what: str) -> int:
        token_id = self._tokenizer.token_to_id(token) if token else None
        if token_id is None:
            raise ConfigError(f"{self.folder}: its {what} {token!r} is not in tokenizer.json's vocabulary")
        return token_id

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        from open_clip.tokenizer import get_clean_fn

        clean = get_clean_fn(self.clean)
        encodings = self._tokenizer.encode_batch([clean(t) for t in _check_texts(texts)])
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(-1, self.max_words)
        if self.sep_id is not None:
            ids[ids == self.sep_id] = 0
        return ids

    def describe(self) -> dict:
        return {
            "kind": "Hugging Face tokenizer (tokenizer.json)",
            "max_words": self.max_words,
            "clean": self.clean,
            "layout": "tokenizer.json's special tokens, truncated and padded to max_words",
            "pad_token_id": self.pad_id,
            "strip_sep_token_id": self.sep_id,
            "files": "tokenizer/ (tokenizer.json, tokenizer_config.json, special_tokens_map.json)",
        }


def _special_tokens(folder: Path) -> dict:
    """pad/sep tokens and padding/truncation sides from tokenizer_config.json, then
    special_tokens_map.json (as transformers reads them); tokens given as {"content": ...} objects too."""
    merged: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise ConfigError(f"{path}: unreadable ({error})") from None
            merged.update({k: v for k, v in data.items() if v is not None})
    return {
        key: value["content"] if isinstance(value, dict) and "content" in value else value
        for key, value in merged.items()
        if key in ("pad_token", "sep_token", "padding_side", "truncation_side")
    }


def text_tokenizer(config, folder: str | os.PathLike | None = None):
    """The tokenizer a ``MuseConfig`` names, at its ``max_words``: CLIP's BPE, or its Hugging Face
    tokenizer read from ``folder`` (else the Hugging Face cache; ConfigError naming the files when
    neither has them)."""
    spec = config.tokenizer
    if spec is None:
        return ClipBpeTokenizer(config.max_words)
    files = hf_files(spec["name"], folder, TOKENIZER_FILES[:1], what="tokenizer")
    return HfTokenizer(files, config.max_words, spec.get("clean", "whitespace"), spec.get("strip_sep_token"))


def hf_files(repo: str, folder: str | os.PathLike | None, needed: tuple[str, ...], what: str) -> Path:
    """A folder holding ``needed`` files of the Hugging Face repository ``repo``: ``folder`` if given
    (it must hold them), else the repository's snapshot in the local Hugging Face cache (never the
    network). ConfigError otherwise, naming the files to fetch and where from."""
    if folder is not None:
        folder = Path(folder)
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise ConfigError(
                f"--tokenizer {folder}: no {', '.join(missing)} there. {fetch_hint(repo, what)}"
            )
        return folder
    cached = _cached_snapshot(repo, needed)
    if cached is None:
        raise ConfigError(
            f"the {what} files of {repo} are not in the Hugging Face cache. {fetch_hint(repo, what)}"
        )
    return cached


def fetch_hint(repo: str, what: str = "tokenizer") -> str:
    names = TOKENIZER_FILES + ((HF_TEXT_CONFIG,) if what != "tokenizer" else ())
    return (
        f"Fetch {', '.join(names)} from https://huggingface.co/{repo} (on a connected machine: "
        f"`hf download {repo} {' '.join(names)} --local-dir DIR`) and pass --tokenizer DIR "
        f"(tokenizer='DIR' in Python)"
    )


def _cached_snapshot(repo: str, needed: tuple[str, ...]) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    folders = set()
    for name in needed:
        path = try_to_load_from_cache(repo, name)
        if not isinstance(path, str):  # None (not cached) or a "known missing" marker
            return None
        folders.add(Path(path).parent)
    return folders.pop() if len(folders) == 1 else None
