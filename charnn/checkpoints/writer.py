"""The one writer of a run folder (rank 0): checkpoints, their rotation, and metrics.jsonl.

A save writes last.pt (best.pt on a new best, a snapshot with keep), each atomically, and only
then appends its metrics line: a run killed at any moment leaves a folder whose every metrics
line has a checkpoint behind it. Old snapshots are removed only after the new one is written, so
a kill between the two leaves one more than `keep`, until the next save prunes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charnn.checkpoints.folder import BEST, LAST, METRICS_LOG, snapshot_name, snapshots
from charnn.checkpoints.format import save_atomic


class RunWriter:
    """The one writer of a run folder (rank 0): checkpoints, their rotation, and metrics.jsonl."""

    def __init__(self, folder: Path, keep: int = 0) -> None:
        self.folder = folder
        self.keep = keep  # older step-N.pt snapshots kept besides last.pt and best.pt

    def remove_stale(self) -> None:
        """Temporary files half-written by a killed run."""
        for stale in self.folder.glob(".*.tmp"):
            stale.unlink()

    def save(
        self,
        payload: dict[str, Any],
        metrics: dict[str, Any],
        best: bool,
        best_payload: dict[str, Any] | None = None,
    ) -> list[Path]:
        """Write the checkpoints (best.pt from `best_payload` where given), then the metrics
        line; returns the checkpoint paths written."""
        written = [self.folder / LAST]
        if best:
            written.append(self.folder / BEST)
        if self.keep > 0:
            written.append(self.folder / snapshot_name(payload["step"]))
        for path in written:
            save_atomic(best_payload if path.name == BEST and best_payload else payload, path)
        if self.keep > 0:
            for old in snapshots(self.folder)[: -self.keep]:
                old.unlink()
        with open(self.folder / METRICS_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps({"step": payload["step"], **metrics}) + "\n")
        return written
