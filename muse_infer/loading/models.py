"""``load_model``: a MUSE model from a checkpoint file, a packaged model, a config file, or a named
architecture (what each reference means: ``muse_infer.loading.reference``)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch

from ..catalog import pretrained_tags
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
    tokenizer: str | os.PathLike | None = None,
):
    """A MuseModel in eval mode.

    name_or_path: a muse-infer ``.safetensors`` checkpoint; a packaged trained model ("demo"); a JSON
    config file; or a named architecture: the shipped ones (``available_models()``: "ViT-B-32",
    "ViT-B-16", their "-meanP" baselines, "tiny") and any open_clip model name, as ``NAME`` (MUSE head)
    or ``NAME-meanP`` ("ViT-L-14", "ViT-B-16-SigLIP-meanP", ...: ``muse_infer.catalog``). For a config
    or an architecture, the CLIP weights come from ``clip_weights`` (an open_clip pretrained tag such
    as "openai", a local weights file, or "random"), else from the config's ``clip_pretrained``.
    tokenizer: the folder of the text tower's Hugging Face files, for towers whose tokenizer open_clip
    does not bundle (SigLIP's, xlm-roberta's); None: the Hugging Face cache.
    """
    ref = name_or_path if isinstance(name_or_path, ModelRef) else resolve_model(name_or_path)
    if ref.kind in ("checkpoint", "packaged"):
        return load_checkpoint(ref.path, device, tokenizer)
    if ref.kind == "export":
        raise ConfigError(
            f"'{ref.name}' is an export directory: run it with a backend (--backend onnx, torchscript or "
            "pt2; VideoEncoder(..., backend=...)), or load the checkpoint it was exported from"
        )
    config = model_config(ref, clip_weights)
    return build_model(config, clip_weights, tokenizer=tokenizer).to(device).eval()


def build_model(
    config: MuseConfig,
    clip_weights: str | os.PathLike | ClipWeights | None = None,
    seed: int = RANDOM_INIT_SEED,
    tokenizer: str | os.PathLike | None = None,
):
    """A freshly initialised (``seed``) MuseModel, with pretrained CLIP weights loaded when named
    (``clip_weights``, else the config's ``clip_pretrained``; "random" keeps the seeded ones).
    tokenizer: the text tower's Hugging Face files (see ``load_model``)."""
    from ..model import MuseModel, text_tower
    from ..model.backbone import build_clip

    weights = effective_clip_weights(config, clip_weights)  # parsed before the slow build
    text_files = None if tokenizer is None else str(tokenizer)
    pretrained = weights is not None and not weights.is_random
    weights_file = resolve_clip_weights(config, weights) if pretrained else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = None
        if pretrained:  # every CLIP weight is replaced by the file's: skip their random init (seconds)
            with _ZeroInsteadOfRandom():
                clip = build_clip(config.clip, text_files)
        model = MuseModel(config, clip=clip, text_files=text_files)
    if pretrained:
        load_clip_weights(model.backbone.clip, weights_file)
    elif text_tower.supports(config.clip):
        # Random text weights drawn by name, as the text tower alone draws them (``loading.text``): a
        # search loads only that tower and must compute the same text embeddings.
        random = text_tower.random_text_weights(config.clip, seed)
        unexpected = model.backbone.clip.load_state_dict(random, strict=False).unexpected_keys
        assert not unexpected, f"text weights not in the CLIP model: {unexpected[:3]}"
    return model


class _ZeroInsteadOfRandom(torch.overrides.TorchFunctionMode):
    """Within: the in-place random fills that weight initialisers use (normal_, uniform_, erfinv_ ...)
    write zeros instead, and draw nothing from the random generator. For towers whose every weight is
    then loaded from a file (``load_clip_weights`` checks every key): open_clip's, timm's and Hugging
    Face's initialisers of a ViT-L cost seconds of random numbers that would be thrown away. Buffers
    computed from the config (causal masks, position ids) are unaffected."""

    FILLS = frozenset(
        getattr(torch.Tensor, name)
        for name in ("normal_", "uniform_", "erfinv_", "random_", "exponential_", "log_normal_", "cauchy_")
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FILLS:
            return args[0].zero_()
        return func(*args, **(kwargs or {}))


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
    model_name = config.clip_model or config.name
    # The usual case, weights downloaded before: found from the shipped copy of open_clip's table and
    # the Hugging Face cache, without importing open_clip (seconds: docs/benchmarks.md, "Model start-up").
    shipped = pretrained_tags(model_name).get(source)
    cached = _cached_open_clip_file(shipped) if shipped else None
    if cached is not None:
        return cached
    import open_clip

    pretrained = open_clip.get_pretrained_cfg(model_name, source)
    if not pretrained:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise PretrainedWeightsError(f"open_clip has no pretrained '{source}' for {model_name}; tags: {tags}")
    cached = _cached_open_clip_file(pretrained)
    if cached is not None:
        return cached
    if not _hub_reachable():
        raise PretrainedWeightsError(_offline_message(model_name, source, pretrained))
    try:
        return Path(open_clip.download_pretrained(pretrained))
    except Exception as error:
        raise PretrainedWeightsError(
            _offline_message(model_name, source, pretrained) + f" (download failed: {error})"
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


def _offline_message(model_name: str, tag: str, pretrained: dict | None = None) -> str:
    return (
        f"cannot fetch pretrained CLIP weights '{tag}' for {model_name}: no network and no cached copy. "
        f"{weights_source(model_name, tag, pretrained)} on a connected machine and pass the local file: "
        f"load_model('{model_name}', clip_weights='/path/to/file') or --clip-weights /path/to/file on the "
        "command line (or put it in the Hugging Face cache); clip_weights='random' builds random weights."
    )


def weights_source(model_name: str, tag: str, pretrained: dict | None = None) -> str:
    """Which file to download for open_clip's ``tag`` weights of ``model_name``, in words."""
    pretrained = pretrained or {}
    repo = (pretrained.get("hf_hub") or "").rstrip("/")
    if repo:
        return f"Download open_clip_model.safetensors (or open_clip_pytorch_model.bin) from https://huggingface.co/{repo}"
    if pretrained.get("url"):
        return f"Download {pretrained['url']}"
    return f"Download open_clip's '{model_name}' / '{tag}' weights (open_clip_model.safetensors)"
