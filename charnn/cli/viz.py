"""`charnn viz` (what units and gates do, in the terminal or an HTML page) and `charnn plot`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from charnn.cli.common import (
    CONTEXT,
    checkpoint_options,
    load_model,
    print_table,
    read_text_argument,
)

WHATS = ("hidden", "cell", "forget", "input", "output", "update", "reset", "mogrify")


@click.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path), metavar="[CHECKPOINT] [FILE]")
@checkpoint_options
@click.option("--text", default=None, help="Look at this text instead of a FILE.")
@click.option("--layer", type=click.IntRange(min=0), default=None, help="Layer (0 is the first).")
@click.option("--unit", type=click.IntRange(min=0), default=None, help="Unit within the layer.")
@click.option(
    "--what",
    type=click.Choice(WHATS),
    default=None,
    help="What to show: the state (hidden; cell for LSTMs) or a gate (mogrify: what the "
    "mogrifier's rounds multiply h by). Default: cell or hidden.",
)
@click.option(
    "--find",
    default=None,
    metavar="quotes|line-position|brackets|REGEX",
    help="Rank units by correlation with this feature of the text; shows the best one.",
)
@click.option("--top", type=click.IntRange(min=1), default=10, help="Units listed by --find.")
@click.option("--saturation", is_flag=True, help="How often each gate is shut or open.")
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Write an HTML page.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option(
    "--label",
    default=None,
    help="A conditioned model reads the text in this label, or a mix such as "
    "poems=0.7,letters=0.3 [default: any].",
)
@click.option(
    "--max-chars",
    type=click.IntRange(min=1),
    default=20_000,
    help="Read at most this many characters of the text.",
)
def viz(
    paths: tuple[Path, ...],
    checkpoint_dir: Path,
    cell: str | None,
    text: str | None,
    layer: int | None,
    unit: int | None,
    what: str | None,
    find: str | None,
    top: int,
    saturation: bool,
    html_path: Path | None,
    as_json: bool,
    label: str | None,
    max_chars: int,
) -> None:
    """Colour each character of a text by what one unit of the model does there.

    \b
      charnn viz data/pydoc.txt --find quotes          # which unit follows quotes?
      charnn viz --text 'print("hi")' --layer 1 --unit 7 --what forget
      charnn viz data/pydoc.txt --saturation --html gates.html

    Without CHECKPOINT, the newest run under --checkpoint-dir. FILE may be - for stdin.
    """
    from charnn.fileio import atomic_write
    from charnn.inspect.trace import trace
    from charnn.inspect.viz import render_html, to_json
    from charnn.inspect.viz import saturation as gate_saturation

    checkpoint, source = _split_paths(paths, text is not None)
    loaded = load_model(checkpoint, checkpoint_dir, cell)
    text = _text_to_read(read_text_argument(source) if source is not None else text, max_chars)
    traced = trace(loaded, text, label)
    ranking, (what, layer, unit) = _unit_to_show(traced, find, top, what, layer, unit)
    saturations = gate_saturation(traced) if saturation else None
    if saturation and not saturations:
        raise click.ClickException(f"a {traced.cell} cell has no gates to measure")

    if html_path is not None:
        page = render_html(traced, what, layer, unit, f"{loaded.path}", ranking, saturations)
        atomic_write(html_path, lambda handle: handle.write(page.encode("utf-8")))
        click.echo(f"wrote {html_path}", err=True)
    if as_json:
        found = to_json(traced, what, layer, unit, ranking, saturations)
        sys.stdout.write(json.dumps({"checkpoint": str(loaded.path), **found}) + "\n")
        return
    _print_tables(ranking, saturations)
    if html_path is None or sys.stdout.isatty():  # the page already shows the coloured text
        _print_text(traced, what, layer, unit)


def _text_to_read(text: str | None, max_chars: int) -> str:
    assert text is not None
    if len(text) > max_chars:
        click.echo(f"note: reading the first {max_chars:,} of {len(text):,} characters", err=True)
    return text[:max_chars]


def _unit_to_show(
    traced: Any, find: str | None, top: int, what: str | None, layer: int | None, unit: int | None
) -> tuple[Any, tuple[str, int, int]]:
    """The ranking of units by --find (None without it), and the unit to show: the one asked
    for, else the one that follows the feature best, else the last layer's first."""
    from charnn.inspect.viz import feature, rank_units

    asked = what
    what = what or ("cell" if "cell" in traced.values else "hidden")
    traced.unit(what, 0, 0)  # a clear error now if this cell has no such gate
    ranking = None
    if find is not None:  # search what was asked for, else every state and gate
        whats = None if asked is None else (asked,)
        layers = None if layer is None else (layer,)
        ranking = rank_units(traced, feature(traced.text, find), whats, layers)[:top]
        if unit is None:
            what, layer, unit = ranking[0].what, ranking[0].layer, ranking[0].unit
    layer = traced.layers - 1 if layer is None else layer
    unit = 0 if unit is None else unit
    traced.unit(what, layer, unit)
    return ranking, (what, layer, unit)


def _split_paths(paths: tuple[Path, ...], has_text: bool) -> tuple[Path | None, Path | None]:
    """[CHECKPOINT] [FILE]: with --text, a lone path is the checkpoint; else it is the file."""
    if len(paths) > 2 or (has_text and len(paths) > 1):
        raise click.UsageError("give at most a CHECKPOINT and one FILE (or --text)")
    if has_text:
        return (paths[0] if paths else None), None
    if not paths:
        raise click.UsageError("give a FILE to look at, or --text")
    return (paths[0] if len(paths) == 2 else None), paths[-1]


def _print_tables(ranking, saturations) -> None:
    from rich.table import Table

    if ranking:
        table = Table(title="units that follow the feature", title_justify="left")
        for column in ("layer", "what", "unit", "correlation"):
            table.add_column(column, justify="right")
        for s in ranking:
            table.add_row(str(s.layer), s.what, str(s.unit), f"{s.score:+.3f}")
        print_table(table)
    if saturations:
        table = Table(title="gate saturation", title_justify="left")
        for column in ("layer", "gate", "left (< 0.1)", "right (> 0.9)"):
            table.add_column(column, justify="right")
        for s in saturations:
            table.add_row(str(s.layer), s.gate, f"{s.left:.3f}", f"{s.right:.3f}")
        print_table(table)


def _print_text(traced, what: str, layer: int, unit: int) -> None:
    from rich.console import Console
    from rich.text import Text

    from charnn.inspect.viz import colour_scale, rgb

    values = colour_scale(traced.unit(what, layer, unit), what)
    shown = Text()
    for char, value in zip(traced.text, values, strict=True):
        r, g, b = rgb(float(value))
        shown.append(char, style=f"black on rgb({r},{g},{b})")
    console = Console()
    console.print(f"layer {layer}, unit {unit}, {what} (red high, blue low):", highlight=False)
    console.print(shown, soft_wrap=True)


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG to write. Default: RUN_DIR/curves.png.",
)
def plot(run_dir: Path, out: Path | None) -> None:
    """Train and validation bits/char against step and time, as a PNG (needs matplotlib)."""
    from charnn.inspect.plot import plot_curves

    written = plot_curves(run_dir, out or run_dir / "curves.png")
    click.echo(f"wrote {written}", err=True)
