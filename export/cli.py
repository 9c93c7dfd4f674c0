"""`muse-infer export`: a thin wrapper over ``export.export_checkpoint`` (plugged in by entry point)."""

from __future__ import annotations

import logging

import click

from muse_infer.cli.common import UserError, tokenizer_option
from muse_infer.errors import MuseError


class VerificationFailed(click.ClickException):
    """An export whose files do not match the eager model: nothing is written, exit status 1."""

    exit_code = 1


@click.command("export")
@click.option(
    "--checkpoint",
    required=True,
    help="Model to export: a .safetensors checkpoint, a JSON config, or a name (`muse-infer models`).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Export directory to write.")
@click.option(
    "--format",
    "formats",
    default="onnx,torchscript",
    show_default=True,
    help="Comma-separated formats: onnx, torchscript, pt2 (torch.export).",
)
@click.option(
    "--clip-weights",
    default=None,
    help="CLIP weights of a named/config model: open_clip tag, file, or 'random'.",
)
@tokenizer_option
@click.option("--overwrite", is_flag=True, help="Replace an existing export directory.")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
    help="What the exported encoders compute in (inputs and outputs stay float32); bf16: torchscript, pt2.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Largest max abs error of the L2-normalised embeddings vs the fp32 eager model "
    "[default: 1e-4 for fp32, 1e-2 for bf16, 2e-3 for fp16].",
)
@click.option("--no-verify", is_flag=True, help="Skip the fresh-process comparison with the eager model.")
def export_command(
    checkpoint, out, formats, clip_weights, tokenizer, overwrite, precision, tolerance, no_verify
) -> None:
    """Export the text and video encoders to ONNX, TorchScript and/or torch.export, each checked.

    Writes OUT/manifest.json, text_encoder.onnx, video_encoder.onnx (onnx); text_encoder.pt,
    video_encoder.pt (needs the muse op library, see the manifest), video_encoder.portable.pt
    (torchscript); text_encoder.pt2, video_encoder.pt2 (pt2: torch.export programs, the video one
    needs the op library too).
    Each file is run in a fresh process on random inputs and its max abs error against the fp32 eager
    model is printed; above --tolerance the export fails and nothing is written. --precision bf16 or
    fp16 writes encoders computing in that precision (ONNX in bf16 is refused: onnxruntime's CPU
    provider cannot run it, so it could not be verified).

    \b
    Example:
      muse-infer export --checkpoint muse_msrvtt.safetensors --out exported/ --format onnx,torchscript
      muse-infer export --checkpoint muse_msrvtt.safetensors --out exported_pt2/ --format pt2
      muse-infer export --checkpoint muse_msrvtt.safetensors --out exported_bf16/ --format torchscript,pt2 --precision bf16
      muse-infer encode-videos videos/ --out emb.npy --model exported/ --backend onnx
    """
    from .modules import ExportError, ExportVerificationError
    from .package import export_checkpoint

    logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # its passes log every deduplicated constant
    try:
        result = export_checkpoint(
            checkpoint,
            out,
            formats,
            clip_weights=clip_weights,
            tokenizer=tokenizer,
            verify=not no_verify,
            overwrite=overwrite,
            tolerance=tolerance,
            precision=precision,
            log=lambda line: click.echo(line, err=True),
        )
    except ExportVerificationError as error:
        raise VerificationFailed(f"{error}; nothing was written to {out}") from None
    except ExportError as error:
        raise UserError(str(error)) from None
    except MuseError as error:  # the model could not be loaded
        raise UserError(f"--checkpoint {checkpoint}: {error}") from None
    names = sorted(p.name for p in result.directory.iterdir())
    click.echo(f"wrote {result.directory}: {', '.join(names)}")
