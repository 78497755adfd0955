"""What several commands share: context settings, finite numbers, naming settings by flag,
finding and loading a checkpoint, reading a text argument, and printing tables."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click

from charnn.config.model import CELLS
from charnn.config.train import TrainConfig

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 100}
NOT_FLAGS = {"corpus": "CORPUS", "vocab_size": "vocab_size", "model": "model", "labels": "labels"}
PIPE_WIDTH = 10_000  # a table printed into a pipe takes the width it needs, up to this


def flag(setting: str) -> str:
    """A setting as the command line names it: `hidden_size` -> `--hidden-size`."""
    return NOT_FLAGS.get(setting, "--" + setting.replace("_", "-"))


class FiniteRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf, which compare false with every bound and
    so pass it."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def checkpoint_options(func: Any) -> Any:
    func = click.option(
        "--checkpoint-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=TrainConfig.checkpoint_dir,
        help="Where to look for the newest run when no checkpoint is given.",
    )(func)
    return click.option(
        "--cell", type=click.Choice(CELLS), default=None, help="Newest run of this cell only."
    )(func)


def read_text_argument(path: str | Path, what: str = "file") -> str:
    """The text of a file named on the command line (`what` it is, for its errors); - reads
    standard input."""
    from charnn.text.reading import decode, read_text

    if str(path) == "-":
        return "".join(decode([sys.stdin.buffer.read()], "standard input"))
    return read_text(path, what=what)


def load_model(
    checkpoint: Path | None, checkpoint_dir: Path, cell: str | None, device: str = "cpu"
) -> Any:
    """The model a command works on: CHECKPOINT, or the newest run's under --checkpoint-dir."""
    from charnn.checkpoints.loading import find_checkpoint, load_checkpoint
    from charnn.nn.devices import resolve_device

    path = checkpoint if checkpoint is not None else find_checkpoint(checkpoint_dir, cell)
    return load_checkpoint(path, resolve_device(device))


def print_table(table: Any) -> None:
    """A Rich table on stdout that keeps its content: on a terminal, long cells fold within its
    width; into a pipe or a file, the table takes the full width it needs."""
    from rich.console import Console

    for column in table.columns:
        column.overflow = "fold"
    width = None if sys.stdout.isatty() else PIPE_WIDTH

    class Piped(Console):
        def on_broken_pipe(self) -> None:  # Rich exits 1 here; the CLI ends a `| head` with 0
            self.quiet = True
            raise BrokenPipeError

    Piped(width=width).print(table)
