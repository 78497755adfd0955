"""`charnn data`: the built-in corpus and checked downloads."""

from __future__ import annotations

from pathlib import Path

import click

from charnn.cli.common import CONTEXT


@click.group(context_settings=CONTEXT)
def data() -> None:
    """Corpora: a built-in one (offline) and well-known public downloads."""


@data.command("list", context_settings=CONTEXT)
def data_list() -> None:
    """Show the corpora `charnn data get` knows."""
    from charnn.text.builtin import CORPORA

    for corpus in CORPORA.values():
        where = "built-in" if corpus.url is None else f"{corpus.size:,} bytes, download"
        click.echo(f"{corpus.name:16} {where}: {corpus.description}")


@data.command("get", context_settings=CONTEXT)
@click.argument("name")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default="data")
@click.option(
    "--url", default=None, help="Download from this mirror instead (SHA-256 still checked)."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def data_get(name: str, data_dir: Path, url: str | None, quiet: bool) -> None:
    """Write corpus NAME to DATA_DIR/NAME.txt (downloading it if needed); print its path."""
    from charnn.cli.display import DownloadDisplay
    from charnn.text.builtin import get_corpus

    with DownloadDisplay(name, quiet=quiet) as display:
        path = get_corpus(name, data_dir, url=url, on_progress=display.update)
    click.echo(str(path))
