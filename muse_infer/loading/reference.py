"""The one place that decides what a model reference names.

A reference is what users pass as ``--model`` or ``load_model(...)``'s first argument:

- ``checkpoint``: a muse-infer ``.safetensors`` file (or any other existing non-JSON file, read as one);
- ``packaged``: the name of a trained model shipped in ``muse_infer/weights/`` (e.g. ``demo``);
- ``config``: a JSON model config file (CLIP weights come separately);
- ``named``: a named architecture shipped in ``muse_infer/configs/`` (e.g. ``ViT-B-32``, ``tiny``);
- ``export``: a folder written by ``muse-infer export`` (it holds ``manifest.json``).

The order above is the order of precedence. ``resolve_model`` raises ``ConfigError`` listing the
known names when a reference names nothing.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..config import MuseConfig, available_configs, load_config
from ..errors import ConfigError

PACKAGED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
EXPORT_MANIFEST = "manifest.json"  # the file that makes a folder an export directory
KINDS = ("export", "checkpoint", "packaged", "config", "named")


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
        if ref.kind == "packaged":
            metadata = _safetensors_metadata(ref.path)
            config = MuseConfig.from_dict(json.loads(metadata["config"]), source=str(ref.path))
            weights = "packaged (trained): " + metadata.get("intended_use", "a trained checkpoint")
        else:
            config = load_config(name)
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
        return json.loads(handle.read(length)).get("__metadata__", {})


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


def model_source(name_or_path: str | os.PathLike, clip_weights: str | os.PathLike | None = None) -> dict:
    """How to load a model again from any working folder, as an index or an export records it:
    ``{"model": ..., "clip_weights": ...}`` with files made absolute."""
    weights = None
    if clip_weights is not None:
        weights = str(Path(clip_weights).resolve()) if Path(clip_weights).is_file() else str(clip_weights)
    return {"model": resolve_model(name_or_path).source, "clip_weights": weights}


def _is_bare_name(name: str) -> bool:
    return bool(name) and os.sep not in name and "/" not in name and name not in (".", "..")
