"""`charnn eval --novelty SAMPLE`: how much of a sample is new text, as a table or JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from charnn.cli.common import load_model, print_table, read_text_argument


def parse_ns(text: str) -> tuple[int, ...]:
    """'5,10,20' -> (5, 10, 20)."""
    try:
        ns = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a list of lengths like 5,10,20") from None
    if not ns or min(ns) < 1:
        raise click.BadParameter("n-gram lengths must be whole numbers of at least 1")
    return ns


def report_novelty(
    sample_path: str,
    checkpoint: Path | None,
    checkpoint_dir: Path,
    cell: str | None,
    corpus_path: Path | None,
    ns: tuple[int, ...],
    encoding: str,
    as_json: bool,
) -> None:
    """Print, for each n, the share of the sample's n-grams that the training text lacks."""
    from charnn.evaluation.novelty import novelty, training_ids
    from charnn.text.corpus import load_corpus

    sample = read_text_argument(sample_path, "sample")
    if not sample:
        raise click.UsageError(f"{sample_path} is empty: there is nothing to compare")
    if corpus_path is not None:
        if checkpoint is not None:
            raise click.UsageError("give a CHECKPOINT or --corpus, not both")
        corpus = load_corpus(corpus_path, encoding)
        ids, vocab, against = corpus.ids, corpus.vocab, str(corpus_path)
    else:
        loaded = load_model(checkpoint, checkpoint_dir, cell)
        ids, vocab = training_ids(loaded)
        against = f"the training split of {loaded.path}"
    results = novelty(sample, ids, vocab, ns)
    if as_json:
        for result in results:
            record = {"sample": sample_path, "corpus": against, **result.to_dict()}
            sys.stdout.write(json.dumps(record) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"{sample_path} against {against} ({len(ids):,} characters)",
                  title_justify="left")  # fmt: skip
    for column in ("n", "n-grams", "novel", "novel fraction"):
        table.add_column(column, justify="right")
    for r in results:
        fraction = "-" if r.fraction is None else f"{r.fraction:.4f}"
        table.add_row(str(r.n), f"{r.ngrams:,}", f"{r.novel:,}", fraction)
    print_table(table)
