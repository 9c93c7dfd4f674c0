"""What every command shares: the user-error exception, exit statuses, option types, -v, SIGTERM."""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager

import click

from ..runtime.choices import BACKENDS, PRECISION_CHOICES

EXIT_OK, EXIT_USAGE_OR_INPUT = 0, 2
EXIT_SOME_FAILED, EXIT_INTERRUPTED = 1, 130  # encode-videos: index written without some files; Ctrl-C/SIGTERM

BACKEND_CHOICE = click.Choice(BACKENDS)
PRECISION_CHOICE = click.Choice(PRECISION_CHOICES)
PRECISION_HELP = (
    "What the model computes in; auto: bf16 on a GPU and on a CPU with native bf16 (AVX512-BF16, AMX), "
    "else fp32."
)


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


TOKENIZER_HELP = (
    "Folder of the text tower's Hugging Face tokenizer files (tokenizer.json ...), for models whose "
    "tokenizer open_clip does not bundle (SigLIP, xlm-roberta) [default: the Hugging Face cache]."
)


def tokenizer_option(command):
    """``--tokenizer DIR`` (``muse_infer.tokenizer``)."""
    return click.option("--tokenizer", default=None, type=click.Path(file_okay=False), help=TOKENIZER_HELP)(
        command
    )


def model_spec(model: str, **choices):
    """The ``ModelSpec`` of a command's model options (``--model``, ``--clip-weights``, ``--backend``,
    ``--device``, ``--precision``, ``--frames``, ``--batch-size``): resolved here, once, for the whole
    command. Checks names and files only; nothing is loaded."""
    from ..errors import MuseError
    from ..runtime.spec import ModelSpec

    try:
        return ModelSpec.resolve(model, **choices)
    except MuseError as error:
        raise UserError(f"cannot load model {model!r}: {error}") from None


def query_model_options(command):
    """The options that choose the model encoding queries (``search``, ``serve``): the index's own by
    default (``TextEncoder.for_index`` decides how the two combine)."""
    options = [
        click.option(
            "--model",
            default=None,
            help="Model to encode the queries [default: the index's]; refused if it is not the index's.",
        ),
        click.option(
            "--clip-weights",
            default=None,
            help="CLIP weights of a named/config model [default: the index's].",
        ),
        click.option(
            "--tokenizer",
            default=None,
            type=click.Path(file_okay=False),
            help=TOKENIZER_HELP.replace("the Hugging Face cache", "the index's, else the Hugging Face cache"),
        ),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto."),
        click.option(
            "--backend", type=BACKEND_CHOICE, default="torch", show_default=True, help="What runs the model."
        ),
        click.option(
            "--precision", type=PRECISION_CHOICE, default="auto", show_default=True, help=PRECISION_HELP
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def search_filter_options(command):
    """The search filters (``search``): ``--under``, ``--min-duration``/``--max-duration``,
    ``--modified-after``/``--modified-before``, ``--min-score`` (``muse_infer.index.filters``)."""
    seconds = click.FloatRange(min=0)
    options = [
        click.option(
            "--under",
            multiple=True,
            metavar="FOLDER",
            help="Only videos in this folder (relative to the indexed folder, or absolute); repeatable.",
        ),
        click.option(
            "--min-duration",
            type=seconds,
            default=None,
            metavar="SECONDS",
            help="Only videos this long or longer.",
        ),
        click.option(
            "--max-duration",
            type=seconds,
            default=None,
            metavar="SECONDS",
            help="Only videos this long or shorter.",
        ),
        click.option(
            "--modified-after",
            default=None,
            metavar="DATE",
            help="Only files modified at or after DATE (YYYY-MM-DD[THH:MM[:SS]][+HH:MM]; local time).",
        ),
        click.option(
            "--modified-before", default=None, metavar="DATE", help="Only files modified before DATE."
        ),
        click.option(
            "--min-score",
            type=float,
            default=None,
            metavar="S",
            help="Leave out results scoring below S (cosine): fewer than --top-k when few pass.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
