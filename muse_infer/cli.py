"""The `muse-infer` command line: each command is a thin wrapper over an SDK call.

Commands from the packages built on muse_infer (export/, training/) plug in through the
``muse_infer.commands`` entry-point group (see PluginGroup), so muse_infer never imports them.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import click

EXIT_OK, EXIT_USAGE_OR_INPUT = 0, 2
EXIT_SOME_FAILED, EXIT_INTERRUPTED = 1, 130  # encode-videos: index written without some files; Ctrl-C


class UserError(click.ClickException):
    """An error caused by the user's input: printed as one clear line, exit status 2."""

    exit_code = EXIT_USAGE_OR_INPUT


class PluginGroup(click.Group):
    """A click group that also offers the ``muse_infer.commands`` entry points, loaded on first use.

    Loading them lazily (not at import) keeps `muse-infer --help` quick and avoids import cycles:
    a plugin imports muse_infer.cli for UserError while this module is still initialising.
    """

    def _plugins(self) -> dict:
        return {entry.name: entry for entry in entry_points(group="muse_infer.commands")}

    def list_commands(self, ctx) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx, name: str):
        command = super().get_command(ctx, name)
        if command is not None or name not in self._plugins():
            return command
        try:
            return self._plugins()[name].load()
        except ImportError as error:  # a plugin whose package is absent must not break the CLI
            logging.getLogger(__name__).debug("command %s unavailable: %s", name, error)
            return None


@click.group(
    cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
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


BACKEND_CHOICE = click.Choice(["torch", "onnx", "torchscript", "pt2"])


@main.command("encode-videos")
@click.argument("directory", type=click.Path())
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="Index to write (.npy); EMB.json and EMB.failures.jsonl go beside it.",
)
@click.option(
    "--model",
    default="ViT-B-32",
    show_default=True,
    help="Name, checkpoint or config file (see `muse-infer models`).",
)
@click.option(
    "--clip-weights",
    default=None,
    help="CLIP weights of a named/config model: open_clip tag, local file, or 'random'.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="cpu, cuda, cuda:N, or auto (a GPU when there is one).",
)
@click.option(
    "--backend", type=BACKEND_CHOICE, default="torch", show_default=True, help="What runs the model."
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Videos a model call."
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Decoding processes [default: cores - 1, 1 to 8; 0: decode inline, no timeout].",
)
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=None,
    help="Frames sampled a video [default: the model's, 12].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds a file may take to decode before it is skipped.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Videos a saved work chunk (what a kill can lose).",
)
@click.option(
    "--overwrite", is_flag=True, help="Discard an existing index or unfinished run made with other options."
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Try again files that failed in earlier runs (else only changed ones).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def encode_videos(
    directory,
    out,
    model,
    clip_weights,
    device,
    backend,
    batch_size,
    workers,
    frames,
    timeout,
    chunk_size,
    overwrite,
    retry_failed,
    quiet,
) -> None:
    """Encode every video under DIRECTORY (recursively) into an embedding index.

    Writes OUT (N, C) float32 (one L2-normalised row a video), OUT's sidecar .json (relative paths in
    row order, model identity, settings) and .failures.jsonl (each skipped file with its reason).
    Work is saved as it goes in OUT.parts/: run the same command again after an interruption (even
    kill -9) to resume; run it on a folder with new files to add them.

    \b
    Exit status:
      0    every video encoded
      1    some files could not be read (skipped, listed in the failures file); the index has the rest
      2    usage or input error (bad folder, model, or an existing index made with other options)
      130  interrupted (finished batches are kept: run again to resume)

    \b
    Example:
      muse-infer encode-videos videos/ --out emb.npy --model ViT-B-32 --batch-size 16
      muse-infer encode-videos videos/ --out emb.npy --model tiny --frames 4 --workers 2
    """
    from .backends import BackendError
    from .encode_job import JobError, check_locations, encode_folder
    from .encoders import VideoEncoder

    try:
        check_locations(directory, out)  # before the model loads, which takes a while
        encoder = VideoEncoder(
            model, device=device, backend=backend, clip_weights=clip_weights, max_frames=frames
        )
        summary = encode_folder(
            directory,
            out,
            encoder,
            batch_size=batch_size,
            workers=workers,
            timeout=timeout,
            chunk_size=chunk_size,
            overwrite=overwrite,
            retry_failed=retry_failed,
            progress=not quiet,
        )
    except (BackendError, JobError) as error:
        raise UserError(str(error)) from None
    except KeyboardInterrupt:
        click.echo("interrupted; finished batches are saved: run the same command again to resume", err=True)
        sys.exit(EXIT_INTERRUPTED)
    click.echo(summary.line(), err=True)
    sys.exit(summary.exit_code)


@main.command("search")
@click.argument("queries", nargs=-1, required=True)
@click.option(
    "--index", "index_path", required=True, type=click.Path(), help="The index (.npy or its .json sidecar)."
)
@click.option(
    "--top-k", type=click.IntRange(min=1), default=10, show_default=True, help="Videos to list a query."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of {query, rank, path, score}, by query then rank.",
)
@click.option(
    "--model",
    default=None,
    help="Model to encode the queries [default: the index's]; refused if it is not the index's.",
)
@click.option(
    "--clip-weights", default=None, help="CLIP weights of a named/config model [default: the index's]."
)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto.")
@click.option(
    "--backend", type=BACKEND_CHOICE, default="torch", show_default=True, help="What runs the model."
)
def search(queries, index_path, top_k, as_json, model, clip_weights, device, backend) -> None:
    """Find the videos of an index that best match each text QUERY (cosine similarity).

    Several queries are encoded in one model call. Paths are relative to the folder that was encoded.

    \b
    Example:
      muse-infer search "a dog catches a frisbee" --index emb.npy --top-k 5
      muse-infer search "a cat" "a red car" --index emb.npy --json
    """
    import json

    from .backends import BackendError
    from .encoders import TextEncoder
    from .index import EmbeddingIndex, IndexFileError

    try:
        index = EmbeddingIndex.load(index_path)
        source = index.model_source
        weights = (
            clip_weights if clip_weights is not None or model is not None else source.get("clip_weights")
        )
        encoder = TextEncoder(model or source["model"], device=device, backend=backend, clip_weights=weights)
        hits = index.search_batch(list(queries), top_k, text_encoder=encoder)
    except IndexFileError as error:
        raise UserError(str(error)) from None
    except BackendError as error:
        hint = "" if model else "; if the index's model moved, pass --model with its new location"
        raise UserError(f"{error}{hint}") from None
    if as_json:
        rows = [
            {"query": q, **hit.to_dict()} for q, results in zip(queries, hits, strict=True) for hit in results
        ]
        click.echo(json.dumps(rows, indent=1))
        return
    for query, results in zip(queries, hits, strict=True):
        click.echo(f"{query}")
        for hit in results:
            click.echo(f"  {hit.rank:>3}  {hit.score:+.4f}  {hit.path}")
        if not results:
            click.echo("  (the index is empty)")


from .cli_eval import register as _register_eval_and_demo  # noqa: E402  (eval, demo)

_register_eval_and_demo(main)

if __name__ == "__main__":
    sys.exit(main())
