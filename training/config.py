"""Training settings as data: one JSON file (or the same fields as command-line flags).

Defaults are the authors' recipe (docs/architecture.md, "Training recipe"): 5 epochs, batch 128, lr 1e-4,
CLIP weights at lr x coef_lr (1e-3), Mamba blocks at lr x 10, weight decay 0.2 except biases, LayerNorm,
A_log and D, Adam betas (0.9, 0.98), eps 1e-6, 10 % warm-up then cosine (CLIP4Clip's ``warmup_cosine``),
gradient clipping at norm 1.0, seed 42, max_words 32, max_frames 12.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from muse_infer.datasets import DataSpec
from muse_infer.errors import MuseError


class TrainConfigError(MuseError, ValueError):
    """Training settings that cannot be used; the message names the field."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (with the data files and the starting weights).

    model: a named architecture ("tiny", "ViT-B-32", ...), a JSON model config, or a muse-infer
        ``.safetensors`` checkpoint to start from.
    clip_weights: CLIP weights for a named/JSON model: an open_clip pretrained tag ("openai"), a local
        file, or "random" (random initialisation, e.g. for training from scratch); None: the config's.
    tokenizer: the folder of the text tower's Hugging Face files (SigLIP's, xlm-roberta's tokenizer;
        ``muse_infer.tokenizer``); None: the Hugging Face cache, when the model needs them.
    max_words: text tokens (None: the model's own: 32 for ViT-B-32/16 as the recipe, the tower's
        context length for open_clip names, which SigLIP's last-token pooling needs).
    model_overrides: MuseConfig fields replaced before building a named/JSON model (e.g.
        {"num_blocks": 0} for meanP, {"scales": [1.0]}); max_words/max_frames below are applied too.
    train, val: data specs {"layout", "annotations", "split", "videos", ...} (muse_infer.datasets).
    """

    out_dir: str
    train: dict
    val: dict | None = None
    model: str = "ViT-B-32"
    clip_weights: str | None = None
    tokenizer: str | None = None
    model_overrides: dict = field(default_factory=dict)
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-4
    coef_lr: float = 1e-3
    block_lr_mult: float = 10.0
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_proportion: float = 0.1
    grad_clip: float = 1.0
    seed: int = 42
    max_words: int | None = None
    max_frames: int = 12
    device: str = "auto"
    amp: str = "auto"
    val_batch_size: int = 32
    decode_workers: int | None = None
    cache_dir: str | None = None
    threads: int | None = None
    log_every: int = 10

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _validate(self)

    @property
    def train_spec(self) -> DataSpec:
        return DataSpec.from_dict(self.train, "train")

    @property
    def val_spec(self) -> DataSpec | None:
        return None if self.val is None else DataSpec.from_dict(self.val, "val")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict, source: str = "training config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainConfigError(f"{source}: unknown field(s) {unknown}; known: {sorted(known)}")
        for name in ("out_dir", "train"):
            if data.get(name) is None:
                raise TrainConfigError(f"{source}: '{name}' is required")
        return cls(**data)


def _validate(config: TrainConfig) -> None:
    positive_ints = ("epochs", "batch_size", "max_words", "max_frames", "val_batch_size", "log_every")
    for name in positive_ints:
        value = getattr(config, name)
        if name == "max_words" and value is None:
            continue  # the model's own
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TrainConfigError(f"{name} must be a positive integer, got {value!r}")
    for name in ("lr", "coef_lr", "block_lr_mult", "eps"):
        if not getattr(config, name) > 0:
            raise TrainConfigError(f"{name} must be > 0, got {getattr(config, name)!r}")
    if config.weight_decay < 0 or config.grad_clip < 0:
        raise TrainConfigError("weight_decay and grad_clip must be >= 0 (grad_clip 0 disables clipping)")
    if not 0 <= config.warmup_proportion < 1:
        raise TrainConfigError(f"warmup_proportion must lie in [0, 1), got {config.warmup_proportion}")
    if len(config.betas) != 2 or not all(0 <= b < 1 for b in config.betas):
        raise TrainConfigError(f"betas must be two numbers in [0, 1), got {config.betas}")
    if config.amp not in ("auto", "bf16", "none"):
        raise TrainConfigError(f"amp must be 'auto', 'bf16' or 'none', got {config.amp!r}")
    if not isinstance(config.model_overrides, dict):
        raise TrainConfigError("model_overrides must be an object of MuseConfig fields")
    config.train_spec  # noqa: B018  (validates the data specs' fields)
    config.val_spec  # noqa: B018


def load_train_config(path: str | os.PathLike, **overrides) -> TrainConfig:
    """A TrainConfig from a JSON file, with ``overrides`` (not None) replacing its fields."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainConfigError(f"training config not found: {path}") from None
    except json.JSONDecodeError as error:
        raise TrainConfigError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise TrainConfigError(f"{path}: expected a JSON object of training settings")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data, source=str(path))
