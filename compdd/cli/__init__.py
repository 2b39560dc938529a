"""The ``compdd`` command line: thin click commands over the library.

Each module of this package defines ``COMMANDS`` (a list of click commands); the root group adds them
all, so a new command is a new module. Errors the user can fix (bad option, missing folder, unknown
name) exit with status 2 and one clear message; failures of the run itself exit with status 1.
"""

from __future__ import annotations

import logging
import sys

import click

from compdd import __version__
from compdd.plugins import import_submodules

# Exceptions whose message tells the user what to fix; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError, FileExistsError, PermissionError, KeyError, ValueError,
)


class CompddGroup(click.Group):
    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException:
            raise
        except USER_ERRORS as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            click.secho(f"error: {msg}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=CompddGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="compdd")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Comp-DD: complexity-aware dataset distillation benchmark and toolkit.

    \b
    Examples:
      compdd list-subsets
      compdd make-sample-imagenet sample-in1k
      compdd list-methods
    """
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")


def _add_commands() -> None:
    import compdd.cli as pkg

    for mod in import_submodules(pkg):
        for cmd in getattr(mod, "COMMANDS", []):
            main.add_command(cmd)


_add_commands()
