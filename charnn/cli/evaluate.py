"""`charnn eval`: bits per character of a model on files, as a table or JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from charnn.cli.common import CONTEXT, checkpoint_options, load_model
from charnn.config import DEVICES


@click.command("eval", context_settings=CONTEXT)
@click.argument(
    "paths",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path),
    metavar="[CHECKPOINT] FILE...",
)
@checkpoint_options
@click.option("--device", type=click.Choice(DEVICES), default="auto")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file on stdout.")
@click.option("--encoding", default="utf-8", help="Text encoding of the files.")
def evaluate(
    paths: tuple[Path, ...],
    checkpoint_dir: Path,
    cell: str | None,
    device: str,
    as_json: bool,
    encoding: str,
) -> None:
    """Bits per character of a model on each FILE, the state carried through the whole file.

    The first argument is taken as the CHECKPOINT when it is a .pt file or a run folder;
    otherwise the best checkpoint of the newest run under --checkpoint-dir is used.
    """
    from charnn.evaluator import evaluate as run_eval

    checkpoint = None
    if len(paths) > 1 and (paths[0].suffix == ".pt" or paths[0].is_dir()):
        checkpoint, paths = paths[0], paths[1:]
    loaded = load_model(checkpoint, checkpoint_dir, cell, device)
    model_device = next(loaded.model.parameters()).device
    results = [run_eval(loaded, p, encoding=encoding, device=model_device) for p in paths]
    if as_json:
        for result in results:
            sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{loaded.path}", title_justify="left")
    for column in ("file", "chars", "unknown", "nats/char", "bits/char", "perplexity"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for r in results:
        table.add_row(
            r.file,
            f"{r.chars:,}",
            f"{r.unknown:,}",
            f"{r.nats_per_char:.4f}",
            f"{r.bits_per_char:.4f}",
            f"{r.perplexity:.3f}",
        )
    Console().print(table)
    for r in results:
        if r.unknown:
            click.echo(
                f"note: {r.file}: {r.unknown} characters outside the vocabulary were left "
                f"out: {r.unknown_chars[:40]!r}",
                err=True,
            )
