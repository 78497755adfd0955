"""How long a run lasts and how its learning rate moves: warm-up, then a decay to zero."""

from __future__ import annotations

import math

from charnn.config.train import FALLBACK, TrainConfig, decided
from charnn.training.plan import DEFAULT_EPOCHS

WARMUP = 0.02  # fraction of training spent raising the learning rate from zero


def lr_at(fraction: float, peak: float, decay: str = FALLBACK["lr_decay"]) -> float:
    """Linear warm-up, then a linear (or cosine) decay to zero at the end of the run."""
    if fraction < WARMUP:
        return peak * fraction / WARMUP
    done = (min(fraction, 1.0) - WARMUP) / (1.0 - WARMUP)  # of the decay
    if decay == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * done))
    return peak * (1.0 - done)


class Schedule:
    """A run's length in steps and/or seconds (the first limit reached ends it)."""

    def __init__(self, config: TrainConfig, windows_per_pass: int) -> None:
        self.time_budget = config.time_budget
        self.peak_lr = config.lr
        self.decay = decided(config.complete().lr_decay)
        limits = []
        if config.max_steps is not None:
            limits.append(config.max_steps)
        if config.epochs is not None:
            limits.append(max(1, round(config.epochs * windows_per_pass)))
        if not limits and config.time_budget is None:
            limits.append(DEFAULT_EPOCHS * windows_per_pass)
        self.total_steps: int | None = min(limits) if limits else None  # None: time decides

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
