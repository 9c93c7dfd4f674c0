"""Model configuration as data: named architectures are JSON files in muse_infer/configs/."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
SUPPORTED_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
AGGREGATIONS = ("scale_wise", "frame_wise", "spatial_wise")
SLICE_MODES = ("uniform", "head", "tail")


@dataclass(frozen=True)
class MuseConfig:
    """Everything needed to build a MUSE (or meanP) model, without weights.

    ``clip`` is an open_clip model config (embed_dim, vision_cfg, text_cfg, quick_gelu), so any
    open_clip ViT works. ``num_blocks == 0`` is CLIP4Clip's meanP baseline: no pyramid, no blocks.
    ``clip_pretrained`` names the CLIP weights used when no checkpoint supplies them: an open_clip
    pretrained tag (e.g. "openai") or a local file; None means random initialisation.
    """

    name: str
    clip: dict
    clip_model: str | None = None
    clip_pretrained: str | None = None
    scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    aggregation: str = "scale_wise"
    num_blocks: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 1
    max_drop_rate: float = 0.1
    max_words: int = 32
    max_frames: int = 12
    framerate: float = 1.0
    slice_mode: str = "uniform"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        _validate(self)

    @property
    def embed_dim(self) -> int:
        return int(self.clip["embed_dim"])

    @property
    def image_size(self) -> int:
        return int(self.clip["vision_cfg"].get("image_size", 224))

    @property
    def grid_size(self) -> int:
        return self.image_size // int(self.clip["vision_cfg"]["patch_size"])

    @property
    def is_mean_pooling(self) -> bool:
        """True for the meanP baseline (no pyramid, no Mamba blocks)."""
        return self.num_blocks == 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes) -> MuseConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> MuseConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        missing = [name for name in ("name", "clip") if name not in data]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {missing}")
        return cls(**data)


def _validate(config: MuseConfig) -> None:
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in config.clip:
            raise ConfigError(f"clip config lacks '{key}' (expected an open_clip model config)")
    if "patch_size" not in config.clip["vision_cfg"]:
        raise ConfigError("clip.vision_cfg lacks 'patch_size': only open_clip ViTs are supported")
    bad = [s for s in config.scales if s not in SUPPORTED_SCALES]
    if bad:
        raise ConfigError(f"scales {bad} not supported; choose from {SUPPORTED_SCALES}")
    if list(config.scales) != sorted(set(config.scales)):
        raise ConfigError(
            f"scales must be distinct and listed coarse to fine (ascending), got {config.scales}"
        )
    if not config.scales and config.num_blocks > 0:
        raise ConfigError("a MUSE head (num_blocks > 0) needs at least one scale")
    if config.aggregation not in AGGREGATIONS:
        raise ConfigError(f"aggregation {config.aggregation!r} not one of {AGGREGATIONS}")
    if config.slice_mode not in SLICE_MODES:
        raise ConfigError(f"slice_mode {config.slice_mode!r} not one of {SLICE_MODES}")
    for name in ("num_blocks", "d_state", "d_conv", "expand", "max_words", "max_frames"):
        value = getattr(config, name)
        minimum = 0 if name == "num_blocks" else 1
        if not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if config.max_words < 3:
        raise ConfigError("max_words must leave room for the start and end tokens (>= 3)")
    context = int(config.clip["text_cfg"].get("context_length", 77))
    if config.max_words > context:
        raise ConfigError(f"max_words {config.max_words} exceeds the text context length {context}")


def available_configs() -> list[str]:
    """Names of the architectures shipped in muse_infer/configs/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | os.PathLike) -> MuseConfig:
    """A named architecture ("ViT-B-32", "tiny", ...) or a path to a JSON config file."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ConfigError(f"unknown model config '{name_or_path}'; available: {available_configs()}")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    return MuseConfig.from_dict(data, source=str(path))
