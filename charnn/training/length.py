"""How long a run lasts and how its learning rate moves: warm-up, then a decay to zero.

One rule decides when a run ends: the first of its limits reached, `max_steps`, `epochs` and
`time_budget` (DEFAULT_EPOCHS when none is set). The plan asks it how many characters a run
will train; the trainer asks it how far through the run it is. Both count a pass in the
windows of the shape the streams really take (`fit_shape`: a short text gets fewer rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from charnn.config.train import RunConfig, TrainConfig
from charnn.errors import CharnnError

DEFAULT_EPOCHS = 10  # when no max_steps, epochs or time_budget is given
WARMUP = 0.02  # fraction of training spent raising the learning rate from zero


@dataclass(frozen=True)
class StreamShape:
    batch_size: int  # B: rows
    seq_len: int  # T: characters per window

    @property
    def chars_per_window(self) -> int:
        return self.batch_size * self.seq_len


def fit_shape(n_chars: int, batch_size: int, seq_len: int, multiple: int = 1) -> StreamShape:
    """The shape itself, or for a text of `n_chars` too short to give each of B rows a window of
    T: fewer rows, each read as one window of its whole length (none of the text left out).

    B stays a multiple of `multiple` (the number of processes sharing the rows).
    """
    targets = n_chars - 1
    if targets < multiple:
        raise CharnnError("the training split needs at least two characters per process")
    if batch_size <= targets // seq_len:
        return StreamShape(batch_size, seq_len)
    fitted = targets // seq_len
    batch_size = max(multiple, fitted - fitted % multiple)
    return StreamShape(batch_size, targets // batch_size)


def windows_per_pass(train_chars: int, shape: StreamShape) -> int:
    """Windows in one pass of the shape's streams over the text."""
    return ((train_chars - 1) // shape.batch_size) // shape.seq_len


def step_limit(config: TrainConfig, windows: int | None) -> int | None:
    """The steps a run may take, `windows` a pass (None: unknown, so epochs say nothing);
    None where the time budget alone ends it."""
    limits = [] if config.max_steps is None else [config.max_steps]
    if windows is not None and config.epochs is not None:
        limits.append(max(1, round(config.epochs * windows)))
    if windows is not None and (config.max_steps, config.epochs, config.time_budget) == (None,) * 3:
        limits.append(DEFAULT_EPOCHS * windows)
    return min(limits) if limits else None


def expected_chars(
    config: TrainConfig,
    shape: StreamShape,
    windows: int | None,
    chars_per_sec: float | None,
) -> float | None:
    """Characters a run will train in windows of `shape`, `windows` a pass: the first of its
    limits reached, in steps or in seconds at `chars_per_sec` (None when none can be counted)."""
    steps = step_limit(config, windows)
    limits = [] if steps is None else [float(steps * shape.chars_per_window)]
    if config.time_budget is not None and chars_per_sec is not None:
        limits.append(config.time_budget * chars_per_sec)
    return min(limits) if limits and all(math.isfinite(x) for x in limits) else None


def lr_at(fraction: float, peak: float, decay: str = RunConfig.lr_decay) -> float:
    """Linear warm-up, then a linear (or cosine) decay to zero at the end of the run."""
    if fraction < WARMUP:
        return peak * fraction / WARMUP
    done = (min(fraction, 1.0) - WARMUP) / (1.0 - WARMUP)  # of the decay
    if decay == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * done))
    return peak * (1.0 - done)


class Schedule:
    """A run's length in steps and/or seconds (the first limit reached ends it)."""

    def __init__(self, config: RunConfig, windows_per_pass: int) -> None:
        self.time_budget = config.time_budget
        self.peak_lr = config.lr
        self.decay = config.lr_decay
        self.total_steps = step_limit(config, windows_per_pass)  # None: time decides

    def fraction(self, step: int, elapsed: float) -> float:
        """How far through the run we are: the further of steps done and time used."""
        fractions = [0.0]
        if self.total_steps is not None:
            fractions.append(step / self.total_steps)
        if self.time_budget is not None:
            fractions.append(elapsed / self.time_budget)
        return max(fractions)

    def lr(self, fraction: float) -> float:
        return lr_at(fraction, self.peak_lr, self.decay)
