"""What a checkpoint holds, as plain data, read without its tensors: for `charnn info`,
`charnn list` and `describe_checkpoint`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from charnn.checkpoints import folder
from charnn.checkpoints.format import checkpoint_path, optional, read_payload
from charnn.config.model import ModelSpec
from charnn.errors import CharnnError


def summarize_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's plain fields (configs, vocabulary, step, metrics) and parameter count.

    Its tensors are memory-mapped, never read: for a 2x512 model's 40 MB checkpoint, about
    1.2 MB comes off the disk instead of the whole file (bench/checkpoint_read.py).
    """
    path = Path(path)
    payload = read_payload(path, mmap=True)
    try:
        return {
            "path": str(path),
            "format_version": payload["format_version"],
            "charnn_version": payload.get("charnn_version"),
            "step": payload["step"],
            "model_config": _usable_shape(payload["model_config"]),
            "train_config": optional(payload, "train_config", dict, {}),
            "vocab_size": len(payload["vocab"]),
            "vocab": payload["vocab"],
            "parameters": sum(t.numel() for t in payload["model_state"].values()),
            # the weights the model holds: the run's own, or their moving average (--average)
            "weights": "average" if payload.get("weights") == "average" else "live",
            "metrics": {  # numbers and flags, as the trainer writes them (hand edits: dropped)
                name: value
                for name, value in payload["metrics"].items()
                if isinstance(value, int | float)
            },
            "corpus_files": [  # [path, SHA-256] of each file
                pair
                for pair in optional(payload, "corpus_files", list, [])
                if isinstance(pair, list | tuple) and [type(half) for half in pair] == [str, str]
            ],
            "plan": saved_plan(payload.get("plan")),  # what training.plan chose, and why
            "labels": _labels(payload),  # a conditioned model's, each with its characters
            **_history(payload),
        }
    except (KeyError, TypeError, ValueError, AttributeError, CharnnError) as err:
        raise CharnnError(f"{path} is not a usable charnn checkpoint ({err})") from None


def _labels(payload: dict[str, Any]) -> dict[str, int | None]:
    """A conditioned model's labels, in order, with their characters in its corpus."""
    names = optional(payload, "labels", list, [])
    chars = optional(payload, "label_chars", dict, {})
    return {str(name): chars.get(name) if isinstance(chars.get(name), int) else None
            for name in names}  # fmt: skip


def _history(payload: dict[str, Any]) -> dict[str, Any]:
    """A shared model's validation history (a run folder keeps its own in metrics.jsonl)."""
    history = payload.get("val_bpc_history")
    if not isinstance(history, list):
        return {}
    return {"val_bpc_history": [v for v in history if isinstance(v, int | float)]}


def _usable_shape(model_config: dict[str, Any]) -> dict[str, Any]:
    """The shape as saved, once it is known to build a ModelSpec (as loading the model does)."""
    ModelSpec.from_dict(model_config)
    return dict(model_config)


def describe_checkpoint(path: str | Path) -> dict[str, Any]:
    """What a checkpoint (or a run folder's best) holds, as plain data: configs, vocabulary,
    step, metrics and the history of validation bits/char."""
    path = checkpoint_path(path)
    summary = summarize_checkpoint(path)
    if isinstance(summary.get("val_bpc_history"), list):  # a shared model's folder keeps it
        return summary
    history = [
        record["val_bpc"]
        for record in folder.read_metrics_log(path.parent)
        if record.get("evaluated", True) and isinstance(record.get("val_bpc"), int | float)
    ]
    return {**summary, "val_bpc_history": history}


def list_runs(checkpoint_dir: str | Path) -> list[dict[str, Any]]:
    """One summary per run folder under `checkpoint_dir`, newest first."""
    runs: list[tuple[float, dict[str, Any]]] = []
    for run in folder.run_folders(Path(checkpoint_dir)):
        when = folder.modified(run)
        try:
            described = summarize_checkpoint(folder.checkpoint_in(run))  # no tensor is read
        except CharnnError as err:
            runs.append((when, {"name": run.name, "error": str(err)}))
            continue
        model, metrics = described["model_config"], described["metrics"]
        runs.append((when, {
            "name": run.name,
            "cell": model["cell"],
            "layers": model["layers"],
            "hidden_size": model["hidden_size"],
            "parameters": described["parameters"],
            "steps": described["step"],
            "best_val_bpc": metrics.get("best_val_bpc"),
            "corpus": described["train_config"].get("corpus"),
            "modified": datetime.fromtimestamp(when).isoformat(timespec="seconds"),
        }))  # fmt: skip
    return [summary for _, summary in sorted(runs, key=lambda pair: -pair[0])]


def saved_plan(record: Any) -> dict[str, Any] | None:
    """A checkpoint's plan (training.plan's Plan.record, and the "replanned" the trainer adds)
    where it is one, else None: a hand-edited file can hold anything there, and neither
    `charnn info` nor a resumed run may trip on it."""
    if not isinstance(record, dict):
        return None
    from_passes = record.get("from_passes", [])  # older checkpoints: none
    again = record.get("replanned")
    well_formed = (
        isinstance(record.get("chosen"), dict)
        and isinstance(record.get("why"), str)
        and all(_number_or_none(record.get(name)) for name in ("expected_chars", "passes"))
        and isinstance(from_passes, list)
        and all(isinstance(name, str) for name in from_passes)
        and (again is None or _replanned(again))
    )
    return record if well_formed else None


def _replanned(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("step"), int)
        and all(_number(record.get(name)) for name in ("passes", "chars_per_sec"))
        and isinstance(record.get("changed"), dict)
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_or_none(value: Any) -> bool:
    return value is None or _number(value)
