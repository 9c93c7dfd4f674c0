"""What every command shares: the user-error exception, exit statuses, option types, -v, SIGTERM."""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager

import click

EXIT_OK, EXIT_USAGE_OR_INPUT = 0, 2
EXIT_SOME_FAILED, EXIT_INTERRUPTED = 1, 130  # encode-videos: index written without some files; Ctrl-C/SIGTERM

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


def _set_verbosity(ctx, param, count: int) -> int:
    if count:
        level = logging.WARNING - 10 * min(count, 2)
        root = logging.getLogger()
        root.setLevel(min(root.level, level))
    return count


VERBOSE_OPTION = click.Option(
    ["-v", "--verbose"],
    count=True,
    expose_value=False,
    callback=_set_verbosity,
    help="More logging (-v info, -vv debug).",
)


def with_verbosity(command: click.Command) -> click.Command:
    """``command`` (and, for a group, its subcommands) with the ``-v`` option, so that
    ``muse-infer encode-videos ... -v`` works as ``muse-infer -v encode-videos ...`` does."""
    if not any(getattr(p, "name", None) == "verbose" for p in command.params):
        command.params.append(VERBOSE_OPTION)
    for sub in getattr(command, "commands", {}).values():
        with_verbosity(sub)
    return command


@contextmanager
def sigterm_as_interrupt():
    """Inside: SIGTERM (what job schedulers, containers and ``kill`` send) is handled as Ctrl-C is, by
    raising KeyboardInterrupt, so finished work is saved the same way; the old handler after."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (e.g. called from a test runner's thread): leave it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class CommandGroup(click.Group):
    """A group that, called without a command, shows its help and ends with one ``Error:`` line
    (exit status 2) like every other usage error."""

    def parse_args(self, ctx, args):
        if not args and not ctx.resilient_parsing:
            click.echo(ctx.get_help())
            commands = ", ".join(self.list_commands(ctx))
            raise click.UsageError(f"no command given: add one of {commands}", ctx)
        return super().parse_args(ctx, args)
