"""The command line: parse flags into configs, call the library, print what comes back.

Generated text and JSON go to stdout; progress, logs and errors go to stderr. Heavy modules
(torch, the trainer) are imported inside the commands so that `charnn --help` stays instant.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from charnn import __version__
from charnn.config import CELLS, DEVICES, ModelConfig, TrainConfig, parse_duration, read_config_file
from charnn.errors import CharnnError

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 100}
EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}


class CharnnGroup(click.Group):
    """Turns a CharnnError anywhere below into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CharnnError as err:
            raise click.ClickException(str(err)) from None
        except BrokenPipeError:
            _silence_stdout()
            ctx.exit(0)
        except KeyboardInterrupt:
            ctx.exit(130)


def _silence_stdout() -> None:
    """The reader of our stdout has gone (`| head`): drop further output quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


@click.group(cls=CharnnGroup, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="charnn")
def main() -> None:
    """Character-level recurrent text generation: train, sample, evaluate.

    \b
      charnn data get pydoc                 # a built-in corpus, no internet needed
      charnn train data/pydoc.txt --time-budget 2m
      charnn sample --length 500            # newest run under ./checkpoints
      charnn eval --json other.txt          # bits per character on another text
    """


# ---------------------------------------------------------------- train


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except CharnnError as err:
        raise click.BadParameter(str(err)) from None


def _apply_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--config run.toml: its options become defaults, so flags and CHARNN_* still override."""
    if value is None:
        return
    try:
        options = read_config_file(value)
    except CharnnError as err:
        raise click.BadParameter(str(err)) from None
    known = {p.name for p in ctx.command.params} - {"config", "help"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise click.BadParameter(
            f"{value}: unknown option(s) {', '.join(unknown)}; `charnn train --help` lists them"
        )
    ctx.default_map = {**(ctx.default_map or {}), **options}


@main.command(context_settings=CONTEXT)
@click.argument("corpus", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    callback=_apply_config_file,
    is_eager=True,
    expose_value=False,
    help="Read options from this TOML file (`hidden-size = 512`); flags override it.",
)
@click.option("--cell", type=click.Choice(CELLS), default=ModelConfig.cell, help="Recurrent cell.")
@click.option("--layers", type=click.IntRange(min=1), default=ModelConfig.layers)
@click.option("--hidden-size", type=click.IntRange(min=1), default=ModelConfig.hidden_size)
@click.option("--embed-size", type=click.IntRange(min=1), default=ModelConfig.embed_size)
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=ModelConfig.dropout)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=TrainConfig.lr,
    help="Peak learning rate (AdamW), warmed up then cosine-decayed.",
)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=TrainConfig.weight_decay)
@click.option(
    "--clip",
    type=click.FloatRange(min=0),
    default=TrainConfig.clip,
    help="Clip the global gradient norm to this; 0 disables.",
)
@click.option(
    "--seq-len",
    type=click.IntRange(min=1),
    default=TrainConfig.seq_len,
    help="Characters per window of truncated BPTT.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=TrainConfig.batch_size,
    help="Contiguous streams trained in parallel.",
)
@click.option(
    "--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps."
)
@click.option(
    "--epochs",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many passes over the data (10 if no limit is given).",
)
@click.option(
    "--time-budget",
    callback=_duration,
    default=None,
    metavar="DURATION",
    help="Train for this wall-clock time (90s, 5m, 1h); the schedule fits it.",
)
@click.option(
    "--val-frac",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=TrainConfig.val_frac,
    help="Last fraction of the text kept for validation.",
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=1),
    default=TrainConfig.eval_every,
    help="Steps between evaluations (and checkpoints); also at the end.",
)
@click.option("--seed", type=int, default=TrainConfig.seed)
@click.option("--device", type=click.Choice(DEVICES), default=TrainConfig.device)
@click.option("--encoding", default=TrainConfig.encoding, help="Text encoding of the corpus.")
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=TrainConfig.checkpoint_dir,
)
@click.option("--name", default=None, help="Run folder name [default: CORPUS-CELL, numbered].")
@click.option(
    "--save-every",
    type=click.IntRange(min=1),
    default=TrainConfig.save_every,
    help="Steps between saves of last.pt (evaluations also save).",
)
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=TrainConfig.keep,
    help="Older snapshots (step-N.pt) to keep besides last.pt and best.pt.",
)
@click.option(
    "--on-nan",
    type=click.Choice(["stop", "skip"]),
    default=TrainConfig.on_nan,
    help="A non-finite loss or gradient: stop (keeping the last good checkpoint), or "
    "skip the batch and halve the learning rate.",
)
@click.option(
    "--resume",
    default=None,
    metavar="RUN_DIR|CHECKPOINT|auto",
    help="Continue a run exactly where it stopped; auto: the named run if it exists.",
)
@click.option(
    "--init-from",
    type=click.Path(path_type=Path),
    default=None,
    metavar="CHECKPOINT",
    help="Start a new run from these weights (fine-tuning); new characters are added.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress or log output.")
@click.pass_context
def train(
    ctx: click.Context,
    corpus: Path,
    quiet: bool,
    checkpoint_dir: Path,
    resume: str | None,
    init_from: Path | None,
    **options: Any,
) -> None:
    """Train a model on CORPUS (a UTF-8 text file) and save checkpoints."""
    from charnn.checkpoint import load_path, read_payload
    from charnn.progress import TrainDisplay
    from charnn.runs import merged_config, resume_checkpoint
    from charnn.trainer import train as run_training

    if resume is not None and init_from is not None:
        raise click.UsageError("give --resume or --init-from, not both")
    model_keys = ("cell", "layers", "hidden_size", "embed_size", "dropout")
    model = ModelConfig(**{k: options.pop(k) for k in model_keys})
    config = TrainConfig(
        corpus=str(corpus), model=model, checkpoint_dir=str(checkpoint_dir), **options
    )
    given = {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    }
    # settings not given now come from the run being continued (or the weights' shape)
    resume_path = None if resume is None else resume_checkpoint(resume, config, corpus)
    source = resume_path if resume_path is not None else init_from
    if source is not None:
        saved = TrainConfig.from_dict(read_payload(load_path(source))["train_config"])
        merged = merged_config(saved, config, given)
        config = merged if resume_path is not None else replace(config, model=merged.model)
    with TrainDisplay(quiet=quiet) as display, _StopOnSignal() as stop:
        result = run_training(
            config,
            on_event=display.on_event,
            stop_requested=stop.requested,
            resume=resume_path if resume != "auto" else "auto",
            init_from=init_from,
        )
    display.finished(result, corpus)
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED.get(stop.signal_name or "SIGINT", 130))


def _options_from_environment(command: click.Command) -> None:
    """Every train option can also come from CHARNN_<OPTION>, e.g. CHARNN_HIDDEN_SIZE=512."""
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "resume", "init_from"):
            param.envvar = f"CHARNN_{param.name.upper()}"
            param.show_envvar = True


_options_from_environment(train)


class _StopOnSignal:
    """Ctrl-C or SIGTERM asks training to stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> _StopOnSignal:
        import signal

        self._previous = {
            s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)
        }
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------- sample and eval


def _checkpoint_options(func: Any) -> Any:
    func = click.option(
        "--checkpoint-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=TrainConfig.checkpoint_dir,
        help="Where to look for the newest run when no checkpoint is given.",
    )(func)
    return click.option(
        "--cell", type=click.Choice(CELLS), default=None, help="Newest run of this cell only."
    )(func)


def _load(checkpoint: Path | None, checkpoint_dir: Path, cell: str | None, device: str = "cpu"):
    from charnn.checkpoint import find_checkpoint, load_checkpoint
    from charnn.trainer import resolve_device

    path = checkpoint if checkpoint is not None else find_checkpoint(checkpoint_dir, cell)
    return load_checkpoint(path, resolve_device(device))


def _read_prime_file(path: str) -> str:
    from charnn.vocab import decode_text, read_corpus

    if path == "-":
        return decode_text(sys.stdin.buffer.read(), "standard input")
    return read_corpus(path)


def _unescape(text: str) -> str:
    """Let --separator '\\n---\\n' mean what it says."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


@main.command(context_settings=CONTEXT)
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@_checkpoint_options
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
    type=click.FloatRange(min=0),
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
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Sample only from the likeliest characters holding this much probability.",
)
@click.option("--greedy", is_flag=True, help="Always take the most likely character (-t 0).")
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
@click.option("--seed", type=int, default=None, help="Same seed, same text (on the same machine).")
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
    **options: Any,
) -> None:
    """Generate text from CHECKPOINT (a .pt file or run folder) onto stdout.

    Without CHECKPOINT, the best checkpoint of the newest run under --checkpoint-dir.
    """
    import random

    from charnn.sampler import SampleConfig, generate, prepare_prime

    if prime is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    if options["length"] == 0 and options["num_samples"] > 1 and not options["stop"]:
        raise click.UsageError("--length 0 with several samples needs a --stop string")
    loaded = _load(checkpoint, checkpoint_dir, cell)
    text = _read_prime_file(prime_file) if prime_file is not None else (prime or "")
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


@main.command("eval", context_settings=CONTEXT)
@click.argument(
    "paths",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path),
    metavar="[CHECKPOINT] FILE...",
)
@_checkpoint_options
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
    loaded = _load(checkpoint, checkpoint_dir, cell, device)
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


@main.command("list", context_settings=CONTEXT)
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=TrainConfig.checkpoint_dir,
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run on stdout.")
def list_command(checkpoint_dir: Path, as_json: bool) -> None:
    """The runs under --checkpoint-dir, newest first."""
    from charnn.runs import list_runs

    runs = list_runs(checkpoint_dir)
    if as_json:
        for run in runs:
            sys.stdout.write(json.dumps(run, ensure_ascii=False) + "\n")
        return
    if not runs:
        click.echo(f"no runs under {checkpoint_dir}/", err=True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("run", "cell", "size", "params", "steps", "best val bpc", "corpus", "modified"):
        table.add_column(column, justify="right" if column in ("params", "steps") else "left")
    for r in runs:
        if "error" in r:
            table.add_row(r["name"], "[red]unreadable[/red]", "", "", "", "", r["error"][:60], "")
            continue
        bpc = "-" if r["best_val_bpc"] is None else f"{r['best_val_bpc']:.4f}"
        table.add_row(
            r["name"],
            r["cell"],
            f"{r['layers']}x{r['hidden_size']}",
            f"{r['parameters']:,}",
            f"{r['steps']:,}",
            bpc,
            str(r["corpus"]),
            r["modified"].replace("T", " "),
        )
    Console().print(table)


@main.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def info(checkpoint: Path, as_json: bool) -> None:
    """Describe CHECKPOINT (a .pt file or run folder): configs, vocabulary, metrics."""
    from charnn.checkpoint import describe_checkpoint

    described = describe_checkpoint(checkpoint)
    if as_json:
        sys.stdout.write(json.dumps(described, ensure_ascii=False) + "\n")
        return
    model, metrics = described["model_config"], described["metrics"]
    lines = [
        f"checkpoint   {described['path']}",
        f"charnn       {described['charnn_version']} (format {described['format_version']})",
        f"model        {model['cell']}, {model['layers']}x{model['hidden_size']}, embed "
        f"{model['embed_size']}, dropout {model['dropout']}",
        f"parameters   {described['parameters']:,}",
        f"vocabulary   {described['vocab_size']} characters: {described['vocab']!r}",
        f"step         {described['step']:,}",
    ]
    for key in ("val_bpc", "best_val_bpc", "train_loss", "elapsed"):
        if metrics.get(key) is not None:
            lines.append(f"{key:12} {metrics[key]:.4f}")
    history = described.get("val_bpc_history") or []
    if len(history) > 1:
        lines.append(f"val history  {_sparkline(history)}  {history[0]:.3f} -> {history[-1]:.3f}")
    lines.append("training config:")
    config = dict(described["train_config"])
    config.pop("model", None)
    lines += [f"  {key:15} {value}" for key, value in config.items()]
    click.echo("\n".join(lines))


def _sparkline(values: list[float]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(bars[round((v - low) / span * (len(bars) - 1))] for v in values)


# ---------------------------------------------------------------- data


@main.group(context_settings=CONTEXT)
def data() -> None:
    """Corpora: a built-in one (offline) and well-known public downloads."""


@data.command("list", context_settings=CONTEXT)
def data_list() -> None:
    """Show the corpora `charnn data get` knows."""
    from charnn.corpora import CORPORA

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
    from charnn.corpora import get_corpus
    from charnn.progress import DownloadDisplay

    with DownloadDisplay(name, quiet=quiet) as display:
        path = get_corpus(name, data_dir, url=url, on_progress=display.update)
    click.echo(str(path))
