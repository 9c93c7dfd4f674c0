"""``load_model``: a MUSE model from a checkpoint file, a packaged model, a config file, or a named
architecture (what each reference means: ``muse_infer.loading.reference``)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch

from ..config import MuseConfig
from ..errors import CheckpointError, ConfigError, PretrainedWeightsError
from .checkpoint import load_checkpoint, read_torch_state_dict
from .identity import effective_clip_weights
from .reference import (
    ClipWeights,
    ModelRef,
    available_models,
    model_config,
    parse_clip_weights,
    resolve_model,
)

__all__ = ["load_model", "available_models", "build_model", "load_clip_weights", "resolve_clip_weights"]

logger = logging.getLogger(__name__)
RANDOM_INIT_SEED = 0  # random weights are seeded so that two loads of the same name agree


def load_model(
    name_or_path: str | os.PathLike | ModelRef,
    device: str | torch.device = "cpu",
    clip_weights: str | os.PathLike | None = None,
):
    """A MuseModel in eval mode.

    name_or_path: a muse-infer ``.safetensors`` checkpoint; a packaged trained model ("demo"); a JSON
    config file; or a named architecture (``available_models()``: "ViT-B-32", "ViT-B-16", their
    "-meanP" baselines, "tiny"). For a config or an architecture, the CLIP weights come from
    ``clip_weights`` (an open_clip pretrained tag such as "openai", a local weights file, or
    "random"), else from the config's ``clip_pretrained``.
    """
    ref = name_or_path if isinstance(name_or_path, ModelRef) else resolve_model(name_or_path)
    if ref.kind in ("checkpoint", "packaged"):
        return load_checkpoint(ref.path, device)
    if ref.kind == "export":
        raise ConfigError(
            f"'{ref.name}' is an export directory: run it with a backend (--backend onnx, torchscript or "
            "pt2; VideoEncoder(..., backend=...)), or load the checkpoint it was exported from"
        )
    return build_model(model_config(ref), clip_weights).to(device).eval()


def build_model(
    config: MuseConfig,
    clip_weights: str | os.PathLike | ClipWeights | None = None,
    seed: int = RANDOM_INIT_SEED,
):
    """A freshly initialised (``seed``) MuseModel, with pretrained CLIP weights loaded when named
    (``clip_weights``, else the config's ``clip_pretrained``; "random" keeps the seeded ones)."""
    from ..model import MuseModel, text_tower

    weights = effective_clip_weights(config, clip_weights)  # parsed before the slow build
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MuseModel(config)
    if weights is not None and not weights.is_random:
        load_clip_weights(model.backbone.clip, resolve_clip_weights(config, weights))
    elif text_tower.supports(config.clip):
        # Random text weights drawn by name, as the text tower alone draws them (``loading.text``): a
        # search loads only that tower and must compute the same text embeddings.
        random = text_tower.random_text_weights(config.clip, seed)
        unexpected = model.backbone.clip.load_state_dict(random, strict=False).unexpected_keys
        assert not unexpected, f"text weights not in the CLIP model: {unexpected[:3]}"
    return model


def load_clip_weights(clip: torch.nn.Module, weights_file: Path) -> None:
    """Load an open_clip/OpenAI CLIP state dict into ``clip``, checking every key and shape."""
    from .checkpoint import load_state_dict_checked

    state = read_torch_state_dict(weights_file)
    state = {
        k.removeprefix("clip."): v
        for k, v in state.items()
        if k not in ("input_resolution", "context_length", "vocab_size")
    }
    expected = clip.state_dict()
    if "logit_bias" not in expected:
        state.pop("logit_bias", None)
    load_state_dict_checked(clip, state, str(weights_file))


def resolve_clip_weights(config: MuseConfig, weights: str | ClipWeights) -> Path:
    """A local file for ``weights``: the file itself, or open_clip's cached/downloaded pretrained file
    of a tag."""
    weights = parse_clip_weights(weights)
    if weights is None or weights.is_random:
        raise CheckpointError("random CLIP weights have no file: build the model with clip_weights='random'")
    if weights.kind == "file":
        return Path(weights.value)
    source = weights.value
    import open_clip

    model_name = config.clip_model or config.name
    pretrained = open_clip.get_pretrained_cfg(model_name, source)
    if not pretrained:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise PretrainedWeightsError(f"open_clip has no pretrained '{source}' for {model_name}; tags: {tags}")
    cached = _cached_open_clip_file(pretrained)
    if cached is not None:
        return cached
    if not _hub_reachable():
        raise PretrainedWeightsError(_offline_message(model_name, source))
    try:
        return Path(open_clip.download_pretrained(pretrained))
    except Exception as error:
        raise PretrainedWeightsError(
            _offline_message(model_name, source) + f" (download failed: {error})"
        ) from None


def _cached_open_clip_file(pretrained: dict) -> Path | None:
    repo = (pretrained.get("hf_hub") or "").rstrip("/")
    if not repo:
        return None
    from huggingface_hub import hf_hub_download

    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        try:
            return Path(hf_hub_download(repo, filename, local_files_only=True))
        except Exception:  # not in the local cache: try the next name
            continue
    return None


def _hub_reachable(timeout: float = 3.0) -> bool:
    # A quick probe: without it, huggingface_hub retries for most of a minute before failing offline.
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline_message(model_name: str, tag: str) -> str:
    return (
        f"cannot fetch pretrained CLIP weights '{tag}' for {model_name}: no network and no cached copy. "
        f"Download open_clip's '{model_name}' / '{tag}' weights (open_clip_model.safetensors or "
        f"open_clip_pytorch_model.bin) on a connected machine and pass the local file: "
        f"load_model('{model_name}', clip_weights='/path/to/open_clip_model.safetensors') or "
        f"--clip-weights /path/to/file on the command line; clip_weights='random' builds random weights."
    )
