"""Planning a run: every setting left unset gets a value chosen for this text, budget and machine.

One pure function, `plan_run`, turns a request (TrainConfig) into a run's settings (RunConfig)
before anything is built, the same for the command line and the Python API; a setting given a
value is never changed. What it rests on (`Facts`) is measured first: the size of the training
split and, for a time budget, how fast each candidate width trains here (training.calibrate).
A time-budgeted run re-decides its regularisation once from its own speed (`replan`).

Each rule below is a row: its threshold, the value it gives and why, in one line. The
measurements behind them are in docs/experiments.md, under the heading each rule names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from charnn.config.model import ModelConfig, ModelSpec, decoder_dropout
from charnn.config.train import PLANNED, RunConfig, TrainConfig
from charnn.training import length

# --- Width (docs/experiments.md#width) -----------------------------------------------------
# With a time budget: the widest model that trains on enough characters per parameter, since a
# wider model learns more per character but sees fewer of them. Without one: ModelSpec's 256.
WIDTHS = (128, 256, 384, 512, 768, 1024)  # the candidates, narrowest first
FALLBACK_WIDTH = ModelSpec.hidden_size
CHARS_PER_PARAMETER = (
    # from width, characters per parameter it must train on, why
    (128, 1.0, "below 1, 2x128's extra steps beat 2x256's width"),
    (384, 2.0, "at 1, 2x384 lost to 2x256 by 3.5-6.5%; at 2.7 it won"),
    (512, 4.0, "2x512 at 1.9-3.0 per parameter never beat 2x384"),
)
REREAD_PASSES = 5.0  # up to 256 units: enough anyway where the text is read this often
USEFUL_PASSES = 10.0  # above 256: a text read again teaches less; passes beyond count nothing
TRAINING_SHARE = 0.85  # of a budget spent on training steps at the calibrated speed

# --- Embedding (docs/experiments.md#embedding) ----------------------------------------------
# From the vocabulary's size: a wide vocabulary (CJK text) starves in ModelSpec's 64 dimensions.
SMALL_VOCAB = 256  # up to it, ModelSpec's 64 (nothing changes for alphabetic text)
WIDE_VOCAB_EMBED = 256  # above it: 256 beat 64 by 0.4-2.4% on two Japanese corpora

# --- The cell and the weights kept (docs/experiments.md#the-mogrifier, #weight-averaging) -------
# The LSTM and its live weights, unless asked otherwise: at 2 and 10 minute budgets neither the
# mogrifier (a third of the LSTM's speed here) nor the weights' moving average read better.
KEPT = "the LSTM and its live weights, which read better than the mogrifier and than averaging"

# --- Regularisation (docs/experiments.md#regularisation) -----------------------------------
# From the passes the run will make over its training split: a model that reads its text many
# times memorises it unless regularised.
REGULARISATION_BY_PASSES = (
    # up to passes, dropout, DropConnect     why
    (3.5, 0.0, 0.0),  # read this few times, no dropout was best
    (7.0, 0.1, 0.0),  # 0.1 led 0.2 in every pair from 3.5 to 5.5 passes
    (11.0, 0.2, 0.0),  # 0.2 beat 0.3 at 9 passes
    (20.0, 0.3, 0.0),  # 0.3 beat 0.2 at 12 and 18 passes
    (35.0, 0.3, 0.2),  # past 20 passes dropout alone no longer held a text
    (math.inf, 0.5, 0.5),  # past 35 passes AWD-LSTM's strength led 0.3 and 0.2
)
MANY_PASSES = 20.0  # past it a run memorises: it stops once it stops improving, β1 rises
PATIENCE = 3  # evaluations 1000 steps apart without a new best, past MANY_PASSES

# --- Optimiser (docs/experiments.md#optimiser) ----------------------------------------------
BETA1_MANY_PASSES = 0.9  # past MANY_PASSES; below, RunConfig's 0.5 trained better

# --- Evaluations (docs/experiments.md#evaluations) -----------------------------------------
EVAL_PASSES = 2.0  # at least this often in passes: a small text is memorised in between
EVAL_COST = 0.5  # an evaluated character's time, in training characters' (forward only)
EVAL_SHARE = 0.05  # of the training time at most spent on evaluations

# --- Re-planning (docs/experiments.md#re-planning) -----------------------------------------
REPLAN_AT = 0.1  # of its budget spent, a run re-decides its regularisation from its own speed

MODEL_FIELDS = frozenset(f.name for f in fields(ModelConfig))
PLANNED_MODEL = ("hidden_size", "embed_size", "dropout", "weight_drop")
REGULARISED = ("dropout", "weight_drop", "patience", "beta1")  # what follows from the passes
FROM_PASSES = ("hidden_size", *REGULARISED)  # ...and the width


@dataclass(frozen=True)
class Width:
    """One candidate width, as measured here."""

    chars_per_sec: float  # training throughput at the planned batch shape and precision
    parameters: int


@dataclass(frozen=True)
class Facts:
    """What a plan rests on."""

    train_chars: int = 0  # characters in the training split (0: unknown)
    native_bf16: bool = False  # the training CPU multiplies bf16 in hardware
    widths: Mapping[int, Width] = field(default_factory=dict)  # measured, for a time budget
    eval_chars_read: int = 0  # characters an evaluation reads, warm-ups included (0: unknown)
    vocab_size: int = 0  # characters in the vocabulary (0: unknown)

    def shape(self, config: TrainConfig) -> length.StreamShape:
        """The streams' shape on this split: fewer rows for a short one (training.length)."""
        if self.train_chars < 2:
            return length.StreamShape(config.batch_size, config.seq_len)
        return length.fit_shape(self.train_chars, config.batch_size, config.seq_len)

    def windows(self, config: TrainConfig) -> int | None:
        """Training windows in one pass over the split (None: its size is unknown)."""
        if self.train_chars < 2:
            return None
        return length.windows_per_pass(self.train_chars, self.shape(config))


@dataclass(frozen=True)
class Plan:
    config: RunConfig  # every setting decided
    chosen: dict[str, Any]  # by name: what the plan moved from the default, and a measured width
    why: str  # what the choice rests on
    expected_chars: float | None = None  # characters the run is expected to train
    passes: float | None = None  # ...as passes over the training split
    from_passes: list[str] = field(default_factory=list)  # the settings `replan` may change
    kept: str = ""  # a default the plan kept on the evidence, named in the notice

    @property
    def notice(self) -> str | None:
        """One line for the user, when the plan measured the width or changed anything else
        from the defaults."""
        if not self.chosen:
            return None
        what = ", ".join(
            f"{value} autocast" if name == "precision" else f"{name.replace('_', ' ')} {value}"
            for name, value in self.chosen.items()
        )
        kept = f"; {self.kept}" if self.kept else ""
        return f"planned for {self.why}: {what}{kept} (a setting given explicitly wins)"

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps of the plan (`charnn info` shows it)."""
        return {"chosen": self.chosen, "why": self.why, "expected_chars": self.expected_chars,
                "passes": self.passes, "from_passes": self.from_passes}  # fmt: skip


def plan_run(request: TrainConfig, facts: Facts | None = None) -> Plan:
    """Decide every setting left unset in `request`."""
    facts = facts or Facts()
    budget = request.time_budget
    unset = {name for name in (*PLANNED_MODEL, *PLANNED) if value_of(request, name) is None}
    wanted: dict[str, Any] = {}
    reasons = []
    if budget is not None:
        reasons.append(f"a {duration_words(budget)} budget")
        if facts.native_bf16:
            wanted["precision"] = "bf16"
            reasons.append("a CPU that multiplies bf16 in hardware")
    if facts.vocab_size:
        wanted["embed_size"] = embed_width(facts.vocab_size)
    width = request.model.hidden_size
    if width is None and budget is not None:  # without a budget, speeds choose nothing
        measured = [w for w in WIDTHS if w in facts.widths]
        fitting = [w for w in measured if affordable(request, facts, w)]
        width = max(fitting) if fitting else min(measured) if measured else None
        wanted["hidden_size"] = width
    chars = expected_chars(request, facts, width or FALLBACK_WIDTH)
    passes = chars / facts.train_chars if chars is not None and facts.train_chars else None
    wanted["eval_every"] = eval_interval(request, facts)
    if passes is not None:
        reasons.append(f"{passes:.1f} passes over {facts.train_chars:,} training characters")
        every = request.eval_every or wanted["eval_every"] or RunConfig.eval_every
        wanted.update(regularisation(passes, every))
    chosen = {  # a width is only wanted when measured, and then named even if the default's
        name: value
        for name, value in wanted.items()
        if name in unset and value is not None
        and (value != default_of(name) or name == "hidden_size")
    }  # fmt: skip
    from_passes = sorted(unset & set(REGULARISED)) if passes is not None else []
    if "dropout" in from_passes and request.model.decoder_dropout is None:
        from_passes.append("decoder_dropout")  # it follows the dropout
    config = RunConfig.of(request, **chosen)
    kept = KEPT if budget is not None and keeps_the_lstm(request) else ""
    why = ", ".join(reasons) or "no time budget"
    return Plan(config, chosen, why, chars, passes, from_passes, kept)


def keeps_the_lstm(request: TrainConfig) -> bool:
    """Whether a run trains the default cell, with the averaging left to the plan."""
    return request.model.cell == ModelConfig.cell and request.average is None


def embed_width(vocab_size: int) -> int:
    """A character embedding's width for a vocabulary of `vocab_size` characters."""
    return ModelSpec.embed_size if vocab_size <= SMALL_VOCAB else WIDE_VOCAB_EMBED


def planned_model(config: TrainConfig, vocab_size: int, **chosen: Any) -> ModelSpec:
    """The model `config` asks for, with the embedding planned for the vocabulary (when unset),
    `chosen` and ModelSpec's defaults for the rest: what calibration times."""
    embed = config.model.embed_size or embed_width(vocab_size)
    return ModelSpec.of(config.model, embed_size=embed, vocab_size=vocab_size, **chosen)


def expected_chars(config: TrainConfig, facts: Facts, width: int) -> float | None:
    """Characters a run will train (training.length's rule), TRAINING_SHARE of its budget at
    the width's calibrated speed."""
    known = width in facts.widths
    speed = TRAINING_SHARE * facts.widths[width].chars_per_sec if known else None
    return length.expected_chars(config, facts.shape(config), facts.windows(config), speed)


def affordable(config: TrainConfig, facts: Facts, width: int) -> bool:
    """Whether a model this wide trains on enough characters per parameter (when measured)."""
    chars = expected_chars(config, facts, width)
    if chars is None:
        return False
    needed = next(need for start, need, _ in reversed(CHARS_PER_PARAMETER) if width >= start)
    parameters = facts.widths[width].parameters
    if width <= FALLBACK_WIDTH:  # too few steps, unless it reads the text often anyway
        reread = REREAD_PASSES * facts.train_chars if facts.train_chars else math.inf
        return chars >= min(reread, needed * parameters)
    useful = USEFUL_PASSES * facts.train_chars if facts.train_chars else math.inf
    return min(chars, useful) >= needed * parameters


def eval_interval(config: TrainConfig, facts: Facts) -> int | None:
    """Steps between evaluations: RunConfig's, or fewer where EVAL_PASSES passes over the
    training split take fewer, but never so few (in hundreds) that they take more than
    EVAL_SHARE of the training time, twice the cost where the weights' average is scored too
    (None when the validation split is unknown)."""
    if not facts.eval_chars_read:
        return None
    step_chars = config.batch_size * config.seq_len
    often = RunConfig.eval_every
    if facts.train_chars:
        often = min(often, _hundreds(EVAL_PASSES * facts.train_chars / step_chars))
    cost = EVAL_COST * (2 if config.average else 1)  # the live weights, and their average
    return max(often, _hundreds(facts.eval_chars_read * cost / (EVAL_SHARE * step_chars)))


def _hundreds(steps: float) -> int:
    """`steps` rounded up to hundreds, at least 100."""
    return max(100, math.ceil(steps / 100) * 100)


def needs_speeds(config: TrainConfig) -> bool:
    """Whether planning `config` needs the measured speeds (training.calibrate): a time budget
    decides the passes, and a setting that follows from them is unset."""
    unset = any(value_of(config, name) is None for name in FROM_PASSES)
    return config.time_budget is not None and unset


def regularisation(passes: float, eval_every: int = RunConfig.eval_every) -> dict[str, Any]:
    """Dropout, weight drop, patience and β1 for a run that will make `passes` over its text,
    evaluated every `eval_every` steps."""
    _, dropout, weight_drop = next(t for t in REGULARISATION_BY_PASSES if passes <= t[0])
    many = passes > MANY_PASSES
    beta1 = BETA1_MANY_PASSES if many else RunConfig.beta1
    patience = patience_for(eval_every) if many else 0
    return {"dropout": dropout, "weight_drop": weight_drop, "patience": patience, "beta1": beta1}


def patience_for(eval_every: int) -> int:
    """Evaluations without a new best before a run stops: PATIENCE, or as many more as cover the
    same steps where evaluations come more often than every RunConfig.eval_every steps (counted
    in evaluations alone, frequent ones stopped runs on a plateau)."""
    return max(PATIENCE, math.ceil(PATIENCE * RunConfig.eval_every / eval_every))


def replan(
    config: RunConfig,
    planned: Iterable[str],
    chars_per_sec: float,
    train_chars: int,
    shape: length.StreamShape | None = None,
) -> tuple[RunConfig, dict[str, Any], float]:
    """A time-budgeted run's regularisation re-decided from the speed it measured itself, which
    already counts the loop's costs (a few calibration steps can catch the machine in a slow
    second). Only the settings in `planned` (the plan's, not the user's) change; the width stays.
    `shape` is the streams' (default: as the plan fits it). Returns the config, what changed
    (name: value), and the passes it rests on."""
    shape = shape or Facts(train_chars).shape(config)
    windows = length.windows_per_pass(train_chars, shape)
    chars = length.expected_chars(config, shape, windows, chars_per_sec)
    if config.time_budget is None or chars is None:
        raise ValueError("only a time-budgeted run is re-planned")
    passes, planned = chars / train_chars, set(planned)
    wanted = regularisation(passes, config.eval_every)
    wanted["decoder_dropout"] = decoder_dropout(wanted["dropout"], config.model.layers)
    changed = {k: v for k, v in wanted.items() if k in planned and value_of(config, k) != v}
    model = replace(config.model, **{k: v for k, v in changed.items() if k in MODEL_FIELDS})
    rest = {k: v for k, v in changed.items() if k not in MODEL_FIELDS}
    return replace(config, model=model, **rest), changed, passes


def value_of(config: TrainConfig, name: str) -> Any:
    return getattr(config.model if name in MODEL_FIELDS else config, name)


def default_of(name: str) -> Any:
    """What an unplanned setting becomes."""
    return getattr(ModelSpec if name in MODEL_FIELDS else RunConfig, name)


def by_passes(setting: str) -> str:
    """REGULARISATION_BY_PASSES for "dropout" or "weight_drop", in words (for --help)."""
    column = 1 if setting == "dropout" else 2
    steps: list[tuple[float, float]] = []  # (up to passes, value), equal neighbours merged
    for tier in REGULARISATION_BY_PASSES:
        if steps and steps[-1][1] == tier[column]:
            steps[-1] = (tier[0], tier[column])
        else:
            steps.append((tier[0], tier[column]))
    words = [f"{value:g} up to {limit:g}" for limit, value in steps[:-1]]
    words[0] += " passes over the text"
    return ", ".join([*words, f"then {steps[-1][1]:g}"])


def duration_words(seconds: float) -> str:
    """3600 -> '1h', 330 -> '5m30s', 70 -> '1m10s', 45 -> '45s'."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts) or "0s"
