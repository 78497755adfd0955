"""`charnn train`: flags, a TOML file and CHARNN_* variables -> TrainConfig -> the trainer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from charnn.cli.common import CONTEXT, FiniteRange
from charnn.config.files import parse_duration, read_config_file
from charnn.config.model import CELLS, DECODER_DROPOUT_SHARE, ModelConfig, ModelSpec
from charnn.config.train import (
    DEVICES,
    LABEL_FROM,
    LR_DECAYS,
    ON_NAN,
    PRECISIONS,
    RunConfig,
    TrainConfig,
)
from charnn.errors import CharnnError
from charnn.training.plan import (
    BETA1_MANY_PASSES,
    CHARS_PER_PARAMETER,
    EVAL_SHARE,
    FALLBACK_WIDTH,
    MANY_PASSES,
    PATIENCE,
    REREAD_PASSES,
    SMALL_VOCAB,
    USEFUL_PASSES,
    WIDTHS,
    by_passes,
)

EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}


def _per_parameter() -> str:
    """training.plan's characters-per-parameter rows, in words (for --help)."""
    rows = [f"{need:g} from {start} units" for start, need, _ in CHARS_PER_PARAMETER]
    return ", ".join(rows)


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


@click.command(context_settings=CONTEXT)
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
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
@click.option(
    "--hidden-size",
    type=click.IntRange(min=1),
    default=None,
    help="Units per layer [default: planned; with a --time-budget the widest of "
    f"{', '.join(map(str, WIDTHS))} that trains on enough characters per parameter "
    f"({_per_parameter()}), counting at most {USEFUL_PASSES:g} passes over the text (or up to "
    f"{FALLBACK_WIDTH}, that reads it {REREAD_PASSES:g} times), else {FALLBACK_WIDTH}].",
)
@click.option(
    "--embed-size",
    type=click.IntRange(min=1),
    default=None,
    help="Width of a character's embedding [default: planned: "
    f"{ModelSpec.embed_size}, wider for a vocabulary of over {SMALL_VOCAB} characters].",
)
@click.option(
    "--dropout",
    type=FiniteRange(0, 1, max_open=True),
    default=None,
    help=f"Dropout between layers [default: planned: {by_passes('dropout')}].",
)
@click.option(
    "--decoder-dropout",
    type=FiniteRange(0, 1, max_open=True),
    default=None,
    help=f"Dropout before the decoder [default: --dropout × {DECODER_DROPOUT_SHARE:g}; "
    "all of it with --layers 1].",
)
@click.option(
    "--weight-drop",
    type=FiniteRange(0, 1, max_open=True),
    default=None,
    help="DropConnect on the hidden-to-hidden weights, one mask per batch (AWD-LSTM) "
    f"[default: planned: {by_passes('weight_drop')}].",
)
@click.option(
    "--embed-dropout",
    type=FiniteRange(0, 1, max_open=True),
    default=ModelConfig.embed_dropout,
    help="Drop whole characters' embeddings, one mask per batch.",
)
@click.option(
    "--locked-dropout/--no-locked-dropout",
    default=ModelConfig.locked_dropout,
    help="The dropout before the decoder keeps one mask per sequence (variational).",
)
@click.option(
    "--forget-bias",
    type=FiniteRange(),
    default=None,
    help="Initial forget-gate bias of LSTM-family cells (char-rnn uses 1.0) "
    "[default: PyTorch's initialisation].",
)
@click.option(
    "--mogrifier-rounds",
    type=click.IntRange(min=0),
    default=ModelConfig.mogrifier_rounds,
    help="Rounds in which the input and the hidden state gate each other before each step of "
    "--cell mogrifier (0: the LSTM).",
)
@click.option(
    "--lr",
    type=FiniteRange(min=0, min_open=True),
    default=TrainConfig.lr,
    help="Peak learning rate (AdamW), warmed up then decayed to zero.",
)
@click.option(
    "--lr-decay",
    type=click.Choice(LR_DECAYS),
    default=None,
    help="How the learning rate falls to zero over the run after its warm-up "
    f"[default: {RunConfig.lr_decay}].",
)
@click.option(
    "--weight-decay",
    type=FiniteRange(min=0),
    default=None,
    help=f"AdamW's decoupled weight decay [default: {RunConfig.weight_decay}].",
)
@click.option(
    "--beta1",
    type=FiniteRange(0, 1, max_open=True),
    default=None,
    help="AdamW's β1, the decay of its running mean of gradients [default: planned: "
    f"{RunConfig.beta1} up to {MANY_PASSES:g} passes over the text, then {BETA1_MANY_PASSES}].",
)
@click.option(
    "--average",
    type=FiniteRange(0, 1),
    default=None,
    help="Keep a moving average of the weights over this share of the run, scored beside them "
    f"at each evaluation; 0: none [default: {RunConfig.average}].",
)
@click.option(
    "--clip",
    type=FiniteRange(min=0),
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
    type=FiniteRange(min=0, min_open=True),
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
    type=FiniteRange(0, 1, min_open=True, max_open=True),
    default=TrainConfig.val_frac,
    help="Last fraction of the text kept for validation.",
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=1),
    default=None,
    help="Steps between evaluations (and checkpoints); also at the end [default: planned; "
    f"{RunConfig.eval_every}, or more where evaluations would take over "
    f"{EVAL_SHARE:.0%} of the training time].",
)
@click.option(
    "--eval-chars",
    type=click.IntRange(min=0),
    default=TrainConfig.eval_chars,
    help="Characters each evaluation scores, in pieces spread over the validation split; 0 "
    "scores all of it. Keeps a big corpus's evaluations from eating its training time.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=None,
    help="Stop after this many evaluations without a new best val bits/char (best.pt stays); "
    f"0 never stops early [default: planned; {PATIENCE} for a run that reads its text more than "
    f"{MANY_PASSES:g} times, else 0].",
)
@click.option("--seed", type=int, default=TrainConfig.seed)
@click.option("--device", type=click.Choice(DEVICES), default=TrainConfig.device)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=None,
    help="Arithmetic of the forward pass: bf16/fp16 autocast (fp16 needs a GPU and scales the "
    "loss) [default: planned; fp32, or with a --time-budget bf16 where the CPU has it in "
    "hardware].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for PyTorch [default: PyTorch's choice, one per core].",
)
@click.option("--encoding", default=TrainConfig.encoding, help="Text encoding of the corpus.")
@click.option(
    "--glob",
    default=None,
    metavar="PATTERN",
    help="Files of the folders given to train on, by name ('*.py') [default: all].",
)
@click.option(
    "--separator",
    default=None,
    callback=lambda ctx, param, value: _unescape(value),
    help="Text between documents (\\n and \\t understood) [default: a blank line; a newline "
    "with --doc-per-line].",
)
@click.option(
    "--doc-per-line",
    is_flag=True,
    default=False,
    help="Each line is a document of its own (names, titles, short texts).",
)
@click.option(
    "--label-from",
    type=click.Choice(LABEL_FROM),
    default=None,
    help="Label each document, and condition the model on its label: folder (the first folder "
    "under each corpus folder), file (each file's name), field (rows of JSONL or CSV files).",
)
@click.option("--text-field", default=TrainConfig.text_field, help="--label-from field: the text.")
@click.option(
    "--label-field", default=TrainConfig.label_field, help="--label-from field: the label."
)
@click.option(
    "--label-size",
    type=click.IntRange(min=1),
    default=ModelConfig.label_size,
    help="Width of a label's embedding.",
)
@click.option(
    "--any-label",
    type=FiniteRange(0, 1, max_open=True),
    default=TrainConfig.any_label,
    help='Share of a labelled run\'s windows trained as the "any" label (sampling without a '
    "label uses it).",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=TrainConfig.checkpoint_dir,
)
@click.option("--name", default=None, help="Run folder name [default: CORPUS-CELL, numbered].")
@click.option(
    "--tensorboard",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Also write training curves and samples for TensorBoard here (the tensorboard extra).",
)
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
    type=click.Choice(ON_NAN),
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
    corpus: tuple[Path, ...],
    quiet: bool,
    checkpoint_dir: Path,
    resume: str | None,
    init_from: Path | None,
    **options: Any,
) -> None:
    """Train a model on CORPUS (UTF-8 text files, or folders of them) and save checkpoints.

    Several files are joined in the order given, a folder's files sorted by path, with a
    separator between documents; with many documents, validation takes whole ones.
    """
    from charnn.cli.display import TrainDisplay
    from charnn.training.distributed import is_main_process
    from charnn.training.trainer import train as run_training

    if resume is not None and init_from is not None:
        raise click.UsageError("give --resume or --init-from, not both")
    config = TrainConfig.from_options(
        corpus=tuple(str(p) for p in corpus), checkpoint_dir=str(checkpoint_dir), **options
    )
    given = {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    }
    quiet = quiet or not is_main_process()  # in a torchrun job, rank 0 reports for all
    with TrainDisplay(quiet=quiet) as display, _StopOnSignal() as stop:
        result = run_training(
            config,
            on_event=display.on_event,
            stop_requested=stop.requested,
            resume=resume,
            init_from=init_from,
            given=given,  # settings not given now come from the run (or the weights' shape)
        )
    display.finished(result, corpus)
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED.get(stop.signal_name or "SIGINT", 130))


def _unescape(value: str | None) -> str | None:
    """'\\n---\\n' as typed in a shell -> the text it means."""
    if value is None:
        return None
    return value.replace("\\n", "\n").replace("\\t", "\t")


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
