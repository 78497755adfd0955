"""`charnn eval`: bits per character of a model on files, as a table or JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from charnn.cli.common import CONTEXT, checkpoint_options, load_model, print_table
from charnn.config.train import DEVICES


@click.command("eval", context_settings=CONTEXT)
@click.argument(
    "paths",
    nargs=-1,
    type=click.Path(path_type=Path),
    metavar="[CHECKPOINT] [FILE...]",
)
@checkpoint_options
@click.option("--device", type=click.Choice(DEVICES), default="auto")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file on stdout.")
@click.option("--encoding", default="utf-8", help="Text encoding of the files.")
@click.option(
    "--dynamic",
    is_flag=True,
    help="Also read each FILE (or the split) with dynamic evaluation (the model keeps learning "
    "what it has scored), its step scales, size and decay set on the end of the training split.",
)
@click.option(
    "--tune-on",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Set --dynamic's step scales, size and decay on this text [default: the model's "
    "training split].",
)
@click.option(
    "--novelty",
    metavar="SAMPLE",
    default=None,
    help="Instead: the share of SAMPLE's n-character substrings found nowhere in the model's "
    "training split (or --corpus); - reads standard input.",
)
@click.option(
    "--corpus",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="--novelty compares with this text instead (no checkpoint needed).",
)
@click.option("--n", "ns", default="5,10,20,30,40,50", help="--novelty's n-gram lengths.")
@click.option(
    "--label",
    default=None,
    help="A conditioned model reads each FILE in this label [default: any; the validation "
    "split: each character in its own].",
)
@click.option(
    "--by-label",
    is_flag=True,
    help="Instead: a conditioned model's validation text of each label, read in its own label, "
    "in any, and in each other label.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def evaluate(
    paths: tuple[Path, ...],
    checkpoint_dir: Path,
    cell: str | None,
    device: str,
    as_json: bool,
    encoding: str,
    dynamic: bool,
    tune_on: Path | None,
    novelty: str | None,
    corpus: Path | None,
    ns: str,
    label: str | None,
    by_label: bool,
    quiet: bool,
) -> None:
    """Bits per character of a model on each FILE, the state carried through the whole file;
    with no FILE, on the model's whole validation split (the text its training held out).

    The first argument is taken as the CHECKPOINT when it is a .pt file or a run folder;
    otherwise the best checkpoint of the newest run under --checkpoint-dir is used.
    With --novelty SAMPLE, the only argument is the CHECKPOINT, if any.
    """
    if novelty is not None:
        from charnn.cli.novelty import parse_ns, report_novelty

        if len(paths) > 1:
            raise click.UsageError("--novelty takes at most one argument: the CHECKPOINT")
        checkpoint = paths[0] if paths else None
        report_novelty(novelty, checkpoint, checkpoint_dir, cell, corpus, parse_ns(ns),
                       encoding, as_json)  # fmt: skip
        return
    if corpus is not None:
        raise click.UsageError("--corpus goes with --novelty")
    checkpoint = None
    if paths and (paths[0].suffix == ".pt" or paths[0].is_dir()):
        checkpoint, paths = paths[0], paths[1:]
    loaded = load_model(checkpoint, checkpoint_dir, cell, device)
    if by_label:
        if paths or dynamic:
            raise click.UsageError("--by-label reads the model's validation split: no FILE")
        if label is not None:
            raise click.UsageError("--by-label reads each label's text in every label: no --label")
        _report_by_label(loaded, as_json, quiet)
        return
    files: list[Path | None] = list(paths) or [None]  # None: the model's validation split
    results = _evaluate(loaded, files, encoding, dynamic, tune_on, quiet, label)
    if as_json:
        for result, adapted in results:
            extra = {} if adapted is None else {"dynamic": adapted.to_dict()}
            sys.stdout.write(json.dumps({**result.to_dict(), **extra}) + "\n")
    else:
        _print_results(loaded, results, dynamic)


def _evaluate(
    loaded: Any,
    files: list[Path | None],
    encoding: str,
    dynamic: bool,
    tune_on: Path | None,
    quiet: bool,
    label: str | None = None,
) -> list[tuple[Any, Any]]:
    """Each file's result, and its dynamic evaluation's (None unless asked for), with a bar
    for each text read on a terminal."""
    from charnn.cli.display import ReadDisplay
    from charnn.evaluation.dynamic import evaluate_dynamic
    from charnn.evaluation.evaluator import evaluate as run_eval

    device = next(loaded.model.parameters()).device
    results = []
    with ReadDisplay(quiet) as display:
        for file in files:
            name = "the validation split" if file is None else str(file)
            result = run_eval(loaded, file, encoding=encoding, device=device,
                              on_progress=display.reading(name), label=label)  # fmt: skip
            adapted = None
            if dynamic:
                adapted = evaluate_dynamic(
                    loaded,
                    file,
                    tune_on=tune_on,
                    encoding=encoding,
                    device=device,
                    on_progress=display.reading(f"{name}, dynamically"),
                    label=label,
                )
            results.append((result, adapted))
    return results


def _report_by_label(loaded: Any, as_json: bool, quiet: bool) -> None:
    """Each label's validation text, read in its own label, in any and in the others."""
    from rich.table import Table

    from charnn.cli.display import ReadDisplay
    from charnn.evaluation.evaluator import evaluate_by_label

    device = next(loaded.model.parameters()).device
    with ReadDisplay(quiet) as display:
        scores = evaluate_by_label(loaded, device=device, on_progress=display.reading("labels"))
    if as_json:
        for score in scores:
            sys.stdout.write(json.dumps(score.to_dict(), ensure_ascii=False) + "\n")
        _note_unscored(loaded.labels, scores)
        return
    table = Table(title=f"{loaded.path}: bits/char of each label's validation text, read in",
                  title_justify="left")  # fmt: skip
    for column in ("label", "chars", "its own label", "any", "the others (mean)", *loaded.labels):
        table.add_column(column, justify="left" if column == "label" else "right")
    for s in scores:
        cells = [f"{s.others[name]:.4f}" if name in s.others else "" for name in loaded.labels]
        table.add_row(s.label, f"{s.chars:,}", f"{s.own:.4f}", f"{s.any:.4f}", f"{s.wrong:.4f}",
                      *cells)  # fmt: skip
    print_table(table)
    _note_unscored(loaded.labels, scores)


def _note_unscored(labels: tuple[str, ...], scores: list[Any]) -> None:
    """A note for each label that evaluate_by_label left out."""
    scored = {score.label for score in scores}
    for name in labels:
        if name not in scored:
            click.echo(f"note: label {name!r} has too little validation text to score (under "
                       "two characters): left out", err=True)  # fmt: skip


def _print_results(loaded: Any, results: list[tuple[Any, Any]], dynamic: bool) -> None:
    """One row per file (the dynamic columns with --dynamic), then a note for each file with
    characters the model never saw."""
    from rich.table import Table

    table = Table(title=f"{loaded.path}", title_justify="left")
    columns = ["file", "chars", "unknown", "nats/char", "bits/char", "perplexity"]
    if dynamic:
        columns += ["dynamic bits/char", "lr", "decay", "seconds"]
    for column in columns:
        table.add_column(column, justify="left" if column == "file" else "right")
    for r, adapted in results:
        name = r.file if r.split is None else f"{r.file} ({r.split} split)"
        row = [name, f"{r.chars:,}", f"{r.unknown:,}", f"{r.nats_per_char:.4f}",
               f"{r.bits_per_char:.4f}", f"{r.perplexity:.3f}"]  # fmt: skip
        if adapted is not None:
            settings = adapted.settings
            row += [f"{adapted.bits_per_char:.4f}", f"{settings.lr:g}", f"{settings.decay:g}",
                    f"{adapted.seconds:.1f} (+{adapted.tune_seconds:.1f} tuning)"]  # fmt: skip
        table.add_row(*row)
    print_table(table)
    for r, _ in results:
        if r.unknown:
            click.echo(
                f"note: {r.file}: {r.unknown} characters outside the vocabulary were left "
                f"out: {r.unknown_chars[:40]!r}",
                err=True,
            )
