"""Training for muse-infer models: contrastive fine-tuning with the authors' recipe (imports muse_infer;
muse_infer never imports this package).

    from training import TrainConfig, train, resume
    train(TrainConfig(out_dir="runs/x", train={"layout": "jsonl", "annotations": "train.jsonl"}, model="tiny"))
"""

from .config import TrainConfig, TrainConfigError, load_train_config
from .loop import resume, train

__all__ = ["TrainConfig", "TrainConfigError", "load_train_config", "train", "resume"]
