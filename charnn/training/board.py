"""Training curves in TensorBoard (the `tensorboard` extra): what a run logs, where TensorBoard
reads it.

    tensorboard --logdir runs/        # then open http://localhost:6006

At each progress report: train/bits_per_char, train/learning_rate, train/chars_per_sec and
train/grad_norm; at each evaluation: val/bits_per_char and a short sample (text), so the text
can be watched improving; at the start, the plan (text). A resumed run writes on into the same
folder from its step on: what the stopped run logged past its last save is dropped (TensorBoard's
purge step, just past the saved step), so the curves continue as one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from charnn.errors import SettingError, literal

EXTRA_HINT = "{tensorboard} needs the tensorboard extra: pip install 'charnn[tensorboard]'"


class Board:
    """One run's TensorBoard event files; refuses, before training starts, a folder it cannot
    write or a missing extra."""

    def __init__(self, folder: str | Path, start_step: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SettingError(EXTRA_HINT) from None
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".charnn-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise SettingError(
                f"cannot write TensorBoard's files in {literal(folder)} ({literal(err.strerror)}):"
                " choose another {tensorboard} folder"
            ) from None
        # purge_step drops the events at it and after: keep those of the saved step itself
        purge = start_step + 1 if start_step else None
        self.writer = SummaryWriter(str(folder), purge_step=purge, flush_secs=10)

    def plan(self, record: dict[str, Any] | None, settings: dict[str, Any], step: int) -> None:
        shown = {"plan": record, "settings": settings}
        text = json.dumps(shown, indent=2, default=str, ensure_ascii=False)
        self.writer.add_text("run/plan", f"```\n{text}\n```", step)

    def progress(
        self, step: int, train_loss: float, lr: float, chars_per_sec: float, grad_norm: float
    ) -> None:
        values = {"train/bits_per_char": train_loss / math.log(2), "train/learning_rate": lr,
                  "train/chars_per_sec": chars_per_sec, "train/grad_norm": grad_norm}  # fmt: skip
        for name, value in values.items():
            if math.isfinite(value):
                self.writer.add_scalar(name, value, step)

    def evaluated(self, step: int, val_bpc: float, sample: str) -> None:
        self.writer.add_scalar("val/bits_per_char", val_bpc, step)
        self.writer.add_text("val/sample", f"```\n{sample}\n```", step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
