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
    flag,
    load_model,
    read_text_argument,
)
from charnn.config.sample import MAX_SEED, UNKNOWN


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
@click.option(
    "--label",
    default=None,
    metavar="LABEL|LABEL=W,...",
    help="A conditioned model's label, or a mix such as poems=0.7,letters=0.3 [default: any].",
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
    type=click.Choice(UNKNOWN),
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
    type=click.IntRange(0, MAX_SEED),
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
    if prime is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    if options["length"] == 0 and options["num_samples"] > 1 and not options["stop"]:
        raise click.UsageError("--length 0 with several samples needs a --stop string")
    loaded = load_model(checkpoint, checkpoint_dir, cell)
    text = read_text_argument(prime_file, "prime file") if prime_file is not None else (prime or "")
    config = _config(loaded, text, greedy, options)
    if interactive:
        _interactive(loaded, config)
    elif output_format == "jsonl":
        _write_jsonl(loaded, config)
    else:
        _write_text(loaded, config, "" if no_echo_prime else config.prime, _unescape(separator))


def _config(loaded: Any, prime: str, greedy: bool, options: dict[str, Any]) -> Any:
    """The SampleConfig the flags ask for; characters of the prime the model never saw are
    refused, or left out with a note (--unknown skip); an unset seed is drawn, to be recorded."""
    import random

    from charnn.checkpoints.loading import label_weights_for
    from charnn.config.sample import SampleConfig
    from charnn.generation.prime import check_prime

    label_weights_for(loaded.labels, options["label"])  # a clear error before any output
    checked = check_prime(prime, loaded.vocab, options["unknown"])
    if checked != prime:
        click.echo(
            f"note: left out of the prime: {''.join(loaded.vocab.unknown(prime))!r}", err=True
        )
    if options["seed"] is None:
        options["seed"] = random.SystemRandom().randrange(2**32)  # recorded in JSONL
    if greedy:
        options["temperature"] = 0.0
    return SampleConfig(prime=checked, stop=tuple(options.pop("stop")), **options)


def _write_jsonl(loaded: Any, config: Any) -> None:
    """One JSON object per sample, with its settings, once all are done."""
    from charnn.generation.sampler import sample_batch

    for i, generated in enumerate(sample_batch(loaded, config)):
        record = {
            "index": i,
            "text": generated,
            "prime": config.prime,
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
        if config.label is not None:
            record["label"] = config.label
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_text(loaded: Any, config: Any, echo: str, separator: str) -> None:
    """The first sample streams as it is generated; the others follow it, each after the
    separator and the prime."""
    from charnn.generation.sampler import generate

    out = sys.stdout
    out.write(echo)
    out.flush()
    later = ["" for _ in range(config.num_samples)]
    last = echo[-1:]
    for i, piece in generate(loaded, config):
        if i == 0:
            out.write(piece)
            out.flush()
            last = piece[-1]
        else:
            later[i] += piece
    for generated in later[1:]:
        chunk = separator + echo + generated
        out.write(chunk)
        last = chunk[-1:] or last
    if out.isatty() and last != "\n":
        out.write("\n")
    out.flush()


def _interactive(loaded: Any, config: Any) -> None:
    """Prime, continuation, prime, continuation... Round k samples with seed + k."""
    from dataclasses import replace

    from charnn.errors import CharnnError, SettingError
    from charnn.generation.prime import check_prime
    from charnn.generation.sampler import generate

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
            prime = check_prime(_unescape(line), loaded.vocab, config.unknown)
        except CharnnError as err:
            shown = err.render(flag) if isinstance(err, SettingError) else str(err)
            click.echo(f"Error: {shown}", err=True)
            continue
        settings = replace(config, prime=prime, num_samples=1, seed=config.seed + round_)
        for _, piece in generate(loaded, settings):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
