"""Everything that decides a training run.

`TrainConfig` is what a user asks for (flags, a TOML file, CHARNN_* variables or Python): a
setting left as None is planned for the run by training.plan, from the time budget, the corpus
and the machine. `RunConfig` is a run's settings once every one is decided: what the trainer
takes and what every checkpoint stores, so a resumed run keeps its plan. Its defaults are what a
setting becomes where nothing argues for another value.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from charnn.config.checks import check, check_types, known_fields
from charnn.config.model import ModelConfig, ModelSpec

PRECISIONS = ("fp32", "bf16", "fp16")
LR_DECAYS = ("linear", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")
ON_NAN = ("stop", "skip")
LABEL_FROM = ("folder", "file", "field")


@dataclass(frozen=True)
class TrainConfig:
    """A training run as a user asks for it; None: planned for the run. Tuned for a 2-core CPU."""

    corpus: str | tuple[str, ...] = ""  # a text file, or several files and folders
    glob: str | None = None  # which files of the folders in `corpus`, by name (`*.py`)
    separator: str | None = None  # between documents; None: a blank line (a newline by line)
    doc_per_line: bool = False  # each line of the corpus is a document of its own
    # labelled documents, a label each: "folder" (the first folder under each corpus folder),
    # "file" (each file its own), or "field" (JSONL or CSV files, one row a document, its text
    # and label in text_field and label_field)
    label_from: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    any_label: float = 0.1  # of a labelled run's windows, the share trained as the "any" label
    model: ModelConfig = field(default_factory=ModelConfig)
    # optimisation (the evidence: docs/experiments.md#optimiser)
    lr: float = 1e-2  # peak AdamW learning rate, warmed up, then decayed to zero
    lr_decay: str | None = None  # "linear" or "cosine"
    weight_decay: float | None = None  # AdamW's decoupled weight decay
    beta1: float | None = None  # AdamW's β1
    clip: float = 5.0  # max global gradient norm; 0 disables clipping
    # the horizon of the weights' moving average, as a share of the run (training.average);
    # 0: no averaging
    average: float | None = None
    # T: characters per window of truncated BPTT; on a CPU a step costs in proportion to its
    # characters, so 32 makes twice the updates of 64 (docs/experiments.md#windows-and-batches)
    seq_len: int = 32
    batch_size: int = 32  # B: parallel contiguous streams; fewer streams, more updates
    # when to stop: the first limit reached (none set: training.length.DEFAULT_EPOCHS)
    max_steps: int | None = None
    epochs: float | None = None
    time_budget: float | None = None  # seconds of wall-clock training
    # bookkeeping
    val_frac: float = 0.1
    eval_every: int | None = None  # steps between evaluations
    # characters each evaluation scores, spread over the validation split (0: all of it), so that
    # evaluating a big corpus does not eat its training time
    eval_chars: int = 250_000
    patience: int | None = None  # stop after this many evaluations without a new best; 0: never
    save_every: int = 100  # steps between saves of last.pt (evaluations save too)
    keep: int = 0  # older snapshots (step-N.pt) to keep besides last.pt and best.pt
    on_nan: str = "stop"  # a non-finite loss or gradient: "stop", or "skip" the batch
    seed: int = 1337
    device: str = "auto"
    precision: str | None = None  # "fp32", or "bf16"/"fp16": autocast the forward pass
    threads: int | None = None  # CPU threads for PyTorch; None: PyTorch's default
    encoding: str = "utf-8"
    checkpoint_dir: str = "checkpoints"
    name: str | None = None
    tensorboard: str | None = None  # a folder for TensorBoard's event files (the extra)

    def __post_init__(self) -> None:
        if isinstance(self.corpus, list | tuple):  # one path stays a plain string
            paths = tuple(str(p) for p in self.corpus)
            object.__setattr__(self, "corpus", paths[0] if len(paths) == 1 else paths)
        elif isinstance(self.corpus, os.PathLike):
            object.__setattr__(self, "corpus", os.fspath(self.corpus))
        check_types(self)
        check(self.lr > 0, "{lr} must be positive")
        check(self.lr_decay in (None, *LR_DECAYS),
              f"{{lr_decay}} must be one of {', '.join(LR_DECAYS)}")  # fmt: skip
        check(self.weight_decay is None or self.weight_decay >= 0,
              "{weight_decay} must be 0 or more")  # fmt: skip
        check(self.beta1 is None or 0 <= self.beta1 < 1, "{beta1} must be in [0, 1)")
        check(self.clip >= 0, "{clip} must be 0 (no clipping) or more")
        check(self.average is None or 0 <= self.average <= 1,
              "{average} must be a share of the run in [0, 1] (0: no averaging)")  # fmt: skip
        check(self.seq_len >= 1, "{seq_len} must be at least 1")
        check(self.batch_size >= 1, "{batch_size} must be at least 1")
        check(self.max_steps is None or self.max_steps >= 1, "{max_steps} must be at least 1")
        check(self.epochs is None or self.epochs > 0, "{epochs} must be positive")
        check(self.time_budget is None or self.time_budget > 0, "{time_budget} must be positive")
        check(0.0 < self.val_frac < 1.0, "{val_frac} must be between 0 and 1 (exclusive)")
        check(self.eval_every is None or self.eval_every >= 1, "{eval_every} must be at least 1")
        check(self.eval_chars >= 0, "{eval_chars} must be 0 (the whole split) or more")
        check(self.patience is None or self.patience >= 0, "{patience} must be 0 (never) or more")
        check(self.save_every >= 1, "{save_every} must be at least 1")
        check(self.keep >= 0, "{keep} must be 0 or more")
        check(self.on_nan in ON_NAN, f"{{on_nan}} must be one of {', '.join(ON_NAN)}")
        check(self.device in DEVICES, f"{{device}} must be one of {', '.join(DEVICES)}")
        check(self.precision in (None, *PRECISIONS),
              f"{{precision}} must be one of {', '.join(PRECISIONS)}")  # fmt: skip
        check(self.threads is None or self.threads >= 1, "{threads} must be at least 1")
        check(0 <= self.seed < 2**63, "{seed} must be in [0, 2**63)")
        check(self.name is None or (self.name not in ("", ".", "..") and "/" not in self.name
                                    and "\\" not in self.name),
              "{name} names one folder in the checkpoint folder: not empty, no / or \\, "
              "not . or ..")  # fmt: skip
        check(self.label_from in (None, *LABEL_FROM),
              f"{{label_from}} must be one of {', '.join(LABEL_FROM)}")  # fmt: skip
        check(0 <= self.any_label < 1, "{any_label} must be in [0, 1)")
        check(bool(self.text_field) and bool(self.label_field),
              "{text_field} and {label_field} must not be empty")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def corpus_paths(self) -> tuple[str, ...]:
        return (self.corpus,) if isinstance(self.corpus, str) else self.corpus

    def chosen(self) -> set[str]:
        """The names of the settings given a value (not None), model settings included."""
        values = {**asdict(self), **asdict(self.model)}
        return {name for name, value in values.items() if value is not None and name != "model"}

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """One flat set of options (as the CLI or a TOML file has them) -> the nested config."""
        model_names = {f.name for f in fields(ModelConfig)}
        model = {k: options.pop(k) for k in list(options) if k in model_names}
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        check(not unknown, f"unknown training option(s): {', '.join(unknown)}")
        return cls(model=ModelConfig(**model), **options)


@dataclass(frozen=True)
class RunConfig(TrainConfig):
    """A run's settings with every one decided; the defaults are what an unplanned one becomes
    (the evidence for each: docs/experiments.md)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    lr_decay: str = "linear"  # reached lower bits/char than cosine in three of four comparisons
    weight_decay: float = 0.1  # beat 0 in the same steps on two corpora
    beta1: float = 0.5  # a short memory of past gradients; the plan raises it for long runs
    average: float = 0.0  # none: after a decay to zero it never beat the live weights
    eval_every: int = 1000  # about a million characters apart
    patience: int = 0  # never stop early
    precision: str = "fp32"

    @classmethod
    def of(cls, request: TrainConfig, **chosen: Any) -> RunConfig:
        """`request` with the plan's `chosen` values (model settings among them), every other
        unset setting at its default."""
        model_names = {f.name for f in fields(ModelConfig)}
        model = ModelSpec.of(request.model, **{k: v for k, v in chosen.items() if k in model_names})
        values = {f.name: getattr(request, f.name) for f in fields(TrainConfig)}
        values |= {k: v for k, v in chosen.items() if k not in model_names}
        unset = {name for name in PLANNED if values[name] is None}  # their defaults, then
        return cls(**{k: v for k, v in values.items() if k not in unset} | {"model": model})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Settings as a checkpoint saved them (`to_dict`), from this version or an older one."""
        known = known_fields(TrainConfig, data)
        model = ModelSpec.from_dict(known.pop("model", {}))
        known.setdefault("eval_chars", 0)  # runs from before eval_chars scored the whole split
        known.setdefault("lr_decay", "cosine")  # runs from before lr_decay followed a cosine
        known.setdefault("beta1", 0.9)  # runs from before beta1 trained with PyTorch's 0.9
        known.setdefault("average", 0.0)  # runs from before averaging kept the live weights
        return cls.of(TrainConfig(**known, model=model))


# The settings a run decides for itself when left unset (training.plan, or RunConfig's default)
PLANNED = (
    "lr_decay", "weight_decay", "beta1", "average", "eval_every", "patience", "precision"
)  # fmt: skip
