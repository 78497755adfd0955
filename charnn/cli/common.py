"""What several commands share: context settings and finding and loading a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from charnn.config.train import CELLS, TrainConfig

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 100}


class FiniteRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf, which compare false with every bound and
    so pass it (--temperature nan sampled newlines and wrote NaN into JSON lines)."""

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
    import sys

    from charnn.text.vocab import decode_text, read_corpus

    if str(path) == "-":
        return decode_text(sys.stdin.buffer.read(), "standard input")
    return read_corpus(path, what=what)


def load_model(
    checkpoint: Path | None, checkpoint_dir: Path, cell: str | None, device: str = "cpu"
):
    from charnn.checkpoints.format import find_checkpoint, load_checkpoint
    from charnn.nn.devices import resolve_device

    path = checkpoint if checkpoint is not None else find_checkpoint(checkpoint_dir, cell)
    return load_checkpoint(path, resolve_device(device))
