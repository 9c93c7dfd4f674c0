"""The `muse-infer` command line: each command is a thin wrapper over an SDK call.

One module a command (or a pair of related ones); ``common`` holds what they share. Commands from the
packages built on muse_infer (export/, training/) plug in through the ``muse_infer.commands``
entry-point group (see ``MuseGroup``), so muse_infer never imports them.
"""

from __future__ import annotations

import logging

import click

from ..errors import MuseError
from .common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE_OR_INPUT,
    CommandGroup,
    UserError,
    with_verbosity,
)
from .duplicates import duplicates
from .encode import encode_videos  # each command module imports only click at the top
from .evaluate import demo_command, eval_command
from .index import index_group
from .models import convert, list_models
from .search import search
from .serve import serve

__all__ = ["main", "UserError", "EXIT_OK", "EXIT_USAGE_OR_INPUT", "EXIT_SOME_FAILED", "EXIT_INTERRUPTED"]


class MuseGroup(CommandGroup):
    """The command group: every ``MuseError`` a command lets through becomes one ``Error:`` line with
    exit status 2 (``UserError``); the ``muse_infer.commands`` entry points are offered as commands,
    loaded on first use (which keeps `muse-infer --help` quick).
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MuseError as error:
            raise UserError(str(error)) from None
        except KeyboardInterrupt:  # commands with work to keep (encode-videos) handle it themselves
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)

    def _plugins(self) -> dict:
        # Imported here: importlib.metadata (and the email package under it) costs ~30 ms of every
        # command's start-up, and only a name that is not a built-in command needs it.
        from importlib.metadata import entry_points

        return {entry.name: entry for entry in entry_points(group="muse_infer.commands")}

    def list_commands(self, ctx) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx, name: str):
        command = super().get_command(ctx, name)
        if command is not None or name not in self._plugins():
            return command
        try:
            return with_verbosity(self._plugins()[name].load())
        except ImportError as error:  # a plugin whose package is absent must not break the CLI
            logging.getLogger(__name__).debug("command %s unavailable: %s", name, error)
            return None


@click.group(
    cls=MuseGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="muse-infer")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """MUSE text-video retrieval: encode videos, search them with text, convert and export models.

    \b
    Example:
      muse-infer encode-videos videos/ --out emb.npy
      muse-infer search "a cat on a sofa" --index emb.npy
      muse-infer index build emb.npy
      muse-infer duplicates --index emb.npy
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


for _command in (
    convert,
    list_models,
    encode_videos,
    search,
    duplicates,
    index_group,
    serve,
    eval_command,
    demo_command,
):
    main.add_command(with_verbosity(_command))
