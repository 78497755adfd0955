"""Checkpoint files: self-describing dicts of plain types and CPU tensors.

Every checkpoint is readable with `torch.load(weights_only=True)`, so a hostile file cannot run
code, and carries everything needed to use the model on its own: format version, configs,
vocabulary, weights, optimizer state, step and metrics. Files are written to a temporary file in
the same folder, flushed to disk, then renamed over the target, so a crash never leaves half a
checkpoint behind.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from charnn import __version__
from charnn.config.train import ModelConfig, TrainConfig
from charnn.errors import CharnnError
from charnn.fileio import BEST, LAST, METRICS_LOG, atomic_write
from charnn.nn.model import CharRNN
from charnn.text.vocab import Vocab
from charnn.training.plan import saved_plan

FORMAT_VERSION = 1
# What every checkpoint holds, by type: all a model needs to be loaded (a hand-made file too)
MODEL_FIELDS: dict[str, type] = {
    "model_config": dict, "model_state": dict, "vocab": str, "step": int, "metrics": dict
}  # fmt: skip
# ...and what a run needs to continue exactly where another stopped (charnn writes them all)
TRAINING_FIELDS: dict[str, type] = {"train_config": dict, "optimizer_state": dict, "resume": dict}


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write a checkpoint so that `path` is always either the old file or the new one."""
    atomic_write(path, lambda out: torch.save(payload, out))


def to_cpu(value: Any) -> Any:
    """A copy of nested dicts/lists/tensors with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(v) for v in value)
    return value


def clone_tensors(value: Any) -> Any:
    """A copy of nested dicts/lists with every tensor cloned into freshly allocated memory.

    Tensors that torch.load returns can sit at a different memory alignment than fresh ones,
    and oneDNN then computes bitwise-different results; an exact resume clones them first.
    """
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: clone_tensors(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clone_tensors(v) for v in value)
    return value


def make_payload(
    model: CharRNN,
    vocab: Vocab,
    train_config: TrainConfig,
    optimizer_state: dict[str, Any],
    step: int,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "charnn_version": __version__,
        "model_config": model.config.__dict__.copy(),
        "train_config": train_config.to_dict(),
        "vocab": vocab.chars,
        "model_state": to_cpu(model.state_dict()),
        "optimizer_state": to_cpu(optimizer_state),
        "step": step,
        "metrics": metrics,
    }


def read_payload(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict safely, turning every way it can be unusable into one clear line,
    a field of MODEL_FIELDS that is missing or of another type among them.

    `mmap`: map the tensors' bytes from the file instead of reading them, for a caller that only
    reads the plain fields and tensor shapes (weights and optimizer state are most of the file).
    """
    path = Path(path)
    if not path.is_file():
        raise CharnnError(f"checkpoint not found: {path}")
    try:  # torch.save writes a zip archive: a text file, or half a checkpoint, is not one
        with path.open("rb") as handle:
            is_zip = zipfile.is_zipfile(handle)
    except OSError as err:
        raise CharnnError(f"{path} cannot be read ({err.strerror or err})") from None
    if not is_zip:
        raise CharnnError(
            f"{path} is corrupt or truncated, or not a checkpoint at all (not the zip archive "
            "torch.save writes)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise CharnnError(
            f"{path} is not a plain charnn checkpoint (it holds objects that could run code); "
            "refusing to load it"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CharnnError(f"{path} is corrupt or truncated ({reason})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("format_version"), int):
        raise CharnnError(f"{path} is not a charnn checkpoint")
    if payload["format_version"] > FORMAT_VERSION:
        raise CharnnError(
            f"{path} has checkpoint format {payload['format_version']}, newer than this charnn "
            f"({__version__}, format {FORMAT_VERSION}) reads: upgrade charnn"
        )
    check_fields(payload, path, MODEL_FIELDS)
    return payload


def check_fields(
    payload: dict[str, Any],
    path: Path,
    needs: dict[str, type],
    problem: str = "is not a usable charnn checkpoint",
    remedy: str = "",
) -> None:
    """One line naming every field of `needs` that `payload` lacks or holds in another type."""
    unusable = [name for name, kind in needs.items() if not isinstance(payload.get(name), kind)]
    reason = ""
    if unusable:
        verb = "is" if len(unusable) == 1 else "are"
        reason = f"its {', '.join(unusable)} {verb} missing or malformed"
    elif "vocab" in needs:
        try:
            Vocab(payload["vocab"])
        except CharnnError as err:
            reason = str(err)
    if reason:
        raise CharnnError(f"{path} {problem} ({reason}){remedy}")


@dataclass
class LoadedModel:
    """A model ready to use, with what it was trained on."""

    model: CharRNN
    vocab: Vocab
    path: Path
    train_config: TrainConfig
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    corpus_sha256: str | None = None  # of the text it trained on, to recognise its corpus


def load_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's best.pt (else last.pt)."""
    path = Path(path)
    return _run_checkpoint(path) if path.is_dir() else path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint file (or a run folder's best.pt) as an eval-mode model on `device`."""
    path = load_path(path)
    payload = read_payload(path)
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        model = CharRNN(config)
        model.load_state_dict(payload["model_state"])
        vocab = Vocab(payload["vocab"])
        train_config = TrainConfig.from_dict(payload.get("train_config") or {})
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, CharnnError) as err:
        raise CharnnError(f"{path} is not a usable charnn checkpoint ({err})") from None
    model.to(device).eval()
    return LoadedModel(model, vocab, path, train_config, payload["step"], payload["metrics"],
                       payload.get("corpus_sha256"))  # fmt: skip


def _run_checkpoint(run_dir: Path) -> Path:
    for name in (BEST, LAST):
        if (run_dir / name).is_file():
            return run_dir / name
    try:
        runs = sorted(sub for sub in run_dir.iterdir() if _holds_checkpoint(sub))
    except OSError:  # a folder that cannot be listed: say only what is missing
        runs = []
    if runs:
        raise CharnnError(
            f"{run_dir} holds runs, not a run's checkpoints: pass one of its run folders, such "
            f"as {runs[0]}"
        )
    raise CharnnError(f"run folder {run_dir} holds no {BEST} or {LAST}")


def _holds_checkpoint(folder: Path) -> bool:
    return (folder / BEST).is_file() or (folder / LAST).is_file()


def find_checkpoint(checkpoint_dir: str | Path = "checkpoints", cell: str | None = None) -> Path:
    """The best checkpoint of the newest run under `checkpoint_dir` (optionally of one cell)."""
    root = Path(checkpoint_dir)
    candidates = []
    for run_dir in root.iterdir() if root.is_dir() else []:
        files = [run_dir / n for n in (BEST, LAST) if (run_dir / n).is_file()]
        if not files:
            continue
        if cell is not None and _cell_of(files[0]) != cell:
            continue
        candidates.append((max(f.stat().st_mtime for f in files), files[0]))
    if not candidates:
        which = f"{cell} run" if cell else "run"
        raise CharnnError(
            f"no {which} found under {root}/: train one with `charnn train CORPUS"
            f"{' --cell ' + cell if cell else ''}` or pass a checkpoint path"
        )
    return max(candidates)[1]


def _cell_of(path: Path) -> str | None:
    try:
        return summarize_checkpoint(path)["model_config"].get("cell")
    except CharnnError:
        return None


def read_metrics_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl ([] if it has none); a line a crash cut short, or
    anything else that is not a JSON object, is passed over. Lines written before "evaluated"
    was recorded lack it: their val_bpc was measured at that step."""
    log = run_dir / METRICS_LOG
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
            "train_config": _optional(payload, "train_config", dict, {}),
            "vocab_size": len(payload["vocab"]),
            "vocab": payload["vocab"],
            "parameters": sum(t.numel() for t in payload["model_state"].values()),
            "metrics": {  # numbers and flags, as the trainer writes them (hand edits: dropped)
                name: value
                for name, value in payload["metrics"].items()
                if isinstance(value, int | float)
            },
            "corpus_files": [  # [path, SHA-256] of each file, for several
                pair
                for pair in _optional(payload, "corpus_files", list, [])
                if isinstance(pair, list | tuple) and [type(half) for half in pair] == [str, str]
            ],
            "plan": saved_plan(payload.get("plan")),  # what charnn.training.plan chose, and why
        }
    except (KeyError, TypeError, ValueError, AttributeError, CharnnError) as err:
        raise CharnnError(f"{path} is not a usable charnn checkpoint ({err})") from None


def _optional(payload: dict[str, Any], name: str, kind: type, missing: Any) -> Any:
    """A field only some checkpoints hold, or `missing` where this one lacks it (or holds
    something else there: a hand-edited file)."""
    value = payload.get(name)
    return value if isinstance(value, kind) else missing


def _usable_shape(model_config: dict[str, Any]) -> dict[str, Any]:
    """The shape as saved, once it is known to build a ModelConfig (as loading the model does)."""
    ModelConfig.from_dict(model_config).complete()
    return dict(model_config)


def describe_checkpoint(path: str | Path) -> dict[str, Any]:
    """What a checkpoint holds, as plain data: configs, vocabulary, step, metrics, history."""
    path = load_path(path)
    history = [
        record["val_bpc"]
        for record in read_metrics_log(path.parent)
        if record.get("evaluated", True) and isinstance(record.get("val_bpc"), int | float)
    ]
    return {**summarize_checkpoint(path), "val_bpc_history": history}
