"""The command line: parse flags into configs, call the library, print what comes back.

Generated text and JSON go to stdout; progress, logs and errors go to stderr. Each command lives
in its own module and imports heavy modules (torch, the trainer) inside its body, so that
`charnn --help` stays instant.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from charnn import __version__
from charnn.cli.common import CONTEXT, flag
from charnn.cli.data import data
from charnn.cli.evaluate import evaluate
from charnn.cli.export import export
from charnn.cli.runs import info, list_command
from charnn.cli.sample import sample
from charnn.cli.serve import serve
from charnn.cli.train import train
from charnn.cli.viz import plot, viz
from charnn.errors import CharnnError, SettingError


class CharnnGroup(click.Group):
    """Turns a CharnnError anywhere below into one line on stderr and exit code 1, naming
    settings by their flags."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingError as err:
            raise click.ClickException(err.render(flag)) from None
        except CharnnError as err:
            raise click.ClickException(str(err)) from None
        except BrokenPipeError:
            _silence_stdout()
            ctx.exit(0)
        except KeyboardInterrupt:
            ctx.exit(130)
        except OSError as err:  # the machine's refusal (a folder not writable, a full disk)
            raise click.ClickException(_os_error(err)) from None
        except UnicodeError as err:  # text in another encoding than the one read as
            encoding = getattr(err, "encoding", "its encoding")
            reason = getattr(err, "reason", str(err))
            raise click.ClickException(
                f"cannot read a file as {encoding} ({reason}): convert it, or name a corpus's "
                "encoding with --encoding"
            ) from None


def _os_error(err: OSError) -> str:
    """One line for a file-system error: what failed, on which path, and what to check."""
    where = f": {err.filename}" if err.filename else ""
    what = err.strerror or str(err)
    return f"{what}{where} (check the path, its permissions and the free space)"


def _silence_stdout() -> None:
    """The reader of our stdout has gone (`| head`): drop further output quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


@click.group(cls=CharnnGroup, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="charnn")
def main() -> None:
    """Character-level recurrent text generation: train, sample, evaluate.

    \b
      charnn data get pydoc                 # a built-in corpus, no internet needed
      charnn train data/pydoc.txt --time-budget 2m
      charnn sample --length 500            # newest run under ./checkpoints
      charnn eval --json other.txt          # bits per character on another text
    """


for command in (train, sample, evaluate, list_command, info, viz, plot, data, serve, export):
    main.add_command(command)
