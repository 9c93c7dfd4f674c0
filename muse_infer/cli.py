"""The `muse-infer` command line: each command is a thin wrapper over an SDK call.

Commands from the packages built on muse_infer (export/, training/) plug in through the
``muse_infer.commands`` entry-point group, so muse_infer never imports them.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import click

EXIT_OK, EXIT_USAGE_OR_INPUT = 0, 2


class UserError(click.ClickException):
    """An error caused by the user's input: printed as one clear line, exit status 2."""

    exit_code = EXIT_USAGE_OR_INPUT


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="muse-infer")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """MUSE text-video retrieval: encode videos, search them with text, convert and export models.

    \b
    Example:
      muse-infer encode-videos videos/ --out emb.npy
      muse-infer search "a cat on a sofa" --index emb.npy
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command()
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
    from .checkpoint import CheckpointError, read_torch_state_dict, save_checkpoint
    from .config import ConfigError, load_config
    from .convert import convert_clip4clip

    if not out.endswith(".safetensors"):
        raise UserError(f"--out {out}: the output must end with .safetensors")
    try:
        scale_tuple = tuple(float(s) for s in scales.split(",")) if scales else None
    except ValueError:
        raise UserError(f"--scales {scales!r}: expected comma-separated numbers such as 0.5,1,2") from None
    try:
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
    except (CheckpointError, ConfigError) as error:
        raise UserError(str(error)) from None
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


@main.command("models")
def list_models() -> None:
    """List the named models (architectures and packaged trained models).

    \b
    Example:
      muse-infer models
    """
    from .loading import available_models

    for name in available_models():
        click.echo(name)


def _register_plugins() -> None:
    for entry in entry_points(group="muse_infer.commands"):
        try:
            main.add_command(entry.load(), entry.name)
        except ImportError as error:  # a plugin whose package is absent must not break the CLI
            logging.getLogger(__name__).debug("command %s unavailable: %s", entry.name, error)


_register_plugins()

if __name__ == "__main__":
    sys.exit(main())
