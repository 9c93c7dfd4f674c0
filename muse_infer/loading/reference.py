"""The one place that decides what a model reference names.

A reference is what users pass as ``--model`` or ``load_model(...)``'s first argument:

- ``checkpoint``: a muse-infer ``.safetensors`` file (or any other existing non-JSON file, read as one);
- ``packaged``: the name of a trained model shipped in ``muse_infer/weights/`` (e.g. ``demo``);
- ``config``: a JSON model config file (CLIP weights come separately);
- ``named``: a named architecture shipped in ``muse_infer/configs/`` (e.g. ``ViT-B-32``, ``tiny``), or
  any open_clip model name, with or without ``-meanP`` (``ViT-L-14``, ``ViT-B-16-SigLIP-meanP``:
  ``muse_infer.catalog``; the shipped names come first);
- ``export``: a folder written by ``muse-infer export`` (it holds ``manifest.json``).

The order above is the order of precedence. ``resolve_model`` raises ``ConfigError`` listing the
known names when a reference names nothing.

CLIP weights references (``--clip-weights``, ``clip_weights=``) are parsed here too, once
(``parse_clip_weights``): ``"random"``, a local weights file, or an open_clip pretrained tag.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .. import catalog
from ..config import MuseConfig, available_configs, load_config
from ..errors import CheckpointError, ConfigError

PACKAGED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
EXPORT_MANIFEST = "manifest.json"  # the file that makes a folder an export directory
KINDS = ("export", "checkpoint", "packaged", "config", "named")
CHECKPOINT_FORMAT = "muse-infer"  # the "format" of a muse-infer checkpoint's safetensors metadata


@dataclass(frozen=True)
class ModelRef:
    """What a model reference names. ``path``: the file or folder (None for a named architecture)."""

    kind: str
    name: str
    path: Path | None = None

    @property
    def source(self) -> str:
        """The reference as it loads again from any working folder: files absolute, names as they are."""
        if self.kind in ("checkpoint", "config", "export"):
            return str(self.path.resolve())
        return self.name


CLIP_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")


@dataclass(frozen=True)
class ClipWeights:
    """A parsed CLIP weights reference: ``kind`` "random", "file" (``value`` an absolute path) or "tag"
    (``value`` an open_clip pretrained tag such as "openai")."""

    kind: str
    value: str

    @property
    def is_random(self) -> bool:
        return self.kind == "random"

    def __str__(self) -> str:
        return self.value


def parse_clip_weights(value: str | os.PathLike | ClipWeights | None) -> ClipWeights | None:
    """What a CLIP weights reference names (None stays None: the model's default applies).

    A name that looks like a file (a path separator, or a weights suffix) must exist: a missing file
    is an error here, not an attempt to download a tag of that name.
    """
    if value is None or isinstance(value, ClipWeights):
        return value
    text = os.fspath(value)
    if text == "random":
        return ClipWeights("random", "random")
    if Path(text).is_file():
        return ClipWeights("file", str(Path(text).resolve()))
    if not text.strip():
        raise CheckpointError("--clip-weights is empty: give 'random', an open_clip tag or a weights file")
    if os.sep in text or "/" in text or text.endswith(CLIP_WEIGHT_SUFFIXES):
        raise CheckpointError(f"CLIP weights file not found: {text}")
    return ClipWeights("tag", text)


def packaged_models() -> list[str]:
    """Names of the trained models shipped with the package."""
    return sorted(p.stem for p in PACKAGED_WEIGHTS.glob("*.safetensors"))


def available_models(every_open_clip_name: bool = False) -> list[str]:
    """Names ``resolve_model`` accepts without a path: the shipped architectures, the packaged trained
    models and the recommended open_clip backbones (``catalog.RECOMMENDED``), each also as -meanP;
    ``every_open_clip_name``: every open_clip model too (any of them resolves either way)."""
    backbones = catalog.open_clip_names() if every_open_clip_name else list(catalog.RECOMMENDED)
    backbones = [name for name in backbones if catalog.is_open_clip_name(name)]
    open_clip_names = {n for name in backbones for n in (name, name + catalog.MEAN_POOLING_SUFFIX)}
    return sorted(set(available_configs()) | set(packaged_models())) + sorted(
        open_clip_names - set(available_configs())
    )


COSTS_TABLE = Path(__file__).resolve().parents[1] / "configs" / "backbone_costs.json"


def describe_models(every_open_clip_name: bool = False) -> list[dict]:
    """What each name of ``available_models(every_open_clip_name)`` is: kind, embedding size, frames,
    image size, parameters and CPU cost per video where measured (``configs/backbone_costs.json``,
    made by benchmarks/bench_backbones.py), whether its MUSE head is trained, and where its weights
    come from. Reads configs, tables and checkpoint headers only (no torch, no weights)."""
    costs = _measured_costs()
    rows = []
    for name in available_models(every_open_clip_name):
        ref = resolve_model(name)
        try:
            config = model_config(ref)
        except ConfigError as error:  # an open_clip name muse-infer cannot run as named (a MUSE ResNet)
            rows.append({"name": name, "kind": "not supported", "note": str(error)})
            continue
        measured = costs.get(name, {})
        rows.append(
            {
                "name": name,
                "kind": "meanP baseline" if config.is_mean_pooling else f"MUSE, {config.num_blocks} blocks",
                "embed_dim": config.embed_dim,
                "parameters": measured.get("parameters"),
                "frames": config.max_frames,
                "image_size": config.image_size,
                "cpu_seconds_per_video": measured.get("cpu_seconds_per_video"),
                "trained_head": _trained_head(ref, config),
                "text": _text_note(config),
                "weights": _weights_note(ref, config),
            }
        )
    return rows


def _measured_costs() -> dict:
    return json.loads(COSTS_TABLE.read_text())["rows"] if COSTS_TABLE.is_file() else {}


def _trained_head(ref: ModelRef, config: MuseConfig) -> str:
    if config.is_mean_pooling:
        return "no head (mean pooling)"
    if ref.kind == "packaged":
        return "trained (synthetic videos only)"
    return "untrained: the fresh head is the identity, i.e. the backbone's zero-shot mean pooling"


def _text_note(config: MuseConfig) -> str:
    if config.tokenizer is None:
        return f"CLIP BPE, {config.max_words} tokens"
    multilingual = " (multilingual)" if config.clip_model in catalog.MULTILINGUAL else ""
    return f"{config.tokenizer['name']} tokenizer{multilingual}, {config.max_words} tokens: --tokenizer DIR or the HF cache"


def _weights_note(ref: ModelRef, config: MuseConfig) -> str:
    if ref.kind == "packaged":
        return "packaged (trained): " + _safetensors_metadata(ref.path).get(
            "intended_use", "a trained checkpoint"
        )
    if config.clip_pretrained is None and config.clip_model:
        twins = [n for n in (config.clip_model + "-quickgelu",) if catalog.pretrained_tags(n)]
        hint = f" ({twins[0]} has open_clip's weights)" if twins else ""
        return f"open_clip has no weights for this architecture: random unless --clip-weights FILE{hint}"
    return _clip_weights_note(config.clip_pretrained)


def model_config(ref: ModelRef, clip_weights: str | os.PathLike | ClipWeights | None = None) -> MuseConfig:
    """The architecture a (non-export) reference names, without its weights: a checkpoint's from its
    header, a config file's or a named architecture's from its JSON (or open_clip's: ``catalog``).

    clip_weights (named and config models): an open_clip tag other than the config's own brings that
    tag's frame preprocessing (open_clip's weights differ in mean/std and resizing), and is refused
    when it was trained with the other activation (QuickGELU vs GELU), naming the model to use."""
    if ref.kind in ("checkpoint", "packaged"):
        return checkpoint_config(ref.path)
    if ref.kind == "export":
        raise ConfigError(f"'{ref.name}' is an export directory: its manifest describes it, not a config")
    config = load_config(ref.path if ref.kind == "config" else ref.name)
    return with_clip_weights(config, parse_clip_weights(clip_weights))


def with_clip_weights(config: MuseConfig, weights: ClipWeights | None) -> MuseConfig:
    """``config`` as the open_clip tag ``weights`` needs it (see ``model_config``); unchanged for no
    tag, "random", a file, the config's own tag, or a model open_clip's table does not list."""
    if weights is None or weights.kind != "tag" or weights.value == config.clip_pretrained:
        return config
    model = config.clip_model
    if not catalog.pretrained_tags(model or "").get(weights.value):
        return config  # open_clip decides (and names its tags) when the weights are fetched
    catalog.check_tag(model, bool(config.clip.get("quick_gelu", False)), weights.value)
    return config.replace(preprocess=catalog.tag_preprocess(model, weights.value))


def checkpoint_config(path: str | os.PathLike) -> MuseConfig:
    """The config in a muse-infer checkpoint's header (its weights are not read)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        metadata = _safetensors_metadata(path)
    except (OSError, ValueError, struct.error, UnicodeDecodeError, AttributeError) as error:
        raise CheckpointError(
            f"{path}: not a readable .safetensors file ({error}); is it truncated?"
        ) from None
    return config_from_metadata(metadata, path)


def config_from_metadata(metadata: dict, path: str | os.PathLike) -> MuseConfig:
    """The ``MuseConfig`` of a checkpoint's safetensors metadata; ``CheckpointError`` naming the file."""
    if metadata.get("format") != CHECKPOINT_FORMAT or "config" not in metadata:
        raise CheckpointError(
            f"{path}: no muse-infer config in its metadata. Convert other checkpoints first, e.g. "
            f"`muse-infer convert --from clip4clip {path} --out model.safetensors`"
        )
    try:
        return MuseConfig.from_dict(json.loads(metadata["config"]), source=f"{path} (metadata)")
    except (json.JSONDecodeError, ConfigError) as error:
        raise CheckpointError(f"{path}: bad config in metadata: {error}") from None


def _clip_weights_note(pretrained: str | None) -> str:
    if pretrained is None:
        return "random CLIP weights (seeded; for tests, not for search)"
    return f"open_clip '{pretrained}': downloaded once, or --clip-weights FILE offline"


def search_caution(identity: dict | None) -> str | None:
    """A caution to show beside results of an index made with this model identity
    (``muse_infer.loading.identity``), when its scores cannot mean much: random CLIP weights, or the
    packaged demo model (trained on synthetic videos only). None for real models."""
    if not identity:
        return None
    if identity.get("name") in packaged_models():
        return (
            f"this index was made with the packaged '{identity.get('name')}' model, trained only on synthetic "
            "videos of moving shapes: its scores say little about real videos (use ViT-B-32 with CLIP weights)"
        )
    config = identity.get("config") or {}
    random_clip = identity.get("clip_weights") == "random" or (
        identity.get("kind") == "named"
        and "clip_weights" not in identity
        and not config.get("clip_pretrained")
    )
    if random_clip:
        return (
            "this index was made with random CLIP weights: its scores rank nothing real (encode again with "
            "real CLIP weights, e.g. --model ViT-B-32 --clip-weights FILE, to search your videos)"
        )
    return None


def _safetensors_metadata(path: Path) -> dict:
    """The ``__metadata__`` of a .safetensors file, from its JSON header (8-byte length, then JSON)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > min(os.fstat(handle.fileno()).st_size, 100 << 20):
            raise ValueError(f"header length {length} does not fit the file")
        header = json.loads(handle.read(length))
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise ValueError("no metadata object in its header")
    return metadata


def resolve_model(name_or_path: str | os.PathLike) -> ModelRef:
    """What ``name_or_path`` names (see the module docstring), or ``ConfigError`` listing the known names."""
    name = os.fspath(name_or_path)
    path = Path(name)
    if path.is_dir() and (path / EXPORT_MANIFEST).is_file():
        return ModelRef("export", name, path)
    if path.suffix == ".safetensors" or (path.is_file() and path.suffix != ".json"):
        return ModelRef("checkpoint", name, path)
    if _is_bare_name(name) and (PACKAGED_WEIGHTS / f"{name}.safetensors").is_file():
        return ModelRef("packaged", name, PACKAGED_WEIGHTS / f"{name}.safetensors")
    if path.suffix == ".json":
        return ModelRef("config", name, path)
    if name in available_configs() or (_is_bare_name(name) and catalog.is_open_clip_name(name)):
        return ModelRef("named", name)
    if path.is_dir():
        raise ConfigError(
            f"'{name}' is a folder but not an export directory (no {EXPORT_MANIFEST}); give a checkpoint "
            f"file, a config file, an export directory or a known model: {available_models()}"
        )
    raise ConfigError(
        f"'{name}' is neither a checkpoint/config file nor a known model; known: {available_models()}, "
        f"or any open_clip model name with or without -meanP ({catalog.names_hint()})"
    )


def model_source(
    name_or_path: str | os.PathLike, clip_weights: str | os.PathLike | ClipWeights | None = None
) -> dict:
    """How to load a model again from any working folder, as an index or an export records it:
    ``{"model": ..., "clip_weights": ...}`` with files made absolute."""
    weights = parse_clip_weights(clip_weights)
    return {
        "model": resolve_model(name_or_path).source,
        "clip_weights": None if weights is None else weights.value,
    }


def _is_bare_name(name: str) -> bool:
    return bool(name) and os.sep not in name and "/" not in name and name not in (".", "..")
