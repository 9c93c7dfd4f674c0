"""`muse-infer eval` and `muse-infer demo`: thin wrappers over ``muse_infer.evaluation`` and
``muse_infer.demo``."""

from __future__ import annotations

import json
import sys

import click

from ..datasets import LAYOUTS
from .common import PRECISION_CHOICE, PRECISION_HELP, UserError, tokenizer_option

EXIT_DEMO_MISSED = 1


@click.command("eval")
@click.option("--model", "--checkpoint", "model", help="Checkpoint, config or name (`muse-infer models`).")
@click.option(
    "--clip-weights", default=None, help="CLIP weights of a named/config model: tag, file, 'random'."
)
@tokenizer_option
@click.option("--dataset", "layout", type=click.Choice(LAYOUTS), help="Layout of --annotations.")
@click.option("--annotations", help="Annotation file (jsonl/csv) or folder (msrvtt, didemo, activitynet).")
@click.option(
    "--split", default=None, help="Split: msrvtt test|train, didemo test|val|train, activitynet val|train."
)
@click.option(
    "--videos",
    default=None,
    help="Videos folder of a benchmark; base of relative JSONL/CSV paths [default: the file's folder, or with --index the index root].",
)
@click.option("--index", "index_path", default=None, help="An encoded index (EMB.npy) to evaluate instead.")
@click.option(
    "--captions", default=None, help="With --index: JSONL or CSV of (video, caption), paths as indexed."
)
@click.option("--video-key", default="video", show_default=True, help="JSONL/CSV column of the video path.")
@click.option("--caption-key", default="caption", show_default=True, help="JSONL/CSV column of the caption.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--precision", type=PRECISION_CHOICE, default="auto", show_default=True, help=PRECISION_HELP)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Videos a model call [default: 8 on the CPU, 64 on a GPU].",
)
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Decoding processes.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_command(
    model, clip_weights, tokenizer, layout, annotations, split, videos, index_path, captions, video_key, caption_key,
    device, precision, batch_size, workers, as_json,
) -> None:  # fmt: skip
    """Text->video and video->text R@1/R@5/R@10, median and mean rank.

    \b
    Examples:
      muse-infer eval --model model.safetensors --dataset msrvtt --annotations msrvtt_data/ \\
          --split test --videos msrvtt_data/videos
      muse-infer eval --model demo --dataset jsonl --annotations synthetic/test.jsonl
      muse-infer eval --index emb.npy --captions captions.jsonl
      muse-infer eval --model demo --dataset jsonl --annotations synthetic/test.jsonl --precision bf16
    """
    from ..datasets import DataSpec
    from ..evaluation import evaluate, evaluate_index, format_report

    if index_path is not None:
        if captions is None:
            raise UserError("--index needs --captions (a JSONL or CSV of video, caption)")
        kind = "csv" if captions.lower().endswith(".csv") else "jsonl"
        spec = DataSpec(kind, captions, None, videos, video_key, caption_key)
        report = evaluate_index(
            index_path, spec, model=model, device=device, precision=precision, tokenizer=tokenizer
        )
    else:
        if model is None or layout is None or annotations is None:
            raise UserError("give --model, --dataset and --annotations (or --index and --captions)")
        spec = DataSpec(layout, annotations, split, videos, video_key, caption_key)
        report = evaluate(model, spec, batch_size, device, clip_weights, workers, precision, tokenizer)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@click.command("demo")
@click.option(
    "--model", default="demo", show_default=True, help="The model to demo (trained on synthetic data)."
)
@click.option("--seed", default=0, show_default=True, help="Which synthetic samples to generate.")
@click.option(
    "--count", type=click.IntRange(2, 7), default=6, show_default=True, help="Videos (and queries)."
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option(
    "--videos",
    "keep",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep the generated videos in this new folder (captions in captions.txt), to try encode-videos on.",
)
@click.option(
    "--sampling",
    type=click.Choice(["exact", "keyframes"]),
    default="exact",
    show_default=True,
    help="Frame sampling of the encoder (as encode-videos --sampling).",
)
def demo_command(model, seed, count, device, keep, sampling) -> None:
    """Offline demo: generate synthetic videos, encode them, search them with their captions.

    Exits 1 if any query's own video is not ranked first. Uses the packaged `demo` model, which only
    knows the synthetic world; for real videos name a real model (e.g. ViT-B-32).

    \b
    Example:
      muse-infer demo
      muse-infer demo --videos demo_videos/ --count 7
      muse-infer demo --sampling keyframes
    """
    from ..demo import format_results, run_demo, timed

    results, seconds = timed(run_demo, model, seed, count, device, keep, sampling)
    click.echo(format_results(results))
    click.echo(f"({seconds:.1f} s, model {model!r}, {sampling} sampling)")
    if not all(r.hit for r in results):
        sys.exit(EXIT_DEMO_MISSED)
