"""`muse-infer train` (plugged in by entry point) and `python -m training`: a thin wrapper over
``training.train`` / ``training.resume``."""

from __future__ import annotations

import dataclasses
import json
import logging

import click

from muse_infer.cli.common import UserError
from muse_infer.datasets import LAYOUTS
from muse_infer.errors import MuseError

from .config import TrainConfig, load_train_config

# The recipe's values (TrainConfig's defaults), shown in --help.
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
RESUMABLE = ("device", "threads", "cache_dir")  # flags that do not change a resumed run's result


def _data(layout, annotations, split, videos) -> dict | None:
    if annotations is None:
        return None
    if layout is None:
        raise UserError("--layout is needed with --train/--val (one of " + ", ".join(LAYOUTS) + ")")
    return {"layout": layout, "annotations": annotations, "split": split, "videos": videos}


def _parse_sets(items: tuple[str, ...]) -> dict:
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected KEY=VALUE (VALUE in JSON, e.g. epochs=3)")
        try:
            values[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            values[key.strip()] = text  # a bare string such as device=cpu
    return values


@click.command("train")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Training settings (JSON).")
@click.option(
    "--resume", "resume_dir", type=click.Path(file_okay=False), help="Continue the run in this folder."
)
@click.option("--out-dir", help="Folder for checkpoints, optimizer state and log.jsonl.")
@click.option(
    "--model",
    help=f"Named model/config, JSON config, or .safetensors checkpoint to start from [default: {_DEFAULTS['model']}].",
)
@click.option("--clip-weights", help="CLIP weights for a named model: open_clip tag, file, or 'random'.")
@click.option(
    "--tokenizer",
    type=click.Path(file_okay=False),
    help="Folder of the text tower's Hugging Face tokenizer files (SigLIP, xlm-roberta) [default: the HF cache].",
)
@click.option("--layout", type=click.Choice(LAYOUTS), help="Layout of --train/--val.")
@click.option("--train", "train_annotations", help="Training annotations (file or folder, per --layout).")
@click.option("--train-split", default=None, help="Split of the training annotations (e.g. train).")
@click.option("--val", "val_annotations", help="Validation annotations (file or folder).")
@click.option("--val-split", default=None, help="Split of the validation annotations (e.g. test, val).")
@click.option("--videos", help="Videos folder (benchmark layouts; JSONL/CSV paths are relative to it).")
@click.option("--epochs", type=click.IntRange(min=1), help=f"Epochs [default: {_DEFAULTS['epochs']}].")
@click.option(
    "--batch-size", type=click.IntRange(min=1), help=f"Captions a step [default: {_DEFAULTS['batch_size']}]."
)
@click.option("--lr", type=float, help=f"Learning rate [default: {_DEFAULTS['lr']:g}].")
@click.option(
    "--coef-lr",
    type=float,
    help=f"CLIP lr multiplier (1 trains CLIP fully) [default: {_DEFAULTS['coef_lr']:g}].",
)
@click.option("--seed", type=int, help=f"Random seed [default: {_DEFAULTS['seed']}].")
@click.option("--device", help=f"cpu, cuda, cuda:N or auto [default: {_DEFAULTS['device']}].")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch [default: torch's].")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Folder for the decoded frames of every video, kept between runs (~1.8 MB a video at 12 frames) "
    "[default: $MUSE_FRAME_CACHE, else ~/.cache/muse-infer/frames].",
)
@click.option("--set", "sets", multiple=True, help="Any other setting, KEY=JSON (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr (the summary still goes to stdout).")
def train_command(config_file, resume_dir, sets, quiet, **flags) -> None:
    """Contrastive fine-tuning of a MUSE (or meanP) model; one checkpoint an epoch; exact resume.

    Progress goes to stderr: each step of the run as a line, and bars while frames are decoded, an
    epoch trains and validation runs (plain lines every 30 s when stderr is not a terminal). Decoded
    frames are cached in --cache-dir, so later runs skip decoding. The summary is JSON on stdout.

    \b
    Examples:
      muse-infer train --config train.json
      muse-infer train --model tiny --clip-weights random --layout jsonl \\
          --train data/train.jsonl --val data/val.jsonl --out-dir runs/tiny --epochs 2 --batch-size 16
      muse-infer train --resume runs/tiny
      muse-infer train --config train.json --cache-dir /scratch/frames 2> train.log
    """
    from .loop import resume, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        if resume_dir:
            fixed = sorted(
                f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None and k not in RESUMABLE
            )
            if fixed or config_file:
                raise UserError(
                    f"--resume continues the saved run with its own settings; {', '.join(fixed) or '--config'} "
                    "cannot change (the learning-rate schedule depends on them). To train further, start a new "
                    f"run from its last checkpoint: --model {resume_dir}/epoch_N.safetensors"
                )
            extra = {k: flags[k] for k in RESUMABLE} | _parse_sets(sets)
            summary = resume(resume_dir, progress=not quiet, **extra)
        else:
            summary = train(_build_config(config_file, flags, sets), progress=not quiet)
    except (MuseError, FileNotFoundError) as error:  # MuseError: `python -m training` has no MuseGroup
        raise UserError(str(error)) from None
    click.echo(json.dumps(summary, indent=2))


def _build_config(config_file, flags: dict, sets) -> TrainConfig:
    layout = flags.pop("layout")
    train = _data(layout, flags.pop("train_annotations"), flags.pop("train_split"), flags["videos"])
    val = _data(layout, flags.pop("val_annotations"), flags.pop("val_split"), flags.pop("videos"))
    data = (
        {k: v for k, v in flags.items() if v is not None} | {"train": train, "val": val} | _parse_sets(sets)
    )
    data = {k: v for k, v in data.items() if v is not None}
    if config_file:
        return load_train_config(config_file, **data)
    if "out_dir" not in data or "train" not in data:
        raise UserError("give --config FILE, or at least --out-dir, --layout and --train")
    return TrainConfig.from_dict(data, source="command line")
