"""The checkpoint file: a self-describing dict of plain types and CPU tensors.

Every checkpoint is readable with `torch.load(weights_only=True)`, so a hostile file cannot run
code, and carries everything needed to use the model on its own: format version, configs,
vocabulary, weights, optimizer state, step and metrics. Files are written to a temporary file in
the same folder, flushed to disk, then renamed over the target, so a crash never leaves half a
checkpoint behind.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from charnn import __version__
from charnn.checkpoints import folder, hf
from charnn.errors import CharnnError, SettingError, literal
from charnn.fileio import atomic_write
from charnn.text.vocab import Vocab

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
    model: torch.nn.Module,
    vocab: Vocab,
    train_config: dict[str, Any],
    optimizer_state: dict[str, Any],
    step: int,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """A checkpoint of `model` (a CharRNN) with what a run needs to continue."""
    return {
        "format_version": FORMAT_VERSION,
        "charnn_version": __version__,
        "model_config": model.config.__dict__.copy(),
        "train_config": train_config,
        "vocab": vocab.chars,
        "model_state": to_cpu(model.state_dict()),
        "optimizer_state": to_cpu(optimizer_state),
        "step": step,
        "metrics": metrics,
    }


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, a shared model's folder (checkpoints.hf), or the checkpoint a run
    folder stands for (checkpoints.folder)."""
    path = Path(path)
    if path.is_dir() and not hf.is_hf_folder(path):
        return folder.checkpoint_in(path)
    return path


def read_payload(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict safely, turning every way it can be unusable into one clear line,
    a field of MODEL_FIELDS that is missing or of another type among them. A shared model's
    folder reads as a checkpoint that holds no training state.

    `mmap`: map the tensors' bytes from the file instead of reading them, for a caller that only
    reads the plain fields and tensor shapes (weights and optimizer state are most of the file).
    """
    path = Path(path)
    if hf.is_hf_folder(path):
        payload = hf.read_payload(path, tensors=not mmap)
        check_fields(payload, path, MODEL_FIELDS)
        return payload
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
    """One line naming every field of `needs` that `payload` lacks or holds in another type;
    `remedy` may name settings as a SettingError does."""
    unusable = [name for name, kind in needs.items() if not isinstance(payload.get(name), kind)]
    reason = ""
    if unusable:
        verb = "is" if len(unusable) == 1 else "are"
        reason = f"its {', '.join(unusable)} {verb} missing or malformed"
    elif "vocab" in needs:
        try:
            size = len(Vocab(payload["vocab"]))
        except CharnnError as err:
            reason = str(err)
        else:  # a model of another width would read one character as another, or crash
            config = payload["model_config"] if "model_config" in needs else {}
            declared = config.get("vocab_size")
            if isinstance(declared, int) and declared != size:
                reason = (f"its vocab has {size} characters but its model_config a vocab_size "
                          f"of {declared}")  # fmt: skip
    if reason:
        raise SettingError(f"{literal(path)} {problem} ({literal(reason)}){remedy}")


def optional(payload: dict[str, Any], name: str, kind: type, missing: Any) -> Any:
    """A field only some checkpoints hold, or `missing` where this one lacks it (or holds
    something else there: a hand-edited file)."""
    value = payload.get(name)
    return value if isinstance(value, kind) else missing
