"""CLIP4Clip's text tokenisation: [start] + BPE tokens cut to max_words - 2, [end], zero-padded."""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def _bpe():
    # open_clip ships the BPE vocabulary; reading it takes a moment, so do it once and only when needed
    # (``clip_bpe`` reads it without importing open_clip, whose import costs seconds).
    from .clip_bpe import ClipBpe

    return ClipBpe()


def tokenize(texts: list[str] | str, max_words: int = 32) -> torch.Tensor:
    """texts -> token ids (N, max_words) long, as CLIP4Clip builds them (text lower-cased and cleaned)."""
    if isinstance(texts, str):
        texts = [texts]
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a string or a list of strings")
    bpe = _bpe()
    ids = torch.zeros(len(texts), max_words, dtype=torch.long)
    for row, text in enumerate(texts):
        tokens = [bpe.sot_token_id] + bpe.encode(text)[: max_words - 2] + [bpe.eot_token_id]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids
