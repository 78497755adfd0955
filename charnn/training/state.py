"""The random number generators training draws from, as checkpoint-safe values.

Training draws only from PyTorch's generators (initialisation, dropout masks). Python's and
NumPy's global generators are left alone: saving them would store state that nothing uses and
that differs between two identical runs (they are seeded from the operating system).
"""

from __future__ import annotations

from typing import Any

import torch


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
