"""The training loop: contrastive fine-tuning of a MuseModel, one checkpoint an epoch, exact resume.

Files in ``out_dir``:
- ``train_config.json``: the TrainConfig of the run (``--resume`` reads it back);
- ``epoch_{k}.safetensors``: the model after epoch k (``muse_infer.loading.checkpoint`` format, loadable with
  ``muse_infer.load_model``), its metadata recording epoch, step and the training config;
- ``last_optimizer.pt``: AdamW state, completed epoch and step, RNG states; tensors and plain
  containers only, read back with ``torch.load(weights_only=True)``;
- ``log.jsonl``: one line a step ({"event": "step", "epoch", "step", "loss", "lr_factor"}) and one an
  epoch ({"event": "epoch", "epoch", "step", "train_loss", "val": metrics, "checkpoint"}).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from muse_infer.atomic import atomic_path
from muse_infer.datasets import read_pairs
from muse_infer.evaluation import similarity_report
from muse_infer.loading.checkpoint import load_state_dict_checked, read_checkpoint, save_checkpoint
from muse_infer.loading.models import build_model
from muse_infer.loading.reference import model_config as model_config_of
from muse_infer.model import MuseModel
from muse_infer.progress import progress_bar
from muse_infer.runtime.devices import torch_threads
from muse_infer.runtime.spec import ModelSpec
from muse_infer.video import FrameSettings

from .config import TrainConfig, TrainConfigError
from .data import PairData, epoch_batches, steps_per_epoch
from .distributed import gather_features, init_distributed
from .frames import default_cache_dir
from .optim import build_optimizer, set_learning_rates

logger = logging.getLogger(__name__)
CONFIG_FILE, OPTIMIZER_FILE, LOG_FILE = "train_config.json", "last_optimizer.pt", "log.jsonl"
MAX_LOGIT_SCALE = math.log(100)  # CLIP4Clip clamps the learned temperature after every step


class ContrastiveModel(nn.Module):
    """The module DDP wraps: (frames, mask, tokens) -> (text (B, C), video (B, C)) embeddings."""

    def __init__(self, model: MuseModel):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor):
        return self.model.encode_text_tokens(tokens), self.model.encode_video(frames, mask)


def contrastive_loss(text: torch.Tensor, video: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy: mean of text->video and video->text CE on logit_scale.exp() * cosine.

    text, video: (N, C) L2-normalised, row i of each a matching pair.
    """
    logits = logit_scale.exp() * text.float() @ video.float().t()  # (N, N)
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def build_training_model(config: TrainConfig, seed: int, load_clip: bool = True) -> MuseModel:
    """The starting model: a checkpoint's weights, or a named/JSON architecture initialised from ``seed``
    with CLIP weights from ``clip_weights`` (tag, file or "random"). The model reference and CLIP
    weights are resolved by ``ModelSpec`` as every other command resolves them. load_clip: False when
    resuming (the epoch checkpoint's weights replace them)."""
    spec = ModelSpec.resolve(config.model, clip_weights=config.clip_weights, tokenizer=config.tokenizer)
    if spec.ref.kind in ("checkpoint", "packaged"):
        if config.model_overrides:
            raise TrainConfigError("model_overrides apply to named/JSON models, not to a checkpoint")
        model_config, state, _ = read_checkpoint(spec.ref.path)
        model = MuseModel(_with_lengths(model_config, config), text_files=spec.tokenizer)
        if load_clip:
            load_state_dict_checked(model, state, str(spec.ref.path))
        return model
    base = model_config_of(spec.ref, spec.clip_weights).replace(**config.model_overrides)
    weights = spec.clip_weights if load_clip else "random"
    return build_model(_with_lengths(base, config), weights, seed=seed, tokenizer=spec.tokenizer)


def _with_lengths(model_config, config: TrainConfig):
    """The model config with the run's frames, and its text length (None: the model's own)."""
    words = model_config.max_words if config.max_words is None else config.max_words
    return model_config.replace(max_words=words, max_frames=config.max_frames)


class Trainer:
    """One training run (fresh or resumed). ``run()`` trains the remaining epochs and returns a summary.

    progress: show the run on stderr (rank 0): its steps as plain lines, and bars while frames are
    decoded, an epoch's steps run and validation embeds (``muse_infer.progress``: a bar on a terminal,
    a line every 30 s and at the end when stderr is a file). Without it the steps go to the
    ``training.loop`` logger at INFO.
    """

    def __init__(self, config: TrainConfig, resume: bool = False, progress: bool = False):
        self.config, self.out = config, Path(config.out_dir)
        self.device = _resolve_device(config.device)
        self.dist = init_distributed(self.device.type)
        self.progress = progress and self.dist.is_main
        if config.batch_size % self.dist.world_size:
            raise TrainConfigError(
                f"batch_size {config.batch_size} must divide by {self.dist.world_size} ranks"
            )
        if self.dist.initialised and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp = config.amp == "bf16" or (config.amp == "auto" and self.device.type == "cuda")
        torch.manual_seed(config.seed + self.dist.rank)
        self._say(
            "building model %s on %s%s", config.model, self.device, " (bf16 autocast)" if self.amp else ""
        )
        self.model = build_training_model(config, config.seed, load_clip=not resume).to(self.device)
        self.wrapped = self._wrap(ContrastiveModel(self.model))
        self.optimizer = build_optimizer(self.model, config)
        self.train_data, self.val_data = self._load_data()
        self.steps_per_epoch = steps_per_epoch(len(self.train_data), config.batch_size)
        if self.steps_per_epoch == 0:
            raise TrainConfigError(
                f"batch_size {config.batch_size} exceeds the {len(self.train_data)} training examples"
            )
        self.total_steps = self.steps_per_epoch * config.epochs
        self.epoch, self.step = 0, 0
        if resume:
            self._restore()
            self._say("resuming %s after epoch %d (step %d)", self.out, self.epoch, self.step)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not self.dist.initialised:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def _load_data(self) -> tuple[PairData, PairData | None]:
        cfg, model_cfg = self.config, self.model.config
        sampling = FrameSettings(
            cfg.max_frames,
            model_cfg.framerate,
            model_cfg.slice_mode,
            model_cfg.image_size,
            **model_cfg.frame_preprocess,
        )
        cache = cfg.cache_dir or default_cache_dir()
        specs = [cfg.train_spec] + ([cfg.val_spec] if cfg.val_spec is not None else [])
        datasets = []
        for name, spec in zip(("training", "validation"), specs, strict=False):
            pairs = read_pairs(spec)
            videos = len({pair.video for pair in pairs})
            self._say(
                "%s data: %d captions of %d videos; frames cached in %s", name, len(pairs), videos, cache
            )
            if self.dist.initialised and not self.dist.is_main:
                torch.distributed.barrier()  # rank 0 decodes first; the others then find the cache full
            datasets.append(
                PairData(pairs, sampling, cache, self.model.tokenizer, cfg.decode_workers, self.progress)
            )
            if self.dist.initialised and self.dist.is_main:
                torch.distributed.barrier()
        return datasets[0], datasets[1] if len(datasets) > 1 else None

    # ---------------------------------------------------------------- training

    def run(self, until_epoch: int | None = None) -> dict:
        """Train epochs self.epoch + 1 .. config.epochs (or only up to ``until_epoch``, as if interrupted),
        on ``config.threads`` torch threads (None: as the process has them), the process's count
        restored after (a run inside a larger program leaves its threads as they were)."""
        with torch_threads(self.config.threads or None):
            return self._run(until_epoch)

    def _run(self, until_epoch: int | None) -> dict:
        last = self.config.epochs if until_epoch is None else min(until_epoch, self.config.epochs)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            _write_json(self.out / CONFIG_FILE, self.config.to_dict())
        report = None
        self._say(
            "training epochs %d-%d of %d: %d steps an epoch, batch %d, checkpoints in %s",
            self.epoch + 1, last, self.config.epochs, self.steps_per_epoch, self.config.batch_size, self.out,
        )  # fmt: skip
        for epoch in range(self.epoch + 1, last + 1):
            began = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            report = self._validate() if self.val_data is not None and self.dist.is_main else None
            self.epoch = epoch
            checkpoint = self._save(report)
            self._say(
                "epoch %d/%d: train loss %.4f%s; saved %s (%.1f s)",
                epoch, self.config.epochs, train_loss, _val_summary(report), checkpoint, time.perf_counter() - began,
            )  # fmt: skip
            self._log(
                event="epoch",
                epoch=epoch,
                step=self.step,
                train_loss=train_loss,
                val=report,
                checkpoint=checkpoint,
                seconds=round(time.perf_counter() - began, 2),
            )
        return {"out_dir": str(self.out), "epochs": self.epoch, "steps": self.step, "val": report}

    def _train_epoch(self, epoch: int) -> float:
        self.wrapped.train()
        cfg, losses = self.config, []
        batches = epoch_batches(
            len(self.train_data), cfg.batch_size, cfg.seed, epoch, self.dist.rank, self.dist.world_size
        )
        label = f"epoch {epoch}/{cfg.epochs}"
        with progress_bar(self.steps_per_epoch, label, "step", enabled=self.progress) as bar:
            for indices in batches:
                factor = set_learning_rates(
                    self.optimizer, self.step, self.total_steps, cfg.warmup_proportion
                )
                loss = self._train_step(indices)
                self.step += 1
                losses.append(loss)
                bar.update(1, loss=f"{loss:.4f}")
                self._log(event="step", epoch=epoch, step=self.step, loss=loss, lr_factor=factor)
                if self.step % cfg.log_every == 0 and self.dist.is_main:
                    logger.info("epoch %d step %d/%d loss %.4f", epoch, self.step, self.total_steps, loss)
        return sum(losses) / len(losses)

    def _train_step(self, indices: list[int]) -> float:
        batch = self.train_data.batch(indices)
        frames, mask, tokens = (t.to(self.device) for t in (batch.frames, batch.mask, batch.tokens))
        with self._autocast():
            text, video = self.wrapped(frames, mask, tokens)
        text, video = gather_features(text, self.dist), gather_features(video, self.dist)
        loss = contrastive_loss(text, video, self.model.logit_scale)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
        return float(loss.detach())

    def _autocast(self):
        if not self.amp:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    @torch.no_grad()
    def _validate(self) -> dict:
        self.model.eval()
        report = embed_and_score(
            self.model, self.val_data, self.config.val_batch_size, self.device, self._autocast, self.progress
        )
        self.model.train()
        return report

    # ---------------------------------------------------------------- files

    def _save(self, report: dict | None) -> str | None:
        if self.dist.initialised:
            torch.distributed.barrier()
        if not self.dist.is_main:
            return None
        path = self.out / f"epoch_{self.epoch}.safetensors"
        metadata = {"epoch": self.epoch, "step": self.step, "training": json.dumps(self.config.to_dict())}
        if report is not None:
            metadata["val"] = json.dumps(report)
        save_checkpoint(self.model, path, extra_metadata=metadata)
        state = {
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "world_size": self.dist.world_size,
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        with atomic_path(self.out / OPTIMIZER_FILE) as tmp:
            torch.save(state, tmp)
        return str(path)

    def _restore(self) -> None:
        state_file = self.out / OPTIMIZER_FILE
        if not state_file.is_file():
            raise TrainConfigError(f"cannot resume: {state_file} not found (no epoch has finished)")
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        if state["world_size"] != self.dist.world_size:
            raise TrainConfigError(
                f"{state_file} was written by {state['world_size']} processes; resume with the same number"
            )
        weights = self.out / f"epoch_{state['epoch']}.safetensors"
        _, tensors, _ = read_checkpoint(weights)
        load_state_dict_checked(self.model, tensors, str(weights))
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        torch.set_rng_state(state["rng_torch"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    def _say(self, message: str, *args) -> None:
        """A progress line for the person running the training (rank 0 only): on stderr with
        ``progress``, else to the logger at INFO."""
        if self.progress:
            print(message % args, file=sys.stderr, flush=True)
        elif self.dist.is_main:
            logger.info(message, *args)

    def _log(self, **record) -> None:
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / LOG_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def _val_summary(report: dict | None) -> str:
    """ ", val t2v R@1 12.0 R@5 .. MdR ..": the validation figures of an epoch, or nothing."""
    if not report:
        return ""
    t2v = report.get("t2v", {})
    figures = [f"{key} {t2v[key]:.1f}" for key in ("R@1", "R@5", "R@10", "MdR") if key in t2v]
    return ", val text->video " + " ".join(figures) if figures else ""


def embed_and_score(
    model: MuseModel, data: PairData, batch_size: int, device, autocast=nullcontext, progress: bool = False
) -> dict:
    """Validation metrics of ``model`` on ``data`` (all its captions vs its unique videos); progress:
    a "validating" bar over the videos on stderr."""
    retrieval = data.retrieval_set()
    videos = []
    with progress_bar(len(retrieval.videos), "validating", "video", enabled=progress) as bar:
        for start in range(0, len(retrieval.videos), batch_size):
            batch = retrieval.videos[start : start + batch_size]
            frames, mask = data.videos_batch(batch)
            with autocast():
                videos.append(model.encode_video(frames.to(device), mask.to(device)).float().cpu())
            bar.update(len(batch))
    texts = []
    for start in range(0, len(data.tokens), batch_size):
        with autocast():
            texts.append(
                model.encode_text_tokens(data.tokens[start : start + batch_size].to(device)).float().cpu()
            )
    return similarity_report(torch.cat(texts).numpy(), torch.cat(videos).numpy(), retrieval.caption_to_video)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError(f"device {name!r} requested but no CUDA GPU is visible")
    return device


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def train(config: TrainConfig, progress: bool = False) -> dict:
    """Train from scratch (an existing ``out_dir`` with a finished epoch is refused: use ``resume``);
    progress: show it on stderr (``Trainer``)."""
    if (Path(config.out_dir) / OPTIMIZER_FILE).exists():
        raise TrainConfigError(
            f"{config.out_dir} already holds a training run; resume it (--resume) or choose another out_dir"
        )
    return Trainer(config, progress=progress).run()


def resume(out_dir: str, progress: bool = False, **changes) -> dict:
    """Continue the run in ``out_dir`` from its last finished epoch, with the same settings; progress:
    show it on stderr (``Trainer``).

    changes: settings that do not alter the run's result (device, threads, decode_workers, cache_dir,
    log_every, val_batch_size) may be changed; anything else is refused.
    """
    config_file = Path(out_dir) / CONFIG_FILE
    if not config_file.is_file():
        raise TrainConfigError(f"cannot resume: {config_file} not found")
    saved = TrainConfig.from_dict(json.loads(config_file.read_text()), source=str(config_file))
    allowed = {"device", "threads", "decode_workers", "cache_dir", "log_every", "val_batch_size"}
    refused = sorted(k for k, v in changes.items() if v is not None and k not in allowed)
    if refused:
        raise TrainConfigError(f"--resume continues the saved run; these settings cannot change: {refused}")
    config = saved.replace(out_dir=str(out_dir), **{k: v for k, v in changes.items() if v is not None})
    trainer = Trainer(config, resume=True, progress=progress)
    if trainer.epoch >= config.epochs:
        raise TrainConfigError(
            f"nothing to resume: the run in {out_dir} finished all {config.epochs} epochs; to train further, "
            f"start a new run from its last checkpoint (--model {Path(out_dir) / f'epoch_{trainer.epoch}.safetensors'})"
        )
    return trainer.run()
