"""Planning a run: the settings left as None get values chosen for this text, budget and machine.

One pure function decides them, for the CLI and the Python API alike; a setting given a value is
never changed. What it rests on (`Facts`) is measured before the run: the size of the training
split and, for a time budget, how fast each candidate width trains here (training.calibrate).

- **Width**: with a time budget, the widest model that still trains on at least
  CHARS_PER_PARAMETER characters per parameter (WIDE_CHARS_PER_PARAMETER from WIDE_FROM on). A
  wider model learns more per character but sees fewer of them; on the development machine it
  picks 2x256 up to 2 minutes and 2x384 at 5 and 10 minutes, what measured best
  (bench/RESULTS.md). At most USEFUL_PASSES passes over the text count: a text read again
  teaches less each time. 2x128 only where 2x256 would train under MIN_CHARS_PER_PARAMETER (a
  short budget on a slow CPU) and read its text fewer than REREAD_PASSES times. Without a
  budget: 256.
- **Dropout and DropConnect**: from the passes over the training split the run will make: a
  model that sees its text many times memorises it unless regularised. Beyond 20 passes dropout
  alone no longer holds it (a 0.1 MB text at 2 minutes, 21-38 passes: 2.29 bits/char with
  dropout 0.3, 2.09 with DropConnect 0.2 on the recurrent weights as well; bench/RESULTS.md),
  and past 35 passes both go up to 0.5.
- **Patience**: a run past MANY_PASSES stops once it stops improving (best.pt keeps its best).
- **AdamW's β1**: 0.5, a short memory of past gradients, up to MANY_PASSES; 0.9 beyond.
- **Re-planned once**: a time-budgeted run measures its own speed over REPLAN_AT of its budget
  and re-decides its regularisation from the passes it will really make (`replan`).
- **Evaluations**: every 1000 steps or every EVAL_PASSES passes over a small text, whichever
  comes first (a small text is memorised between two evaluations 1000 steps apart), but further
  apart where that would spend more than EVAL_SHARE of the training time on them (a big
  corpus's sampled validation split took a fifth of it).
- **Precision**: bf16 autocast under a time budget where the CPU multiplies bf16 in hardware:
  about 1.2-1.4x the steps in the same time, and lower bits/char.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from charnn.config.train import FALLBACK, TrainConfig

DEFAULT_EPOCHS = 10  # when no --max-steps, --epochs or --time-budget is given
# the widths a time budget chooses from, narrowest first
WIDTHS = (128, 256, 384, 512, 768, 1024)
# 1.0 chose 2x384 at 2 minutes, 3.5-6.5% worse than 2x256 (3 corpora); 1.5 chose 2x512 at 10
# minutes (1.9 characters per parameter), 5.8% worse than 2x384 on the Russian corpus (and on
# pydoc); 2x384 at 5 minutes on tinyshakespeare (2.7) beat 2x256 by 2%
CHARS_PER_PARAMETER = 2.0
# Wider than WIDE_FROM only on WIDE_CHARS_PER_PARAMETER: 2x512, planned at 1.9-3.0 characters
# per parameter, was never better than 2x384 in the same budget, and with half its steps it
# falls short when the machine slows after the calibration: 5-6% worse on pydoc, the Russian
# text and the code corpus, even on tinyshakespeare at 5 and 10 minutes on the development
# machine; on a faster one 1.979-2.006 in five 10-minute runs of the defaults, where 2x384
# reached 1.972-1.995 in eight (bench/RESULTS.md, "Any corpus" and "Twenty-second pass").
WIDE_FROM = 512
WIDE_CHARS_PER_PARAMETER = 4.0
# Narrower than FALLBACK's 256 only where it would train under MIN_CHARS_PER_PARAMETER (every
# character counted, read once or again): a budget too short for enough steps. On a CPU 4x
# slower than the development machine (an AVX2-only EPYC, fp32), 2x128 beat 2x256 where 2x256
# trained 0.7-0.8 characters per parameter (tinyshakespeare 70 s: 2.2763 against 2.3496; pydoc
# 1 minute: 1.7639 against 1.7864) and lost at 1.3-1.4 (pydoc 2 minutes: 1.6857 against
# 1.6547; tinyshakespeare 2 minutes); on the development machine 2x256 got 1.9 or more at every
# budget, and at 1.7-2.3 beat 2x128 on four corpora (bench/RESULTS.md, "Any corpus" and
# "Twelfth pass"). Not where 2x256 reads its text REREAD_PASSES times or more: the steps it
# lacks would read the same text again. 50,000 characters for 2 minutes 30 seconds (28-29
# passes for 2x256, 74-78 for 2x128): 2x256 won by 4.3% (Russian) and 1.7% (tinyshakespeare)
# and lost by 1.2% (code); Vim's manual for 2 minutes (11 and 27 passes): 2x256 won by 2.1%
# ("Nineteenth pass"). 100,000 characters for 1 minute (2x256 at 0.8-1.1 characters per
# parameter and 8-11 passes, 2x128 at 17-26), two seeds each: 2x256 won by 9-11% on pydoc, 6% on
# Russian text and 2% on tinyshakespeare, and lost by 0.6-1.8% on Vim's manual and 1.4-4.4% on
# code; at 4 passes 2x256 had lost by 4.4% (Vim's manual, the slowest CPU) ("Twenty-eighth
# pass").
MIN_CHARS_PER_PARAMETER = 1.0
REREAD_PASSES = 5.0
TRAINING_SHARE = 0.85  # of a budget spent on training steps at the calibrated speed (evaluations)
# A text read again teaches less each time (Muennighoff et al. 2023): the width rule counts at
# most USEFUL_PASSES passes over it. Counting all chose 2x512 for 10 minutes on 0.47 MB (15
# passes: 1.5740 bits/char at best) where 2x384 reached 1.4861, and on 0.1 MB (62 passes:
# 2.6451) where 2x256 reached 2.0702 at best; tinyshakespeare's 2x512 at 10 minutes reads its
# text 6 times (bench/RESULTS.md, "Any corpus").
USEFUL_PASSES = 10.0
# Past MANY_PASSES a run starts to memorise: DropConnect comes on, and the run stops after
# PATIENCE evaluations 1000 steps apart without a new best (best.pt holds the best); as many
# more as cover as many steps where evaluations come more often (`patience_for`).
MANY_PASSES = 20.0
PATIENCE = 3
# (passes over the training split up to, dropout, weight drop): on tinyshakespeare no dropout was
# best at 2-2.6 passes (70 s: 0.1 and 0.2 lost); at 3.5 passes none and 0.1 were even and both beat
# 0.2 by 1.0-1.7% (pydoc and tinyshakespeare in the same steps); 0.1 led 0.2 in every pair between
# 3.5 and 5.5 passes (by 0.3-1.8%), and at the switch, 7, they were within 0.3% (pydoc even,
# tinyshakespeare 0.1). 0.2 beat 0.3 at 9 passes in the same steps (pydoc, two seeds;
# tinyshakespeare's 10 minutes), 0.3 beat 0.2 at 18 (pydoc), and at 12 they were even. Since the
# decoder gets half the dropout, 0.3 beat 0.2 in all three pairs at 12 passes (pydoc by 2.4% and
# 0.5%, two seeds; tinyshakespeare's 2x384 by 0.2%), and at 10 won on pydoc (1.0%, 0.3%) and
# lost on tinyshakespeare (0.6%): the switch is now midway, at 11 ("Twenty-fifth pass").
# DropConnect 0.1 at 7-11 passes gained 0.5-1.0% in the same steps but trained 11-24% fewer steps in
# a budget, and lost three 2-minute budgets of four (pydoc); past 20 passes DropConnect comes on;
# and past 35 passes both at 0.5, AWD-LSTM's strength (0.1 MB for 10 minutes, 196 passes: best
# 1.97 bits/char with 0.5 and 0.5, 2.07 with 0.3 and 0.2). In pairs run one after the other on
# one CPU, 0.5 and 0.5 led 0.3 and 0.2 by 1.5-5.3% at 36-40 passes (50,000 characters each of
# pydoc, Russian text and code) and by 1.4-6.4% at 49-60 (those three, Vim's manual); where
# dropout 0.5 with DropConnect 0.2 led at 49-60, 0.5 and 0.5 was within 1% of it
# (bench/RESULTS.md, "Ninth pass", "Tenth pass" and "Eighteenth pass").
REGULARISATION_BY_PASSES = (
    (3.5, 0.0, 0.0),
    (7.0, 0.1, 0.0),
    (11.0, 0.2, 0.0),
    (MANY_PASSES, 0.3, 0.0),
    (35.0, 0.3, 0.2),
    (math.inf, 0.5, 0.5),
)
# AdamW's β1, how long a memory of past gradients its steps follow: 0.5 trained better than
# Adam's usual 0.9 in the same steps on every text read fewer than MANY_PASSES times (0.5-9
# passes: 1.6-2.0% on tinyshakespeare, 0.6-2.6% on pydoc, 5.4% on the Russian text, 0.7% on the
# code corpus; 0.3% at 5 passes of 2x384, even at 9.3), but worse on one read 32 times under
# DropConnect (Vim's manual: best 2.0708 against 2.0326), where a run memorises
# (bench/RESULTS.md, "Eleventh pass").
BETA1_MANY_PASSES = 0.9  # past MANY_PASSES; below, FALLBACK's 0.5
# An evaluation reads its text forward only, many streams side by side: per character read it
# took EVAL_COST of a training character's time (2x256 and 2x384, bf16 training and fp32
# evaluation, this 2-core CPU; bench/RESULTS.md, "Seventh pass"). Evaluations come at most as
# often as leaves EVAL_SHARE of the training time to them. Every 1000 steps, a 2x256 model's
# evaluation of 250,000 characters sampled from a big corpus's split (4.4 s) cost a fifth of
# its training time (23 s): 2 minutes on 9 MB of code trained 4,197 steps to 1.8299 bits/char,
# and 5,027 steps to 1.7748 with evaluations planned so.
EVAL_COST = 0.5
EVAL_SHARE = 0.05
# A small text is memorised between two evaluations 1000 steps apart: 2x256 for 5 minutes on
# 45,000 training characters of pydoc (dropout 0.3, DropConnect 0.2; 23 passes per 1000 steps)
# was best at step 700, 16 passes (2.4074 bits/char), and worse at every evaluation after; the
# evaluations at every 1000 steps kept 2.4769 (bench/RESULTS.md, "Eighteenth pass"). So they
# come at least every EVAL_PASSES passes over the training split (in hundreds of steps).
EVAL_PASSES = 2.0
MODEL_FIELDS = ("hidden_size", "dropout", "weight_drop")
REGULARISED = ("dropout", "weight_drop", "patience", "beta1")  # what follows from the passes alone
FROM_PASSES = ("hidden_size", *REGULARISED)  # ...and the width
# A time-budgeted run re-decides its REGULARISED settings from its own speed once it has spent
# REPLAN_AT of its budget (replan).
REPLAN_AT = 0.1


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


@dataclass(frozen=True)
class Plan:
    config: TrainConfig  # every setting decided
    chosen: dict[str, Any]  # by name: what the plan moved from FALLBACK, and a measured width
    why: str  # what the choice rests on
    expected_chars: float | None = None  # characters the run is expected to train
    passes: float | None = None  # ...as passes over the training split
    from_passes: list[str] = field(default_factory=list)  # the REGULARISED settings it planned

    @property
    def notice(self) -> str | None:
        """One line for the user, when the plan measured the width or changed anything else
        from the fallbacks."""
        if not self.chosen:
            return None
        what = ", ".join(
            f"{value} autocast" if name == "precision" else f"{name.replace('_', ' ')} {value}"
            for name, value in self.chosen.items()
        )
        return f"planned for {self.why}: {what} (a flag given explicitly wins)"

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps of the plan (`charnn info` shows it)."""
        return {"chosen": self.chosen, "why": self.why, "expected_chars": self.expected_chars,
                "passes": self.passes, "from_passes": self.from_passes}  # fmt: skip


def saved_plan(record: Any) -> dict[str, Any] | None:
    """A checkpoint's plan (Plan.record, and the "replanned" the trainer adds) where it is one,
    else None: a hand-edited file can hold anything there, and neither `charnn info` nor a
    resumed run may trip on it."""
    if not isinstance(record, dict):
        return None
    from_passes = record.get("from_passes", [])  # older checkpoints: none
    again = record.get("replanned")
    well_formed = (
        isinstance(record.get("chosen"), dict)
        and isinstance(record.get("why"), str)
        and all(_number_or_none(record.get(name)) for name in ("expected_chars", "passes"))
        and isinstance(from_passes, list)
        and all(isinstance(name, str) for name in from_passes)
        and (again is None or _replanned(again))
    )
    return record if well_formed else None


def _replanned(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("step"), int)
        and all(_number(record.get(name)) for name in ("passes", "chars_per_sec"))
        and isinstance(record.get("changed"), dict)
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_or_none(value: Any) -> bool:
    return value is None or _number(value)


def expected_chars(config: TrainConfig, facts: Facts, width: int) -> float | None:
    """Characters a run will train: the first of its limits (None when it cannot be known),
    TRAINING_SHARE of its budget at the width's calibrated speed."""
    known = width in facts.widths
    speed = TRAINING_SHARE * facts.widths[width].chars_per_sec if known else None
    return chars_within_limits(config, facts.train_chars, speed)


def chars_within_limits(
    config: TrainConfig, train_chars: int, chars_per_sec: float | None
) -> float | None:
    """Characters a run training `chars_per_sec` will train: the first of its limits."""
    limits = []
    if config.max_steps is not None:
        limits.append(float(config.max_steps * config.batch_size * config.seq_len))
    if config.epochs is not None and train_chars:
        limits.append(config.epochs * train_chars)
    if config.time_budget is not None and chars_per_sec is not None:
        limits.append(config.time_budget * chars_per_sec)
    if config.time_budget is None and config.max_steps is None and config.epochs is None:
        limits.append(float(DEFAULT_EPOCHS * train_chars))
    return min(limits) if limits and all(math.isfinite(x) for x in limits) else None


def affordable(config: TrainConfig, facts: Facts, width: int) -> bool:
    """Whether a model this wide gets enough characters per parameter (when measured): up to
    FALLBACK's width MIN_CHARS_PER_PARAMETER of all it trains or REREAD_PASSES passes over the
    training split, and wider CHARS_PER_PARAMETER (from WIDE_FROM, WIDE_CHARS_PER_PARAMETER)
    counting at most USEFUL_PASSES passes."""
    chars = expected_chars(config, facts, width)
    if chars is None:
        return False
    parameters = facts.widths[width].parameters
    if width <= FALLBACK["hidden_size"]:  # too few steps, unless it reads the text often anyway
        reread = REREAD_PASSES * facts.train_chars if facts.train_chars else math.inf
        return chars >= min(reread, MIN_CHARS_PER_PARAMETER * parameters)
    useful = USEFUL_PASSES * facts.train_chars if facts.train_chars else math.inf
    needed = WIDE_CHARS_PER_PARAMETER if width >= WIDE_FROM else CHARS_PER_PARAMETER
    return min(chars, useful) >= needed * parameters


def eval_interval(config: TrainConfig, facts: Facts) -> int | None:
    """Steps between evaluations: FALLBACK's, or fewer where EVAL_PASSES passes over the training
    split take fewer, but never so few (in hundreds) that they take more than EVAL_SHARE of the
    training time (None when the validation split is unknown)."""
    if not facts.eval_chars_read:
        return None
    step_chars = config.batch_size * config.seq_len
    often = FALLBACK["eval_every"]
    if facts.train_chars:
        often = min(often, _hundreds(EVAL_PASSES * facts.train_chars / step_chars))
    return max(often, _hundreds(facts.eval_chars_read * EVAL_COST / (EVAL_SHARE * step_chars)))


def _hundreds(steps: float) -> int:
    """`steps` rounded up to hundreds, at least 100."""
    return max(100, math.ceil(steps / 100) * 100)


def needs_speeds(config: TrainConfig) -> bool:
    """Whether planning `config` needs the measured speeds (training.calibrate): a time budget
    decides the passes, and a setting that follows from them is unset."""
    unset = any(_value(config, name) is None for name in FROM_PASSES)
    return config.time_budget is not None and unset


def plan_run(config: TrainConfig, facts: Facts | None = None) -> Plan:
    """Decide every setting left as None in `config`."""
    facts = facts or Facts()
    budget = config.time_budget
    unset = {name for name in FALLBACK if _value(config, name) is None}
    wanted: dict[str, Any] = {}
    reasons = []
    if budget is not None:
        reasons.append(f"a {_duration(budget)} budget")
        if facts.native_bf16:
            wanted["precision"] = "bf16"
            reasons.append("a CPU that multiplies bf16 in hardware")
    width = _value(config, "hidden_size")
    if width is None and budget is not None:  # without a budget, speeds choose nothing
        measured = [w for w in WIDTHS if w in facts.widths]
        fitting = [w for w in measured if affordable(config, facts, w)]
        width = max(fitting) if fitting else min(measured) if measured else None
        wanted["hidden_size"] = width
    chars = expected_chars(config, facts, width or FALLBACK["hidden_size"])
    passes = chars / facts.train_chars if chars is not None and facts.train_chars else None
    wanted["eval_every"] = eval_interval(config, facts)
    if passes is not None:
        reasons.append(f"{passes:.1f} passes over {facts.train_chars:,} training characters")
        every = config.eval_every or wanted["eval_every"] or FALLBACK["eval_every"]
        wanted.update(regularisation(passes, every))
    chosen = {  # a width is only wanted when measured, and then named even if the fallback's
        name: value
        for name, value in wanted.items()
        if name in unset
        and value is not None
        and (value != FALLBACK[name] or name == "hidden_size")
    }
    planned = _with(config, chosen).complete()
    why = ", ".join(reasons) or "no time budget"
    from_passes = sorted(unset & set(REGULARISED)) if passes is not None else []
    return Plan(planned, chosen, why, chars, passes, from_passes)


def regularisation(passes: float, eval_every: int = FALLBACK["eval_every"]) -> dict[str, Any]:
    """Dropout, weight drop, patience and β1 for a run that will make `passes` over its text,
    evaluated every `eval_every` steps."""
    _, dropout, weight_drop = next(t for t in REGULARISATION_BY_PASSES if passes <= t[0])
    many = passes > MANY_PASSES
    beta1 = BETA1_MANY_PASSES if many else FALLBACK["beta1"]
    patience = patience_for(eval_every) if many else 0
    return {"dropout": dropout, "weight_drop": weight_drop, "patience": patience, "beta1": beta1}


def patience_for(eval_every: int) -> int:
    """Evaluations without a new best before a run stops: PATIENCE, or as many more as cover the
    same steps where evaluations come more often than FALLBACK's. Evaluated every 100 steps,
    2x256 on 45,000 characters of code (dropout and DropConnect 0.5) was best at step 1,000
    (2.1886 bits/char), not at the next 3 evaluations, and best again at 1,400 (2.1680)."""
    return max(PATIENCE, math.ceil(PATIENCE * FALLBACK["eval_every"] / eval_every))


def replan(
    config: TrainConfig, planned: Iterable[str], chars_per_sec: float, train_chars: int
) -> tuple[TrainConfig, dict[str, Any], float]:
    """A time-budgeted run's regularisation re-decided from the speed it measured itself.

    The calibration's few steps can catch the machine in a slow second (pydoc at 10 minutes was
    once planned for under 20 passes and made 24.8: 1.5787 bits/char without DropConnect, 1.4777
    with it). The run's own speed, over REPLAN_AT of its budget, already counts the loop's costs.
    Only the settings in `planned` (the plan's, not the user's) change; the width stays.
    Returns the config, what changed (name: value), and the passes it rests on."""
    chars = chars_within_limits(config, train_chars, chars_per_sec)
    if config.time_budget is None or chars is None:
        raise ValueError("only a time-budgeted run is re-planned")
    passes, planned = chars / train_chars, set(planned)
    every = config.eval_every or FALLBACK["eval_every"]
    wanted = {k: v for k, v in regularisation(passes, every).items() if k in planned}
    changed = {k: v for k, v in wanted.items() if _value(config, k) != v}
    return _with(config, changed), changed, passes


def _with(config: TrainConfig, settings: Mapping[str, Any]) -> TrainConfig:
    """`config` with `settings` (by name, model settings among them) set."""
    model = replace(config.model, **{k: v for k, v in settings.items() if k in MODEL_FIELDS})
    rest = {k: v for k, v in settings.items() if k not in MODEL_FIELDS}
    return replace(config, model=model, **rest)


def _value(config: TrainConfig, name: str) -> Any:
    return getattr(config.model if name in MODEL_FIELDS else config, name)


def _duration(seconds: float) -> str:
    """3600 -> '1h', 330 -> '5m30s', 70 -> '1m10s', 45 -> '45s'."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts) or "0s"
