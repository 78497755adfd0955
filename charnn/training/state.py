"""Where a run stands, beyond its weights and optimizer: the one record a resume needs.

`RunState` is saved whole in every checkpoint (its "step" beside the weights, the rest under
"resume") and restored whole, so a resumed run continues exactly where the saved one stopped.
Training draws only from PyTorch's generators (initialisation, dropout masks), so theirs are the
random state saved; Python's and NumPy's are left alone (nothing draws from them, and saving
them would make two identical runs' checkpoints differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

# Older checkpoints lack these: what such a run had (windows as in the first pass, no patience)
SAVED_LATER = {"pass_index": 0, "evals_since_best": 0, "grad_scaler": {}}
SAVED_AS = {"pass_index": "pass"}  # a field's key in the checkpoint, where it differs


@dataclass
class RunState:
    step: int = 0
    window: int = 0  # next window of the current pass
    pass_index: int = 0  # passes over the training split begun, less one
    # the carried state of all B streams (h, or h and C, each (layers, B, H)); None at a pass's
    # start. A torchrun rank carries only its rows: the trainer gathers them before saving
    hidden: list[torch.Tensor] | None = None
    elapsed: float = 0.0  # training seconds spent before this process started
    lr_scale: float = 1.0  # halved by each skipped non-finite batch (on_nan "skip")
    best_val_bpc: float = math.inf
    last_val_bpc: float = math.nan
    evals_since_best: int = 0  # for patience
    grad_scaler: dict[str, Any] = field(default_factory=dict)  # fp16's loss scale; else empty
    rng: dict[str, Any] = field(default_factory=dict)  # PyTorch's generators (capture_rng)

    def saved(self) -> dict[str, Any]:
        """The checkpoint's "resume" record (the step is saved beside the weights)."""
        record = {SAVED_AS.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}
        del record["step"]
        return record

    @classmethod
    def restored(cls, step: int, record: dict[str, Any]) -> RunState:
        """The state a checkpoint saved: its step and its "resume" record."""
        values = {
            f.name: record.get(SAVED_AS.get(f.name, f.name), SAVED_LATER.get(f.name))
            if f.name in SAVED_LATER
            else record[SAVED_AS.get(f.name, f.name)]
            for f in fields(cls)
            if f.name != "step"
        }
        return cls(step=step, **values)


def capture_rng() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what `capture_rng` saved (a checkpoint's older python/numpy entries are unused)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
