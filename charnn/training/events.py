"""What training reports as it goes, and what it returns: plain data, no torch.

The trainer never prints; it emits these events through a callback, and the CLI (or any caller)
turns them into a progress bar or log lines. Drawing them needs none of the training stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from charnn.checkpoints.folder import BEST, LAST
from charnn.errors import SettingError


@dataclass(frozen=True)
class Progress:
    step: int
    fraction: float  # of the whole run, by steps or by time budget
    train_loss: float  # mean nats/char since the previous Progress event
    lr: float
    chars_per_sec: float
    elapsed: float
    remaining: float | None
    val_bpc: float | None  # the latest evaluation, if any
    grad_norm: float = math.nan  # the mean global gradient norm since the previous Progress


@dataclass(frozen=True)
class Evaluated:
    step: int
    train_loss: float
    val_bpc: float  # of the better weights: the live ones, or their average
    best: bool
    elapsed: float
    live_bpc: float | None = None  # each, where the run averages its weights
    average_bpc: float | None = None


@dataclass(frozen=True)
class Saved:
    path: Path


@dataclass(frozen=True)
class Notice:
    message: str  # in the library's words (settings named by field)
    template: str | None = None  # where it names settings: as a SettingError's template

    @classmethod
    def naming(cls, template: str) -> Notice:
        """A notice that names settings as `{field}`, for each front end to word its own way."""
        return cls(str(SettingError(template)), template)

    def render(self, name: Callable[[str], str]) -> str:
        return self.message if self.template is None else SettingError(self.template).render(name)


Event = Progress | Evaluated | Saved | Notice


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path | None
    steps: int
    best_val_bpc: float
    final_val_bpc: float
    elapsed: float
    interrupted: bool
    stopped_early: bool = False  # --patience ran out: no new best in that many evaluations

    @property
    def best_path(self) -> Path | None:
        return self.run_dir / BEST if self.run_dir else None

    @property
    def last_path(self) -> Path | None:
        return self.run_dir / LAST if self.run_dir else None
