"""A model as a folder to share: weights in safetensors and settings in plain JSON, the layout
the Hugging Face Hub, Transformers.js, Candle and their kind read. Nothing in it is a pickle,
and nothing in it runs code.

    model.safetensors   the weights, named as PyTorch names them (embed.weight, rnn.weight_ih_l0)
    config.json         charnn's format and version, the model, the vocabulary, the step, the
                        training settings, the plan, the metrics and the corpus's files
    README.md           a model card (export.hf writes it)

`read_payload` turns a folder back into what a `.pt` checkpoint holds for using a model (not for
resuming a run: a shared folder has no optimizer state), so every command reads it as a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from charnn import __version__
from charnn.errors import CharnnError, SettingError, literal
from charnn.fileio import atomic_write

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
HF_FORMAT = 1
KEPT = ("model_config", "train_config", "vocab", "step", "metrics", "corpus_sha256",
        "corpus_files", "plan", "val_bpc_history", "labels", "label_chars")  # fmt: skip


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def write_folder(payload: dict[str, Any], folder: Path, card: str) -> None:
    """Write `payload` (a checkpoint's fields, with model_state) as a shareable folder: a new
    or empty one, or a charnn model's folder, replaced."""
    _check_replaceable(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in payload["model_state"].items()}
    config = {"charnn_format": HF_FORMAT, "charnn_version": __version__}
    config |= {name: payload.get(name) for name in KEPT}
    temporary = folder / f".{WEIGHTS}.tmp"
    save_file(tensors, temporary, metadata={"format": "pt", "library": "charnn"})
    temporary.replace(folder / WEIGHTS)
    text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    atomic_write(folder / CONFIG, lambda out: out.write(text.encode("utf-8")))
    atomic_write(folder / CARD, lambda out: out.write(card.encode("utf-8")))


def _check_replaceable(folder: Path) -> None:
    """Refuse a folder that holds other files: its own README.md or config.json would be
    overwritten, a run folder would become a shared model's. Hidden entries do not count (a
    fresh clone of a Hub repository: .git, .gitattributes), and are left as they are."""
    if not folder.is_dir() or not any(not p.name.startswith(".") for p in folder.iterdir()):
        return
    try:
        ours = is_hf_folder(folder) and bool(_read_config(folder / CONFIG))
    except CharnnError:
        ours = False
    if not ours:
        raise SettingError(
            f"{literal(folder)} already holds files and is not a charnn model's folder: give "
            "{out} a new or empty folder (a shared model's folder is replaced)"
        )


def read_payload(folder: Path, *, tensors: bool = True) -> dict[str, Any]:
    """A shared folder as a checkpoint's fields (`format_version` 1), each problem one line
    naming the file. Without `tensors`, model_state holds empty tensors of the stored shapes
    (read from the header alone)."""
    config = _read_config(folder / CONFIG)
    weights = folder / WEIGHTS
    try:
        if tensors:
            state = load_file(weights)
        else:
            with safe_open(weights, framework="pt") as stored:
                state = {name: torch.empty(stored.get_slice(name).get_shape(), device="meta")
                         for name in stored.keys()}  # noqa: SIM118  # fmt: skip
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CharnnError(f"{weights} is corrupt or truncated ({reason})") from None
    payload = {name: config.get(name) for name in KEPT}
    return {**payload, "format_version": 1, "charnn_version": config.get("charnn_version"),
            "model_state": state}  # fmt: skip


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise CharnnError(f"{path} cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise CharnnError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("charnn_format"), int):
        raise CharnnError(f"{path} is not a charnn model's config.json (no charnn_format)")
    if config["charnn_format"] > HF_FORMAT:
        raise CharnnError(
            f"{path} has charnn format {config['charnn_format']}, newer than this charnn "
            f"({__version__}, format {HF_FORMAT}) reads: upgrade charnn"
        )
    return config
