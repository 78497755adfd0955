"""A saved model, ready to use: loading a checkpoint file or a run folder, and finding the
newest run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charnn.checkpoints import folder
from charnn.checkpoints.format import checkpoint_path, optional, read_payload
from charnn.checkpoints.summary import summarize_checkpoint
from charnn.config.model import ModelSpec
from charnn.config.sample import label_weights
from charnn.config.train import RunConfig
from charnn.errors import CharnnError, SettingError, literal
from charnn.nn.model import CharRNN
from charnn.text.vocab import Vocab


@dataclass
class LoadedModel:
    """A model ready to use, with what it was trained on."""

    model: CharRNN
    vocab: Vocab
    path: Path
    train_config: RunConfig
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    corpus_sha256: str | None = None  # of the text it trained on, to recognise its corpus
    labels: tuple[str, ...] = ()  # a conditioned model's labels: label k + 1 is labels[k]

    @property
    def in_run(self) -> bool:
        """Whether the checkpoint is one of a run folder's own (best, last or a snapshot)."""
        return self.path.name in (folder.BEST, folder.LAST) or self.path.match(folder.SNAPSHOTS)

    @property
    def name(self) -> str:
        """The run folder's name for one of its checkpoints, else the file's stem."""
        return self.path.parent.name if self.in_run else self.path.stem


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint file (or a run folder's best, or a shared model's folder) as an
    eval-mode model on `device`."""
    path = checkpoint_path(path)
    payload = read_payload(path)
    try:
        config = ModelSpec.from_dict(payload["model_config"])
        model = CharRNN(config)
        model.load_state_dict(payload["model_state"])
        vocab = Vocab(payload["vocab"])
        train_config = RunConfig.from_dict(payload.get("train_config") or {})
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, CharnnError) as err:
        reason = " ".join(str(err).split())  # PyTorch's own message spans lines
        raise CharnnError(f"{path} is not a usable charnn checkpoint ({reason})") from None
    model.to(device).eval()
    labels = tuple(optional(payload, "labels", list, []))
    if not all(isinstance(name, str) for name in labels):
        shown = ", ".join(repr(name) for name in labels[:5]) + (", ..." if len(labels) > 5 else "")
        raise CharnnError(f"{path} is not a usable charnn checkpoint (its label names are not all "
                          f"strings: {shown})")  # fmt: skip
    if len(labels) != config.labels:
        raise CharnnError(f"{path} is not a usable charnn checkpoint (its labels do not match its "
                          f"model: {len(labels)} names for {config.labels} labels)")  # fmt: skip
    return LoadedModel(model, vocab, path, train_config, payload["step"], payload["metrics"],
                       payload.get("corpus_sha256"), labels)  # fmt: skip


load = load_checkpoint  # the short name


def find_checkpoint(checkpoint_dir: str | Path = "checkpoints", cell: str | None = None) -> Path:
    """The checkpoint of the newest run under `checkpoint_dir` (optionally of one cell)."""
    root = Path(checkpoint_dir)
    runs = [run for run in folder.run_folders(root) if cell is None or _cell_of(run) == cell]
    if not runs:
        which = f"{cell} run" if cell else "run"
        command = f"charnn train CORPUS{' --cell ' + cell if cell else ''}"
        raise CharnnError(
            f"no {which} found under {root}/: train one with `{command}` or pass a checkpoint path"
        )
    newest = max(runs, key=folder.modified)
    return folder.checkpoint_in(newest)


def _cell_of(run: Path) -> str | None:
    try:
        return summarize_checkpoint(folder.checkpoint_in(run))["model_config"].get("cell")
    except CharnnError:
        return None


def label_weights_for(labels: tuple[str, ...], label: str | None) -> np.ndarray | None:
    """Weights over a model's labels, "any" first (labels + 1,), for SampleConfig.label; None
    for an unconditioned model asked for no label."""
    if not labels:
        if label is not None:
            raise SettingError(
                "this model was trained without labels: leave out {label}, or train it on a "
                "labelled corpus ({label_from})"
            )
        return None
    weights = np.zeros(len(labels) + 1)
    for name, weight in label_weights(label or "any").items():
        if name != "any" and name not in labels:
            known = ", ".join(labels)
            raise SettingError(
                f"{{label}} {literal(repr(name))} is not a label of this model: it knows "
                f"{literal(known)} (and any)"
            )
        weights[0 if name == "any" else labels.index(name) + 1] += weight
    return weights
