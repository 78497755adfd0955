"""The one writer of a run folder (rank 0): checkpoints, their rotation, and metrics.jsonl.

A save writes last.pt (best.pt on a new best, step-N.pt with --keep), each atomically, and only
then appends its metrics line: a run killed at any moment leaves a folder whose every metrics
line has a checkpoint behind it. Old snapshots are removed only after the new one is written, so
a kill between the two leaves one more than --keep, until the next save prunes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charnn.checkpoints.format import save_atomic
from charnn.fileio import BEST, LAST, METRICS_LOG


class RunWriter:
    def __init__(self, run_dir: Path, keep: int = 0) -> None:
        self.run_dir = run_dir
        self.keep = keep  # older step-N.pt snapshots kept besides last.pt and best.pt

    def remove_stale(self) -> None:
        """Temporary files half-written by a killed run."""
        for stale in self.run_dir.glob(".*.tmp"):
            stale.unlink()

    def save(self, payload: dict[str, Any], metrics: dict[str, Any], best: bool) -> list[Path]:
        """Write the checkpoints, then the metrics line; returns the checkpoint paths written."""
        written = [self.run_dir / LAST]
        if best:
            written.append(self.run_dir / BEST)
        if self.keep > 0:
            written.append(self.run_dir / f"step-{payload['step']:08d}.pt")
        for path in written:
            save_atomic(payload, path)
        if self.keep > 0:
            for old in sorted(self.run_dir.glob("step-*.pt"))[: -self.keep]:
                old.unlink()
        with open(self.run_dir / METRICS_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps({"step": payload["step"], **metrics}) + "\n")
        return written
