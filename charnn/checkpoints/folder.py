"""The run folder: the one place that knows its files, claims and locks it, and finds runs under
a checkpoint folder (checkpoints.writer writes it, by these names).

    checkpoints/pydoc-lstm/
        best.pt            the best state by validation bits/char
        last.pt            the latest state (a resume continues from it)
        step-00001000.pt   older snapshots, with --keep
        metrics.jsonl      one JSON object per save
        .lock              held by the one process writing the folder

A folder holds a checkpoint when it has any of the three kinds. Where a checkpoint is asked of
a folder, that is its best.pt, else its last.pt, else its newest snapshot; a resume takes its
last.pt, else its newest snapshot.

Nothing here imports torch: listing runs and drawing progress stay light.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from charnn.errors import CharnnError, SettingError, literal

BEST, LAST = "best.pt", "last.pt"
SNAPSHOTS = "step-*.pt"
METRICS_LOG = "metrics.jsonl"
LOCK = ".lock"


def snapshot_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def snapshots(folder: Path) -> list[Path]:
    """The folder's step-N.pt snapshots, oldest first."""
    return sorted(path for path in folder.glob(SNAPSHOTS) if path.is_file())


def latest_checkpoint(folder: Path) -> Path | None:
    """The state a resume continues from: last.pt, else the newest snapshot."""
    if (folder / LAST).is_file():
        return folder / LAST
    saved = snapshots(folder)
    return saved[-1] if saved else None


def best_checkpoint(folder: Path) -> Path | None:
    """The checkpoint a folder stands for: best.pt, else the latest state."""
    return folder / BEST if (folder / BEST).is_file() else latest_checkpoint(folder)


def holds_checkpoint(folder: Path) -> bool:
    """Whether a folder holds a saved run (a run that failed before its first save does not)."""
    return folder.is_dir() and best_checkpoint(folder) is not None


def checkpoint_in(folder: Path) -> Path:
    """`best_checkpoint(folder)`, or one line saying why there is none."""
    found = best_checkpoint(folder)
    if found is not None:
        return found
    runs = run_folders(folder)
    if runs:
        raise CharnnError(
            f"{folder} holds runs, not a run's checkpoints: pass one of its run folders, such "
            f"as {runs[0]}"
        )
    raise CharnnError(f"run folder {folder} holds no {BEST}, {LAST} or step-N.pt snapshot")


def run_folders(root: Path) -> list[Path]:
    """The folders under `root` that hold a checkpoint, by name ([] where it cannot be read)."""
    try:
        return sorted(folder for folder in root.iterdir() if holds_checkpoint(folder))
    except OSError:  # no such folder, or one that cannot be listed
        return []


def modified(folder: Path) -> float:
    """When the folder's newest checkpoint was written (0: none is left: a run that keeps
    snapshots can remove one while we look)."""
    times = [0.0]
    for path in [folder / BEST, folder / LAST, *snapshots(folder)]:
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:
            continue
    return max(times)


def default_name(corpus: Path, cell: str) -> str:
    return f"{corpus.stem}-{cell}"


def claim(root: Path, name: str | None, base: str, folder: Path | None = None) -> Path:
    """A fresh run folder under `root`: `folder` or `root/name` if given, else `root/base`,
    numbered (`base-2`, ...) past those that exist. Never one that holds a checkpoint; one left
    by a run that failed before its first save is taken as new, its unsaved metrics cleared."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CharnnError(f"cannot create checkpoint folder {root}: {err.strerror}") from None
    folder = folder if folder is not None else root / name if name is not None else None
    if folder is not None:
        try:
            folder.mkdir()
        except FileExistsError:
            if holds_checkpoint(folder):
                raise SettingError(
                    f"run folder {literal(folder)} already exists: continue it with {{resume}} "
                    f"{literal(folder)}, or choose another {{name}}"
                ) from None
            (folder / METRICS_LOG).unlink(missing_ok=True)
        return folder
    for index in range(1, 10_000):
        folder = root / (base if index == 1 else f"{base}-{index}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise SettingError(f"too many runs named {literal(base)} under {literal(root)}: pass {{name}}")


def holds_nothing(folder: Path) -> bool:
    """Whether a claimed folder is still empty but for its lock (its run saved nothing)."""
    return folder.is_dir() and all(path.name == LOCK for path in folder.iterdir())


def release(folder: Path) -> None:
    """Remove a claimed folder whose run saved nothing, so that it leaves nothing behind."""
    if holds_nothing(folder):
        (folder / LOCK).unlink(missing_ok=True)
        folder.rmdir()


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the run folder for one writer. The operating system releases the lock when the
    process ends, however it ends, so a crashed run never leaves it stuck."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: run unguarded
        yield
        return
    with open(folder / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise SettingError(
                f"run folder {literal(folder)} is being written by another charnn train (pid "
                f"{literal(holder)}); wait for it to finish, or use another {{name}}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def read_metrics_log(folder: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl ([] if it has none); a line a crash cut short, or
    anything else that is not a JSON object, is passed over. Lines written before "evaluated"
    was recorded lack it: their val_bpc was measured at that step."""
    log = folder / METRICS_LOG
    if not log.is_file():
        return []
    records = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
