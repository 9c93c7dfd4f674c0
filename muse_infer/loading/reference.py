"""The one place that decides what a model reference names.

A reference is what users pass as ``--model`` or ``load_model(...)``'s first argument:

- ``checkpoint``: a muse-infer ``.safetensors`` file (or any other existing non-JSON file, read as one);
- ``packaged``: the name of a trained model shipped in ``muse_infer/weights/`` (e.g. ``demo``);
- ``config``: a JSON model config file (CLIP weights come separately);
- ``named``: a named architecture shipped in ``muse_infer/configs/`` (e.g. ``ViT-B-32``, ``tiny``);
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


def available_models() -> list[str]:
    """Every name ``resolve_model`` accepts without a path: architectures and packaged trained models."""
    return sorted(set(available_configs()) | set(packaged_models()))


def describe_models() -> list[dict]:
    """What each name of ``available_models()`` is: kind, embedding size, frames, blocks, and where its
    weights come from. Reads configs and checkpoint headers only (no torch, no weights)."""
    rows = []
    for name in available_models():
        ref = resolve_model(name)
        config = model_config(ref)
        if ref.kind == "packaged":
            metadata = _safetensors_metadata(ref.path)
            weights = "packaged (trained): " + metadata.get("intended_use", "a trained checkpoint")
        else:
            weights = _clip_weights_note(config.clip_pretrained)
        rows.append(
            {
                "name": name,
                "kind": "meanP baseline" if config.is_mean_pooling else f"MUSE, {config.num_blocks} blocks",
                "embed_dim": config.embed_dim,
                "frames": config.max_frames,
                "image_size": config.image_size,
                "weights": weights,
            }
        )
    return rows


def model_config(ref: ModelRef) -> MuseConfig:
    """The architecture a (non-export) reference names, without its weights: a checkpoint's from its
    header, a config file's or a named architecture's from its JSON."""
    if ref.kind in ("checkpoint", "packaged"):
        return checkpoint_config(ref.path)
    if ref.kind == "export":
        raise ConfigError(f"'{ref.name}' is an export directory: its manifest describes it, not a config")
    return load_config(ref.path if ref.kind == "config" else ref.name)


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
    return (
        f"open_clip '{pretrained}' CLIP weights: downloaded once, or --clip-weights FILE offline; "
        "fresh MUSE blocks are the identity (zero-shot CLIP mean pooling) until a trained checkpoint is loaded"
    )


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
    if name in available_configs():
        return ModelRef("named", name)
    if path.is_dir():
        raise ConfigError(
            f"'{name}' is a folder but not an export directory (no {EXPORT_MANIFEST}); give a checkpoint "
            f"file, a config file, an export directory or a known model: {available_models()}"
        )
    raise ConfigError(
        f"'{name}' is neither a checkpoint/config file nor a known model; known: {available_models()}"
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
