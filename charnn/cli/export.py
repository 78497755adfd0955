"""`charnn export`: a trained model as a web page or as ml5.js charRNN's folder."""

from __future__ import annotations

from pathlib import Path

import click

from charnn.cli.common import CONTEXT, checkpoint_options, load_model
from charnn.export.formats import FORMATS


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@checkpoint_options
@click.option(
    "--format",
    "export_format",
    type=click.Choice(FORMATS),
    default="html",
    help="html: one page that generates in the browser; ml5: the folder ml5.js charRNN loads; "
    "hf: a folder for the Hugging Face Hub (safetensors, config.json, a model card); onnx: one "
    "step of the model for ONNX runtimes (the onnx extra).",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="The file to write (html, onnx: a folder gets MODEL.html or MODEL.onnx), or the folder "
    "(ml5, hf).",
)
def export(
    checkpoint: Path | None, checkpoint_dir: Path, cell: str | None, export_format: str, out: Path
) -> None:
    """Export CHECKPOINT (a .pt file, a run folder or a shared model's folder) for use outside
    charnn.

    Without CHECKPOINT, the best checkpoint of the newest run under --checkpoint-dir.
    Prints the path written on stdout.
    """
    from charnn.export.formats import export as write

    loaded = load_model(checkpoint, checkpoint_dir, cell)
    try:
        written = write(loaded, out, export_format)
    except OSError as err:
        raise click.ClickException(f"cannot write {out}: {err.strerror or err}") from None
    size = sum(p.stat().st_size for p in ([written] if written.is_file() else written.iterdir()))
    click.echo(f"wrote {written} ({size / 1e6:.2f} MB)", err=True)
    click.echo(str(written))
