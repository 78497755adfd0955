"""Bits per character: how many bits the model needs, on average, to encode each next character."""

from __future__ import annotations

import math
from collections.abc import Sequence
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

IGNORE = -100  # target value cross_entropy leaves out (warm-up and padding)
CHUNK = 2048  # characters per forward pass; the state is carried across chunks
STREAMS = 8  # the text is read as up to this many streams side by side
MIN_STREAM = 4096  # scored characters per stream at least: short texts use fewer streams
WARMUP_CHARS = 512  # each stream but the first first reads this much text before it, unscored


def stream_bounds(n_targets: int) -> list[tuple[int, int]]:
    """Which targets each stream scores: contiguous [start, stop) pieces of 0..n_targets.

    The number of streams depends on the text alone, never on how many processes share the work,
    so a distributed evaluation adds up to the figure a single process computes.
    """
    streams = max(1, min(STREAMS, n_targets // MIN_STREAM))
    edges = np.linspace(0, n_targets, streams + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


@torch.no_grad()
def stream_nats(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    streams: Sequence[int] | None = None,
) -> np.ndarray:
    """Summed negative log-likelihood (nats) of each stream's targets, in float64.

    Target j is ids[j + 1] given ids[: j + 1]. Streams are read side by side as one batch, each
    starting WARMUP_CHARS before its first target with a zero state, so that its state has seen
    the text before it by the time scoring starts; the figure then barely differs from reading
    the whole text as a single stream, and runs several times faster. `streams` picks which
    streams to compute (the others stay 0), for sharing the work between processes.
    """
    bounds = stream_bounds(len(ids) - 1)
    picked = range(len(bounds)) if streams is None else streams
    nats = np.zeros(len(bounds), dtype=np.float64)
    if not picked:
        return nats
    rows = []  # (inputs, targets) per picked stream; warm-up targets are IGNORE
    for index in picked:
        start, stop = bounds[index]
        begin = max(0, start - WARMUP_CHARS)
        targets = ids[begin + 1 : stop + 1].astype(np.int64)
        targets[: start - begin] = IGNORE
        rows.append((ids[begin:stop].astype(np.int64), targets))
    width = max(len(inputs) for inputs, _ in rows)
    inputs = np.zeros((len(rows), width), dtype=np.int64)
    targets = np.full((len(rows), width), IGNORE, dtype=np.int64)  # short rows padded at the end
    for row, (row_inputs, row_targets) in enumerate(rows):
        inputs[row, : len(row_inputs)] = row_inputs
        targets[row, : len(row_targets)] = row_targets

    was_training = model.training
    model.eval()
    inputs_t, targets_t = torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)
    sums = torch.zeros(len(rows), dtype=torch.float64, device=device)
    state = None
    for col in range(0, width, CHUNK):
        logits, state = model(inputs_t[:, col : col + CHUNK], state)  # (S, T, vocab)
        chunk_targets = targets_t[:, col : col + CHUNK]
        losses = F.cross_entropy(
            logits.float().transpose(1, 2), chunk_targets, ignore_index=IGNORE, reduction="none"
        )  # (S, T), 0 where ignored
        sums += losses.double().sum(dim=1)
    model.train(was_training)
    nats[list(picked)] = sums.cpu().numpy()
    return nats


def total_nats(model: CharRNN, ids: np.ndarray, device: torch.device | str = "cpu") -> float:
    """Summed negative log-likelihood (nats) of ids[1:], each character given all before it."""
    return float(stream_nats(model, ids, device).sum())


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
    """Evaluate a loaded model on a text file: every character given all the text before it."""
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
