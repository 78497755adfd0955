"""Run folders: naming and claiming them, one writer at a time, resuming, listing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from charnn.checkpoint import describe_checkpoint
from charnn.config import ModelConfig, TrainConfig
from charnn.errors import CharnnError
from charnn.fileio import BEST, LAST, LOCK

# What may change when a run is resumed: when to stop, how often to save, where to compute.
# Everything else decides the arithmetic and must match the run being continued.
RESUMABLE = {
    "max_steps",
    "epochs",
    "time_budget",
    "eval_every",
    "save_every",
    "keep",
    "on_nan",
    "device",
    "threads",
    "checkpoint_dir",
    "name",
    "corpus",
}


def default_name(corpus: Path, cell: str) -> str:
    return f"{corpus.stem}-{cell}"


def claim_run_dir(config: TrainConfig, corpus_path: Path) -> Path:
    """Create a fresh run folder, never reusing one that already holds a run."""
    root = Path(config.checkpoint_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CharnnError(f"cannot create checkpoint folder {root}: {err.strerror}") from None
    if config.name is not None:
        run_dir = root / config.name
        try:
            run_dir.mkdir()
        except FileExistsError:
            if any(p.name != LOCK for p in run_dir.iterdir()):
                raise CharnnError(
                    f"run folder {run_dir} already exists: continue it with --resume {run_dir}, "
                    "or choose another --name"
                ) from None
        return run_dir
    base = default_name(corpus_path, config.model.cell)
    for index in range(1, 10_000):
        run_dir = root / (base if index == 1 else f"{base}-{index}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise CharnnError(f"too many runs named {base} under {root}: pass --name")


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for one writer. The operating system releases the lock when the
    process ends, however it ends, so a crashed run never leaves it stuck."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: run unguarded
        yield
        return
    with open(run_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise CharnnError(
                f"run folder {run_dir} is being written by another charnn train (pid {holder}); "
                "wait for it to finish, or use another --name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def resume_checkpoint(resume: str, config: TrainConfig, corpus: Path) -> Path | None:
    """The checkpoint `--resume` names; None for `auto` when the run has no last.pt yet."""
    if resume == "auto":
        name = config.name or default_name(corpus, config.model.cell)
        candidate = Path(config.checkpoint_dir) / name / LAST
        return candidate if candidate.is_file() else None
    path = Path(resume)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise CharnnError(f"nothing to resume: {path} not found")
    return path


def check_resumable(config: TrainConfig, saved: TrainConfig, path: Path) -> None:
    """Refuse to continue a run with settings that would change its arithmetic."""
    differences = []
    for f in fields(TrainConfig):
        if f.name in RESUMABLE:
            continue
        if f.name == "model":
            for m in fields(ModelConfig):
                ours, theirs = getattr(config.model, m.name), getattr(saved.model, m.name)
                if m.name != "vocab_size" and ours != theirs:
                    differences.append(f"--{m.name.replace('_', '-')} {ours} (run: {theirs})")
        elif getattr(config, f.name) != getattr(saved, f.name):
            ours, theirs = getattr(config, f.name), getattr(saved, f.name)
            differences.append(f"--{f.name.replace('_', '-')} {ours} (run: {theirs})")
    if differences:
        raise CharnnError(
            f"cannot resume {path} with different settings: {'; '.join(differences)}; leave "
            "them out to continue as the run was, or start a new run with --init-from"
        )


def list_runs(checkpoint_dir: str | Path) -> list[dict[str, Any]]:
    """One summary per run folder under `checkpoint_dir`, newest first."""
    root = Path(checkpoint_dir)
    runs: list[dict[str, Any]] = []
    for run_dir in sorted(root.iterdir()) if root.is_dir() else []:
        files = [run_dir / n for n in (LAST, BEST) if (run_dir / n).is_file()]
        if not files:
            continue
        try:
            described = describe_checkpoint(files[0])
        except CharnnError as err:
            runs.append({"name": run_dir.name, "error": str(err)})
            continue
        model, metrics = described["model_config"], described["metrics"]
        modified = max(f.stat().st_mtime for f in files)
        runs.append(
            {
                "name": run_dir.name,
                "cell": model["cell"],
                "layers": model["layers"],
                "hidden_size": model["hidden_size"],
                "parameters": described["parameters"],
                "steps": described["step"],
                "best_val_bpc": metrics.get("best_val_bpc"),
                "corpus": described["train_config"].get("corpus"),
                "modified": datetime.fromtimestamp(modified).isoformat(timespec="seconds"),
                "_mtime": modified,
            }
        )
    runs.sort(key=lambda r: r.get("_mtime", 0), reverse=True)
    for r in runs:
        r.pop("_mtime", None)
    return runs


def merged_config(saved: TrainConfig, current: TrainConfig, given: set[str]) -> TrainConfig:
    """A saved run's settings, with the options given explicitly now on top of them.

    Where the data and checkpoints live always comes from now.
    """
    top = {f.name: getattr(saved, f.name) for f in fields(TrainConfig)}
    model = {f.name: getattr(saved.model, f.name) for f in fields(ModelConfig)}
    for name in given:
        if name in model:
            model[name] = getattr(current.model, name)
        elif name in top:
            top[name] = getattr(current, name)
    top["corpus"], top["checkpoint_dir"] = current.corpus, current.checkpoint_dir
    top["model"] = ModelConfig(**model)
    return TrainConfig(**top)
