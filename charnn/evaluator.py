"""Bits per character: how many bits the model needs, on average, to encode each next character."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from charnn.checkpoint import LoadedModel
from charnn.errors import CharnnError
from charnn.model import CharRNN
from charnn.vocab import describe_chars, read_corpus

CHUNK = 2048  # characters per forward pass; the state is carried across chunks


@torch.no_grad()
def total_nats(model: CharRNN, ids: np.ndarray, device: torch.device | str = "cpu") -> float:
    """Summed negative log-likelihood (nats) of ids[1:] given everything before, as one stream.

    The whole text is read as a single stream with the state carried from chunk to chunk, so the
    figure does not depend on the chunk size or on how training cut its batches.
    """
    was_training = model.training
    model.eval()
    tensor = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(device)
    state = None
    nats = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(tensor) - 1, CHUNK):
        inputs = tensor[start : start + CHUNK][None]  # (1, T)
        targets = tensor[start + 1 : start + CHUNK + 1][None]
        inputs = inputs[:, : targets.shape[1]]
        logits, state = model(inputs, state)
        nats += F.cross_entropy(logits[0].float(), targets[0], reduction="sum").double()
    model.train(was_training)
    return float(nats)


def bits_per_char(model: CharRNN, ids: np.ndarray, device: torch.device | str = "cpu") -> float:
    return total_nats(model, ids, device) / (len(ids) - 1) / math.log(2)


@dataclass(frozen=True)
class EvalResult:
    """How well a model predicts one text."""

    file: str
    chars: int  # characters in the text that the vocabulary has
    predicted: int  # characters scored (all but the first)
    unknown: int  # characters outside the vocabulary, left out and reported
    unknown_chars: str
    nats_per_char: float
    bits_per_char: float
    perplexity: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    loaded: LoadedModel,
    file: str | Path,
    *,
    encoding: str = "utf-8",
    device: torch.device | str = "cpu",
) -> EvalResult:
    """Evaluate a loaded model on a text file, the whole file read as one stream."""
    text = read_corpus(file, encoding)
    ids, unknown = loaded.vocab.encode_known(text)
    if len(ids) < 2:
        missing = describe_chars(loaded.vocab.unknown(text))
        raise CharnnError(
            f"{file} has fewer than two characters the model knows (unknown: {missing})"
        )
    loaded.model.to(device)
    nats = total_nats(loaded.model, ids, device) / (len(ids) - 1)
    return EvalResult(
        file=str(file),
        chars=len(ids),
        predicted=len(ids) - 1,
        unknown=unknown,
        unknown_chars="".join(loaded.vocab.unknown(text)) if unknown else "",
        nats_per_char=nats,
        bits_per_char=nats / math.log(2),
        perplexity=math.exp(nats),
    )
