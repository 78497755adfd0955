"""`charnn sample`: text (or JSONL) on stdout, streamed as it is generated."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from charnn.cli.common import (
    CONTEXT,
    FiniteRange,
    checkpoint_options,
    load_model,
    read_text_argument,
)


def _unescape(text: str) -> str:
    """Let --separator '\\n---\\n' mean what it says."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@checkpoint_options
@click.option(
    "-n",
    "--length",
    type=click.IntRange(min=0),
    default=500,
    help="Characters to generate per sample; 0 streams until stopped.",
)
@click.option(
    "-t",
    "--temperature",
    type=FiniteRange(min=0),
    default=1.0,
    help="Randomness: 0 is greedy, below 1 is safer, above 1 is wilder.",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=None,
    help="Sample only from the k most likely characters.",
)
@click.option(
    "--top-p",
    type=FiniteRange(0, 1, min_open=True),
    default=None,
    help="Sample only from the likeliest characters holding this much probability.",
)
@click.option("--greedy", is_flag=True, help="Always take the most likely character (-t 0).")
@click.option(
    "--repetition-penalty",
    type=FiniteRange(min=1),
    default=1.0,
    help="Above 1: make repeating recent text dearer with each character repeated (1: off).",
)
@click.option(
    "--beam",
    type=click.IntRange(min=1),
    default=None,
    metavar="WIDTH",
    help="Beam search: the likeliest text of --length characters, deterministic.",
)
@click.option("-p", "--prime", default=None, help="Text the model reads first.")
@click.option(
    "--prime-file",
    default=None,
    metavar="PATH",
    help="Read the prime from a file; - for standard input.",
)
@click.option("--no-echo-prime", is_flag=True, help="Do not print the prime before the sample.")
@click.option(
    "--unknown",
    type=click.Choice(["error", "skip"]),
    default="error",
    help="Prime characters the model never saw: fail, or leave them out.",
)
@click.option(
    "--stop",
    multiple=True,
    metavar="STR",
    help="End a sample where this text appears (repeatable).",
)
@click.option("--include-stop", is_flag=True, help="Keep the stop string at the sample's end.")
@click.option(
    "-N",
    "--num-samples",
    type=click.IntRange(min=1),
    default=1,
    help="Samples generated together as one batch.",
)
@click.option(
    "--separator", default="\\n\\n", help="Printed between samples (\\n and \\t understood)."
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),  # numpy's generators take no other
    default=None,
    help="Same seed, same text (on the same machine).",
)
@click.option(
    "-i",
    "--interactive",
    is_flag=True,
    help="On a terminal: type a prime, read its continuation, repeat (Ctrl-D ends).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "jsonl"]),
    default="text",
    help="jsonl: one JSON object per sample, with its settings.",
)
def sample(
    checkpoint: Path | None,
    checkpoint_dir: Path,
    cell: str | None,
    greedy: bool,
    prime: str | None,
    prime_file: str | None,
    no_echo_prime: bool,
    separator: str,
    output_format: str,
    interactive: bool,
    **options: Any,
) -> None:
    """Generate text from CHECKPOINT (a .pt file or run folder) onto stdout.

    Without CHECKPOINT, the best checkpoint of the newest run under --checkpoint-dir.
    """
    import random

    from charnn.generation.sampler import SampleConfig, generate, prepare_prime

    if prime is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    if options["length"] == 0 and options["num_samples"] > 1 and not options["stop"]:
        raise click.UsageError("--length 0 with several samples needs a --stop string")
    loaded = load_model(checkpoint, checkpoint_dir, cell)
    text = read_text_argument(prime_file, "prime file") if prime_file is not None else (prime or "")
    missing = loaded.vocab.unknown(text)
    text = prepare_prime(text, loaded, options["unknown"])  # fails early on unknown characters
    if missing:
        click.echo(f"note: left out of the prime: {''.join(missing)!r}", err=True)
    if options["seed"] is None:
        options["seed"] = random.SystemRandom().randrange(2**32)  # recorded in JSONL
    if greedy:
        options["temperature"] = 0.0
    config = SampleConfig(prime=text, stop=tuple(options.pop("stop")), **options)
    echo = "" if no_echo_prime else text
    if interactive:
        _interactive(loaded, config)
        return

    if output_format == "jsonl":
        texts = ["" for _ in range(config.num_samples)]
        for i, piece in generate(loaded, config):
            texts[i] += piece
        for i, generated in enumerate(texts):
            record = {
                "index": i,
                "text": generated,
                "prime": text,
                "checkpoint": str(loaded.path),
                "temperature": config.temperature,
                "top_k": config.top_k,
                "top_p": config.top_p,
                "seed": config.seed,
            }
            if config.repetition_penalty != 1:  # named only when used
                record["repetition_penalty"] = config.repetition_penalty
            if config.beam is not None:
                record["beam"] = config.beam
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        return

    out = sys.stdout
    out.write(echo)
    out.flush()
    later = ["" for _ in range(config.num_samples)]  # the first sample streams; others wait
    last = echo[-1:]
    for i, piece in generate(loaded, config):
        if i == 0:
            out.write(piece)
            out.flush()
            last = piece[-1]
        else:
            later[i] += piece
    for generated in later[1:]:
        chunk = _unescape(separator) + echo + generated
        out.write(chunk)
        last = chunk[-1:] or last
    if out.isatty() and last != "\n":
        out.write("\n")
    out.flush()


def _interactive(loaded: Any, config: Any) -> None:
    """Prime, continuation, prime, continuation... Round k samples with seed + k."""
    from dataclasses import replace

    from charnn.errors import CharnnError
    from charnn.generation.sampler import generate, prepare_prime

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise click.UsageError("--interactive needs a terminal; in a pipe, use --prime-file -")
    click.echo(
        f"type a prime and press Enter (\\n for a newline); {config.length} characters "
        "follow it. Ctrl-D ends.",
        err=True,
    )
    for round_ in range(2**31):
        try:
            line = click.prompt("", prompt_suffix="> ", default="", show_default=False, err=True)
        except click.Abort:  # Ctrl-D or Ctrl-C at the prompt
            click.echo(err=True)
            return
        try:
            prime = prepare_prime(_unescape(line), loaded, config.unknown)
        except CharnnError as err:
            click.echo(f"Error: {err}", err=True)
            continue
        settings = replace(config, prime=prime, num_samples=1, seed=config.seed + round_)
        for _, piece in generate(loaded, settings):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
