"""`charnn serve`: an HTTP server for a trained model; logs on stderr, nothing on stdout."""

from __future__ import annotations

from pathlib import Path

import click

from charnn.cli.common import CONTEXT, checkpoint_options, load_model


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@checkpoint_options
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, help="Port; 0 picks a free one."
)
@click.option(
    "--api-key",
    envvar="CHARNN_API_KEY",
    default=None,
    help="Every request must send this in its x-api-key header [env: CHARNN_API_KEY].",
)
@click.option(
    "--max-length",
    type=click.IntRange(min=1),
    default=2000,
    help="Most characters one sample may ask for.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=64,
    help="Most samples generated together; later requests wait their turn.",
)
@click.option(
    "--cors-origin",
    multiple=True,
    metavar="ORIGIN",
    help="A web page origin allowed to call the API from a browser (repeatable; * for any).",
)
@click.option("--no-access-log", is_flag=True, help="Do not log each request on stderr.")
def serve(
    checkpoint: Path | None,
    checkpoint_dir: Path,
    cell: str | None,
    host: str,
    port: int,
    api_key: str | None,
    max_length: int,
    max_batch: int,
    cors_origin: tuple[str, ...],
    no_access_log: bool,
) -> None:
    """Serve CHECKPOINT over HTTP: torch-rnn-server's /generate (for rnn-writer), /v1/sample,
    and a page to try it at /ui.

    Without CHECKPOINT, the best checkpoint of the newest run under --checkpoint-dir.
    Ctrl-C stops it.
    """
    from charnn.serve import server as serving

    serving.check_installed()
    from charnn.serve.app import ServeSettings

    loaded = load_model(checkpoint, checkpoint_dir, cell)
    settings = ServeSettings(
        max_length=max_length,
        api_key=api_key or None,
        cors_origins=cors_origin,
        max_rows=max_batch,
    )
    if not serving.is_loopback(host) and not api_key:
        click.echo(
            f"warning: listening on {host} without --api-key: anyone who can reach it can use it",
            err=True,
        )

    def ready(url: str) -> None:
        click.echo(f"charnn serve: {loaded.path} on {url} (Ctrl-C stops); try it at {url}/ui",
                   err=True)  # fmt: skip

    serving.serve(loaded, settings, host, port, access_log=not no_access_log, on_ready=ready)
