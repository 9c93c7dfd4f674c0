"""Training for muse-infer models: contrastive fine-tuning with the authors' recipe (imports muse_infer;
muse_infer never imports this package).

    from training import TrainConfig, train, resume
    train(TrainConfig(out_dir="runs/x", train={"layout": "jsonl", "annotations": "train.jsonl"}, model="tiny"))
"""

import importlib

__all__ = ["TrainConfig", "TrainConfigError", "load_train_config", "train", "resume"]

# Loaded on first use, so that `muse-infer --help` (which lists the `train` command from training.cli)
# does not import torch.
_LAZY = {
    "TrainConfig": "config",
    "TrainConfigError": "config",
    "load_train_config": "config",
    "train": "loop",
    "resume": "loop",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
