"""What every command shares: the user-error exception, exit statuses, option types."""

from __future__ import annotations

import click

EXIT_OK, EXIT_USAGE_OR_INPUT = 0, 2
EXIT_SOME_FAILED, EXIT_INTERRUPTED = 1, 130  # encode-videos: index written without some files; Ctrl-C

BACKEND_CHOICE = click.Choice(["torch", "onnx", "torchscript", "pt2"])


class UserError(click.ClickException):
    """An error caused by the user's input: printed as one ``Error:`` line, exit status 2.

    Commands raise it for their own argument checks; every ``muse_infer.errors.MuseError`` a command
    lets through is turned into one by the command group (``muse_infer.cli.MuseGroup``).
    """

    exit_code = EXIT_USAGE_OR_INPUT
