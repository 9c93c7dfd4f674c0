"""Model configuration as data: named architectures are JSON files in muse_infer/configs/, and any
open_clip model name resolves to one made from open_clip's own JSON config
(``muse_infer.catalog``)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import catalog
from .catalog import CLIP_MEAN, CLIP_STD
from .errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
SUPPORTED_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
AGGREGATIONS = ("scale_wise", "frame_wise", "spatial_wise")
SLICE_MODES = ("uniform", "head", "tail")
# Frame preprocessing (``preprocess``): what open_clip's pretrained configs use. CLIP4Clip's (OpenAI's
# mean and std, short side bicubic-resized then centre-cropped) is the default, None in a config.
RESIZE_MODES = ("shortest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear")
PREPROCESS_KEYS = ("mean", "std", "resize_mode", "interpolation")
# Text tokenisers (``tokenizer``): None is CLIP's BPE (open_clip's SimpleTokenizer, as CLIP4Clip);
# {"kind": "hf", ...} a Hugging Face tokenizer (SigLIP's, xlm-roberta's), loaded from local files.
TOKENIZER_CLEANS = ("whitespace", "canonicalize", "lower")


@dataclass(frozen=True)
class MuseConfig:
    """Everything needed to build a MUSE (or meanP) model, without weights.

    ``clip`` is an open_clip model config (embed_dim, vision_cfg, text_cfg, quick_gelu), so any
    open_clip ViT works. ``num_blocks == 0`` is CLIP4Clip's meanP baseline: no pyramid, no blocks.
    ``clip_pretrained`` names the CLIP weights used when no checkpoint supplies them: an open_clip
    pretrained tag (e.g. "openai") or a local file; None means random initialisation.
    ``preprocess``: the frames' mean, std, resize_mode ("shortest": short side resized, centre crop;
    "squash": resized to a square) and interpolation, as open_clip's pretrained config gives them;
    None means CLIP4Clip's (OpenAI mean/std, shortest, bicubic). ``tokenizer``: None for CLIP's BPE,
    else ``{"kind": "hf", "name": <Hugging Face repo>, "clean": ..., "strip_sep_token": ...}``.
    Both are left out of ``to_dict`` when None, so configs made before them keep their identity.
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
    preprocess: dict | None = None
    tokenizer: dict | None = None

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
    def grid_size(self) -> int | None:
        """Patches a side for an open_clip ViT (None for a timm or ResNet tower: its model knows)."""
        patch = self.clip["vision_cfg"].get("patch_size")
        return self.image_size // int(patch) if patch else None

    @property
    def frame_preprocess(self) -> dict:
        """mean, std, resize_mode, interpolation of the frames (``preprocess`` or CLIP4Clip's)."""
        return dict(DEFAULT_PREPROCESS) | dict(self.preprocess or {})

    @property
    def is_mean_pooling(self) -> bool:
        """True for the meanP baseline (no pyramid, no Mamba blocks)."""
        return self.num_blocks == 0

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for name in OMITTED_WHEN_NONE:
            if data[name] is None:
                del data[name]
        return data

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


OMITTED_WHEN_NONE = ("preprocess", "tokenizer")
DEFAULT_PREPROCESS = {
    "mean": CLIP_MEAN,
    "std": CLIP_STD,
    "resize_mode": "shortest",
    "interpolation": "bicubic",
}


def _validate(config: MuseConfig) -> None:
    if not isinstance(config.clip, dict):
        raise ConfigError("clip must be an open_clip model config (a JSON object)")
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in config.clip:
            raise ConfigError(f"clip config lacks '{key}' (expected an open_clip model config)")
    if "multimodal_cfg" in config.clip:
        raise ConfigError(f"{config.name}: open_clip's CoCa (captioning) models are not supported")
    vision = config.clip["vision_cfg"]
    if config.num_blocks > 0 and not vision.get("patch_size") and not vision.get("timm_model_name"):
        raise ConfigError(
            f"{config.name}: a MUSE head needs a ViT image tower (clip.vision_cfg with 'patch_size', or a "
            "timm ViT's 'timm_model_name'); other towers (ResNets) run as meanP baselines: use "
            f"{config.name}-meanP (or num_blocks 0 in a config file)"
        )
    _validate_preprocess(config.preprocess)
    _validate_tokenizer(config.tokenizer)
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


def _validate_preprocess(preprocess: dict | None) -> None:
    if preprocess is None:
        return
    if not isinstance(preprocess, dict) or set(preprocess) - set(PREPROCESS_KEYS):
        raise ConfigError(
            f"preprocess must be an object with keys among {PREPROCESS_KEYS}, got {preprocess!r}"
        )
    for key in ("mean", "std"):
        value = preprocess.get(key, DEFAULT_PREPROCESS[key])
        if len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
            raise ConfigError(f"preprocess.{key} must be 3 numbers (R, G, B), got {value!r}")
        if key == "std" and not all(v > 0 for v in value):
            raise ConfigError(f"preprocess.std must be positive, got {value!r}")
    if preprocess.get("resize_mode", "shortest") not in RESIZE_MODES:
        raise ConfigError(f"preprocess.resize_mode {preprocess['resize_mode']!r} not one of {RESIZE_MODES}")
    if preprocess.get("interpolation", "bicubic") not in INTERPOLATIONS:
        raise ConfigError(
            f"preprocess.interpolation {preprocess['interpolation']!r} not one of {INTERPOLATIONS}"
        )


def _validate_tokenizer(tokenizer: dict | None) -> None:
    if tokenizer is None:
        return
    if not isinstance(tokenizer, dict) or tokenizer.get("kind") != "hf" or not tokenizer.get("name"):
        raise ConfigError(
            f'tokenizer must be null (CLIP BPE) or {{"kind": "hf", "name": <Hugging Face repo>, ...}}, got {tokenizer!r}'
        )
    if tokenizer.get("clean", "whitespace") not in TOKENIZER_CLEANS:
        raise ConfigError(f"tokenizer.clean {tokenizer['clean']!r} not one of {TOKENIZER_CLEANS}")


def available_configs() -> list[str]:
    """Names of the architectures shipped in muse_infer/configs/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | os.PathLike) -> MuseConfig:
    """A named architecture ("ViT-B-32", "tiny", ...), any open_clip model name ("ViT-L-14",
    "ViT-B-16-SigLIP-meanP", ...: ``muse_infer.catalog``), or a path to a JSON config file. The shipped
    configs come first: "ViT-B-32" and "ViT-B-16" are OpenAI's QuickGELU models."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            data = catalog.config_data(str(name_or_path))
            if data is None:
                raise ConfigError(
                    f"unknown model config '{name_or_path}'; available: {available_configs()}, or any "
                    f"open_clip model name with or without -meanP ({catalog.names_hint()})"
                )
            return MuseConfig.from_dict(data, source=f"open_clip's {data['clip_model']} config")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    return MuseConfig.from_dict(data, source=str(path))
