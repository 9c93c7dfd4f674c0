"""What every command shares: the user-error exception, exit statuses, option types."""

from __future__ import annotations

import click

EXIT_OK, EXIT_USAGE_OR_INPUT = 0, 2
EXIT_SOME_FAILED, EXIT_INTERRUPTED = 1, 130  # encode-videos: index written without some files; Ctrl-C

BACKEND_CHOICE = click.Choice(["torch", "onnx", "torchscript", "pt2"])
# muse_infer.runtime.precision.PRECISION_CHOICES, spelled out: the CLI must not import the runtime.
PRECISION_CHOICE = click.Choice(["auto", "fp32", "bf16", "fp16"])
PRECISION_HELP = "What the model computes in; auto: bf16 on a GPU, fp32 on the CPU."


class UserError(click.ClickException):
    """An error caused by the user's input: printed as one ``Error:`` line, exit status 2.

    Commands raise it for their own argument checks; every ``muse_infer.errors.MuseError`` a command
    lets through is turned into one by the command group (``muse_infer.cli.MuseGroup``).
    """

    exit_code = EXIT_USAGE_OR_INPUT
