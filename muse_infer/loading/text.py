"""A model's text tower alone, for searching: the tensors it needs read from the checkpoint or CLIP
weights file (nothing else), assigned without initialising anything first, and no open_clip import.

``load_text_model`` gives a ``model.text_tower.TextModel`` whose text embeddings equal the whole
model's (``load_model(...).encode_text_tokens``) bit for bit; ``None`` for a model whose text tower it
does not cover (``text_tower.supports``), which the caller then loads whole.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from .identity import effective_clip_weights
from .reference import ClipWeights, ModelRef, model_config

CHECKPOINT_PREFIX = "backbone.clip."  # a MuseModel's CLIP keys


def load_text_model(
    ref: ModelRef,
    clip_weights: ClipWeights | None = None,
    device: str = "cpu",
    seed: int = 0,
    tokenizer: str | None = None,
):
    """The text tower of ``ref`` (a resolved reference) on ``device``, or None when it is not a plain
    CLIP text tower (``text_tower.supports``: SigLIP's, xlm-roberta's, ``custom_text`` models' load
    whole). ``clip_weights``: a named/config model's CLIP weights ("random": the seeded random weights
    ``load_model`` gives, seed ``seed``; an open_clip tag is checked against the model as
    ``model_config`` checks it). tokenizer: the folder of a Hugging Face tokenizer's files, if any."""
    from ..model.text_tower import (
        TextModel,
        build_text_tower,
        random_text_weights,
        supports,
        text_parameter_names,
    )

    config = model_config(ref, clip_weights)
    if not supports(config.clip):
        return None
    names = text_parameter_names(config.clip)
    if ref.kind in ("checkpoint", "packaged"):
        weights = _read_tensors(ref.path, [CHECKPOINT_PREFIX + name for name in names], CHECKPOINT_PREFIX)
    else:
        source = effective_clip_weights(config, clip_weights)
        if source is None or source.is_random:
            weights = random_text_weights(config.clip, seed)
        else:
            from .models import resolve_clip_weights

            weights = _clip_text_weights(resolve_clip_weights(config, source), names)
    return TextModel(config, build_text_tower(config.clip, weights, device), tokenizer)


def _read_tensors(path: Path, keys: list[str], prefix: str) -> dict[str, torch.Tensor]:
    """Only ``keys`` of a .safetensors file (memory-mapped), their ``prefix`` removed."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            present = set(handle.keys())
            missing = [key for key in keys if key not in present]
            if missing:
                raise CheckpointError(f"{path}: missing key '{missing[0]}' ({len(missing)} missing in all)")
            return {key.removeprefix(prefix): handle.get_tensor(key) for key in keys}
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises its own types for damaged files
        raise CheckpointError(
            f"{path}: not a readable .safetensors file ({error}); is it truncated?"
        ) from None


def _clip_text_weights(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The text tensors of an open_clip/OpenAI CLIP weights file (keys with or without "clip.")."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            prefix = "clip." if f"clip.{names[0]}" in set(handle.keys()) else ""
        return _read_tensors(path, [prefix + name for name in names], prefix)
    from .checkpoint import read_torch_state_dict

    state = {key.removeprefix("clip."): value for key, value in read_torch_state_dict(path).items()}
    missing = [name for name in names if name not in state]
    if missing:
        raise CheckpointError(f"{path}: missing key '{missing[0]}' ({len(missing)} missing in all)")
    return {name: state[name] for name in names}
