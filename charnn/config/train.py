"""Typed, frozen configuration: CLI flags become these, and every checkpoint stores them.

A setting left as None is planned for the run by charnn.training.plan (from the time budget and the
hardware) before training starts, the same for the CLI and the Python API; checkpoints store the
planned values, so a resumed run keeps its plan. FALLBACK is what each becomes when nothing argues
for another value, and what a model built outside training uses.
"""

from __future__ import annotations

import os
import re
import sys
import types
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from charnn.errors import CharnnError
from charnn.text.sources import CorpusSpec

CELLS = ("rnn", "rnn-relu", "lstm", "gru", "peephole", "cifg")
PRECISIONS = ("fp32", "bf16", "fp16")
LR_DECAYS = ("linear", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CharnnError(message)


# Settings that are no flag of `charnn train`: named as they are in a checkpoint's config
NOT_FLAGS = frozenset({"vocab_size", "corpus", "model"})
KIND_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}


def _check_types(config: ModelConfig | TrainConfig) -> None:
    """Every setting holds a value of its annotated type, or one line naming the setting: a
    checkpoint edited by hand, a TOML file or the Python API can hold "32" where 32 belongs,
    which would otherwise fail later in Python's words (or not at all)."""
    kind: Any = type(config)  # a frozen dataclass's class, hashable whatever mypy infers
    for name, annotation in _field_types(kind).items():
        value = getattr(config, name)
        if not _is_instance(value, annotation):
            setting = name if name in NOT_FLAGS else "--" + name.replace("_", "-")
            raise CharnnError(f"{setting} must be {_describe(annotation)}, not {value!r}")


@cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _is_instance(value: Any, annotation: Any) -> bool:
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_instance(value, arm) for arm in get_args(annotation))
    if get_origin(annotation) is tuple:  # tuple[str, ...]
        item = get_args(annotation)[0]
        return isinstance(value, tuple) and all(_is_instance(v, item) for v in value)
    if annotation is type(None):
        return value is None
    if isinstance(value, bool):  # a bool is an int to Python, never a number of layers
        return annotation is bool
    if annotation is float:
        return isinstance(value, int | float)
    return isinstance(value, annotation)


def _describe(annotation: Any) -> str:
    arms = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    named = [KIND_WORDS.get(arm) for arm in arms if arm is not type(None)]
    if arms and all(named):
        return " or ".join(str(word) for word in named) + (
            " (or left unset)" if type(None) in arms else ""
        )
    return KIND_WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


# What a setting left as None becomes: the planned ones as they are without a plan (no time
# budget, no native bf16), and two that are never planned but, left as None, are taken from the
# run being resumed (whose older checkpoint may hold another value)
FALLBACK: dict[str, Any] = {
    "hidden_size": 256,
    "dropout": 0.0,
    "weight_drop": 0.0,
    "precision": "fp32",
    "patience": 0,  # never stop early
    "eval_every": 1000,  # steps between evaluations (about a million characters)
    # AdamW's decoupled decay: 0.1 gave lower bits/char than 0 in the same steps at 2.9 passes
    # over tinyshakespeare and 9 over pydoc (bench/RESULTS.md, "Fifth pass")
    "weight_decay": 0.1,
    # the learning rate's fall after warm-up: "linear" reached lower bits/char than "cosine" in
    # the same steps in three of four comparisons, and even in the fourth (the same pass)
    "lr_decay": "linear",
    # AdamW's β1, the decay of its running mean of gradients; planned from the passes
    # (charnn.training.plan), and 0.5 where they are unknown
    "beta1": 0.5,
}


# The dropout before the decoder, as a share of the dropout between layers. In the same steps,
# tinyshakespeare (2x384, 14 passes, dropout 0.3): 0.15 there beat 0.3 by 0.9% and 0.5% (two
# seeds); none was 0.3% behind 0.15, and 0.45 0.7% behind 0.3. pydoc (2x256, 14.7 passes): 0.5%
# better on average over four seeds (-0.9% to 1.8%). Vim's manual: 0.8-0.9% worse at 34 passes
# (DropConnect 0.2, two seeds), 1.0% better at 51 (0.5 and 0.5) (bench/RESULTS.md, "Twenty-third
# pass").
DECODER_DROPOUT_SHARE = 0.5

T = TypeVar("T")


def decided(value: T | None) -> T:
    """A planned setting's value, once planned (or completed with its FALLBACK)."""
    if value is None:
        raise ValueError(
            "a planned setting was read before planning: use charnn.training.plan first"
        )
    return value


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape: embedding -> recurrent stack -> linear decoder."""

    vocab_size: int = 0  # filled in from the corpus
    cell: str = "lstm"  # rnn (tanh) | rnn-relu | lstm | gru | peephole | cifg
    layers: int = 2
    hidden_size: int | None = None  # units per layer; None: planned (FALLBACK: 256)
    embed_size: int = 64  # characters are few; a small embedding saves input-projection time
    dropout: float | None = None  # between layers; None: planned
    # before the decoder; None: DECODER_DROPOUT_SHARE of `dropout` (all of it with one layer)
    decoder_dropout: float | None = None
    # regularisation of the AWD-LSTM family (Merity et al. 2017); the others off unless asked for:
    weight_drop: float | None = None  # DropConnect on the hidden-to-hidden weights, one mask per
    # batch; None: planned (on only for runs that read their text many times over)
    embed_dropout: float = 0.0  # whole characters' embeddings dropped, one mask per batch
    locked_dropout: bool = False  # the dropout before the decoder keeps one mask per sequence
    # LSTM-family forget-gate bias at the start (char-rnn uses 1.0); None keeps PyTorch's
    # initialisation, which reached lower bits/char within short budgets here
    forget_bias: float | None = None

    def __post_init__(self) -> None:
        _check_types(self)
        _check(self.cell in CELLS, f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}")
        _check(self.layers >= 1, "--layers must be at least 1")
        _check(
            self.hidden_size is None or self.hidden_size >= 1, "--hidden-size must be at least 1"
        )
        _check(self.embed_size >= 1, "--embed-size must be at least 1")
        _check(self.dropout is None or 0.0 <= self.dropout < 1.0, "--dropout must be in [0, 1)")
        _check(
            self.decoder_dropout is None or 0.0 <= self.decoder_dropout < 1.0,
            "--decoder-dropout must be in [0, 1)",
        )
        _check(
            self.weight_drop is None or 0.0 <= self.weight_drop < 1.0,
            "--weight-drop must be in [0, 1)",
        )
        _check(0.0 <= self.embed_dropout < 1.0, "--embed-dropout must be in [0, 1)")

    def complete(self) -> ModelConfig:
        """This shape with every unplanned setting at its FALLBACK value."""
        return _complete(self)

    def dropout_before_decoder(self) -> float:
        """`decoder_dropout` if given; else DECODER_DROPOUT_SHARE of the dropout between
        layers, or all of it in a one-layer model (where it is the only dropout)."""
        if self.decoder_dropout is not None:
            return self.decoder_dropout
        dropout = decided(self.dropout)
        return dropout * DECODER_DROPOUT_SHARE if self.layers > 1 else dropout

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """A shape as a checkpoint saved it, from this version or an older one."""
        known = _known_fields(cls, data)
        known.setdefault("decoder_dropout", known.get("dropout"))  # older runs: one rate for both
        return cls(**known)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Defaults are tuned for a 2-core CPU."""

    corpus: str | tuple[str, ...] = ""  # a text file, or several files and folders
    glob: str | None = None  # which files of the folders in `corpus`, by name (`*.py`)
    separator: str | None = None  # between documents; None: a blank line (a newline by line)
    doc_per_line: bool = False  # each line of the corpus is a document of its own
    model: ModelConfig = field(default_factory=ModelConfig)
    # optimisation
    # peak AdamW learning rate, warmed up, then decayed to zero; 1e-2 beat 8e-3 or came within
    # 0.3% of it on five corpora, with β1 0.5 and 0.9, in the same steps and under budgets
    # (bench/RESULTS.md, "Fourteenth pass"); 1.3e-2 fell behind 1e-2
    lr: float = 1e-2
    lr_decay: str | None = None  # "linear" or "cosine"; None: FALLBACK (or the resumed run's)
    weight_decay: float | None = None  # AdamW's decoupled decay; None: FALLBACK (or the run's)
    beta1: float | None = None  # AdamW's β1; None: planned
    clip: float = 5.0  # max global gradient norm; 0 disables clipping
    # T: characters per window of truncated BPTT. On a CPU a step costs in proportion to its
    # characters, so 32 makes twice the updates of 64 on about as much text: better or even at
    # every corpus and budget measured (bench/RESULTS.md, "Fourth pass")
    seq_len: int = 32
    batch_size: int = 32  # B: parallel contiguous streams; fewer streams, more updates
    # when to stop (the first limit reached wins; none set means 10 epochs: trainer.DEFAULT_EPOCHS)
    max_steps: int | None = None
    epochs: float | None = None
    time_budget: float | None = None  # seconds of wall-clock training
    # bookkeeping
    val_frac: float = 0.1
    eval_every: int | None = None  # steps between evaluations; None: planned
    # characters each evaluation scores, spread over the validation split (0: all of it), so that
    # evaluating a big corpus does not eat its training time
    eval_chars: int = 250_000
    # stop after this many evaluations without a new best (0: never); None: planned
    patience: int | None = None
    save_every: int = 100  # steps between saves of last.pt (evaluations save too)
    keep: int = 0  # older snapshots (step-N.pt) to keep besides last.pt and best.pt
    on_nan: str = "stop"  # a non-finite loss or gradient: "stop", or "skip" the batch
    seed: int = 1337
    device: str = "auto"
    # "fp32", or "bf16"/"fp16": autocast the forward pass (fp16 scales the loss); None: planned
    precision: str | None = None
    threads: int | None = None  # CPU threads for PyTorch; None: PyTorch's default
    encoding: str = "utf-8"
    checkpoint_dir: str = "checkpoints"
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.corpus, list | tuple):  # one path stays a plain string
            paths = tuple(str(p) for p in self.corpus)
            object.__setattr__(self, "corpus", paths[0] if len(paths) == 1 else paths)
        elif isinstance(self.corpus, os.PathLike):
            object.__setattr__(self, "corpus", os.fspath(self.corpus))
        _check_types(self)
        _check(self.lr > 0, "--lr must be positive")
        _check(
            self.lr_decay is None or self.lr_decay in LR_DECAYS,
            f"--lr-decay must be one of {', '.join(LR_DECAYS)}",
        )
        _check(
            self.weight_decay is None or self.weight_decay >= 0,
            "--weight-decay must be non-negative",
        )
        _check(self.beta1 is None or 0 <= self.beta1 < 1, "--beta1 must be in [0, 1)")
        _check(self.clip >= 0, "--clip must be non-negative (0 disables clipping)")
        _check(self.seq_len >= 1, "--seq-len must be at least 1")
        _check(self.batch_size >= 1, "--batch-size must be at least 1")
        _check(self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1")
        _check(self.epochs is None or self.epochs > 0, "--epochs must be positive")
        _check(self.time_budget is None or self.time_budget > 0, "--time-budget must be positive")
        _check(0.0 < self.val_frac < 1.0, "--val-frac must be between 0 and 1 (exclusive)")
        _check(self.eval_every is None or self.eval_every >= 1, "--eval-every must be at least 1")
        _check(self.eval_chars >= 0, "--eval-chars must be 0 (the whole split) or more")
        _check(self.patience is None or self.patience >= 0, "--patience must be 0 (never) or more")
        _check(self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}")
        _check(self.save_every >= 1, "--save-every must be at least 1")
        _check(self.keep >= 0, "--keep must be 0 or more")
        _check(self.on_nan in ("stop", "skip"), "--on-nan must be 'stop' or 'skip'")
        _check(
            self.precision is None or self.precision in PRECISIONS,
            f"--precision must be one of {', '.join(PRECISIONS)}",
        )
        _check(self.threads is None or self.threads >= 1, "--threads must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def corpus_paths(self) -> tuple[str, ...]:
        return (self.corpus,) if isinstance(self.corpus, str) else self.corpus

    def corpus_spec(self) -> CorpusSpec:
        """The files and documents `corpus` names (charnn.text.sources)."""
        return CorpusSpec(
            self.corpus_paths, self.encoding, self.glob, self.separator, self.doc_per_line
        )

    def complete(self) -> TrainConfig:
        """These settings with every unplanned one at its FALLBACK value."""
        return _complete(replace(self, model=self.model.complete()))

    def chosen(self) -> set[str]:
        """The names of the settings given a value (not None), model settings included."""
        values = {**asdict(self), **asdict(self.model)}
        return {name for name, value in values.items() if value is not None and name != "model"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Settings as a checkpoint saved them (`to_dict`), from this version or an older one."""
        known = _known_fields(cls, data)
        known["model"] = ModelConfig.from_dict(known.get("model", {}))
        known.setdefault("eval_chars", 0)  # runs from before --eval-chars scored the whole split
        known.setdefault("lr_decay", "cosine")  # runs from before --lr-decay followed a cosine
        known.setdefault("beta1", 0.9)  # runs from before --beta1 trained with PyTorch's 0.9
        return cls(**known)

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """One flat set of options (as the CLI or a TOML file has them) -> the nested config."""
        model_names = {f.name for f in fields(ModelConfig)}
        model = {k: options.pop(k) for k in list(options) if k in model_names}
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        _check(not unknown, f"unknown training option(s): {', '.join(unknown)}")
        return cls(model=ModelConfig(**model), **options)


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Drop keys this version does not know, so older and newer checkpoints still load."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _complete(config: Any) -> Any:
    missing = {
        f.name: FALLBACK[f.name]
        for f in fields(config)
        if f.name in FALLBACK and getattr(config, f.name) is None
    }
    return replace(config, **missing) if missing else config


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hms]?)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(text: str) -> float:
    """'90s', '5m', '1h', '1h30m' or a plain number of seconds -> seconds."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned.replace(" ", ""):
        raise CharnnError(f"cannot read duration {text!r}: use forms like 90s, 5m, 1h or 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise CharnnError(f"duration {text!r} must be longer than zero")
    return seconds


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file, keys as Python names (`hidden-size` -> `hidden_size`).

    TOML is data: nothing in the file is ever executed.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise CharnnError(f"config file not found: {path}") from None
    except OSError as err:
        raise CharnnError(f"cannot read config file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise CharnnError(f"{path} is not valid TOML: {err}") from None
    nested = [key for key, value in data.items() if isinstance(value, dict)]
    if nested:
        raise CharnnError(
            f"{path}: tables are not options ({', '.join(nested)}); write `key = value`"
        )
    return {key.replace("-", "_"): value for key, value in data.items()}
