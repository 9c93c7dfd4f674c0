"""`muse-infer models` and `muse-infer convert`: what models there are, and the authors' checkpoints."""

from __future__ import annotations

import click

from .common import UserError


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option(
    "--all", "every_name", is_flag=True, help="Every open_clip model name, not only the recommended."
)
def list_models(as_json: bool, every_name: bool) -> None:
    """List the named models: what each is, its embedding width, parameters, frames, CPU cost per video
    (where measured), whether its MUSE head is trained, and where its weights come from.

    Any open_clip model name works as --model: NAME (a MUSE head on that backbone) or NAME-meanP (mean
    pooling); ViT-B-32 and ViT-B-16 are OpenAI's QuickGELU models. Only the packaged demo has a trained
    MUSE head; the others' fresh heads are the identity, so they give the backbone's zero-shot quality
    (docs/choosing_a_model.md). A name is also accepted wherever --model is: a checkpoint file, a JSON
    config or an export folder.

    \b
    Example:
      muse-infer models
      muse-infer models --all
      muse-infer models --json
    """
    import json

    from ..loading.reference import describe_models

    rows = describe_models(every_name)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        if row["kind"] == "not supported":
            click.echo(f"{row['name']:<{width}}  not supported as named: {row['note']}")
            continue
        click.echo(f"{row['name']:<{width}}  {_summary(row)}")
        click.echo(f"{'':<{width}}  head: {row['trained_head']}; text: {row['text']}")
        click.echo(f"{'':<{width}}  weights: {row['weights']}")


def _summary(row: dict) -> str:
    parameters = (
        f"{row['parameters'] / 1e6:.0f}M parameters" if row["parameters"] else "parameters not measured"
    )
    seconds = row["cpu_seconds_per_video"]
    cost = f"{seconds:g} CPU-s a video (1 thread, fp32)" if seconds is not None else "CPU cost not measured"
    return (
        f"{row['kind']}, {row['embed_dim']}-d embeddings, {parameters}, "
        f"{row['frames']} frames at {row['image_size']} px, {cost}"
    )


@click.command("convert")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option(
    "--from", "source_format", type=click.Choice(["clip4clip"]), default="clip4clip", show_default=True
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .safetensors file.")
@click.option(
    "--config", "base_config", default=None, help="Named config or JSON to use instead of inferring."
)
@click.option("--scales", default=None, help="Pyramid scales, comma-separated (e.g. 0.5,1,2); not inferable.")
@click.option(
    "--aggregation", type=click.Choice(["scale_wise", "frame_wise", "spatial_wise"]), default="scale_wise"
)
@click.option("--init-pyramid", is_flag=True, help="Initialise missing pyramid weights freshly (seeded).")
def convert(source, source_format, out, base_config, scales, aggregation, init_pyramid) -> None:
    """Convert the authors' CLIP4Clip/MUSE state dict (pytorch_model.bin.N) to a .safetensors checkpoint.

    \b
    Example:
      muse-infer convert --from clip4clip ckpts/pytorch_model.bin.4 --out muse_msrvtt.safetensors
    """
    from ..config import load_config
    from ..loading.checkpoint import read_torch_state_dict, save_checkpoint
    from ..loading.convert import convert_clip4clip

    if not out.endswith(".safetensors"):
        raise UserError(f"--out {out}: the output must end with .safetensors")
    try:
        scale_tuple = tuple(float(s) for s in scales.split(",")) if scales else None
    except ValueError:
        raise UserError(f"--scales {scales!r}: expected comma-separated numbers such as 0.5,1,2") from None
    base = load_config(base_config) if base_config else None
    state = read_torch_state_dict(source)
    model, report = convert_clip4clip(
        state,
        base_config=base,
        scales=scale_tuple,
        aggregation=aggregation,
        init_missing_pyramid=init_pyramid,
    )
    save_checkpoint(model, out, extra_metadata={"converted_from": source})
    config = report.config
    kind = (
        "meanP baseline"
        if config.is_mean_pooling
        else f"MUSE, {config.num_blocks} blocks, scales {config.scales}"
    )
    click.echo(f"wrote {out}: {kind}, embed dim {config.embed_dim}, {report.used_keys} tensors used")
    if report.pyramid_initialised:
        click.echo("pyramid weights were missing and are freshly initialised (seeded)")
    if report.unused_keys:
        shown = ", ".join(report.unused_keys[:10]) + (" ..." if len(report.unused_keys) > 10 else "")
        click.echo(f"{len(report.unused_keys)} keys not used by MUSE: {shown}")
