"""Bits per character: how many bits the model needs, on average, to encode each next character."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from charnn.checkpoints.format import LoadedModel
from charnn.errors import CharnnError
from charnn.nn.model import CharRNN
from charnn.text.corpus import EncodedCorpus, load_corpus
from charnn.text.vocab import describe_chars, read_corpus
from charnn.training.streams import split_train_val

IGNORE = -100  # target value cross_entropy leaves out (warm-up and padding)
CHUNK = 2048  # characters per forward pass; the state is carried across chunks
STREAMS = 8  # the text is read as up to this many streams side by side
MIN_STREAM = 4096  # scored characters per stream at least: short texts use fewer streams
WARMUP_CHARS = 512  # each stream but the first first reads this much text before it, unscored
# A sample of a text (--eval-chars) is read as up to SAMPLE_PIECES pieces of at least MIN_PIECE
# scored characters. On a code base's 900,000 validation characters, 250,000 in 256 pieces read
# 0.6% below the whole split, in 64 pieces 2.1%, in 8 pieces 4.2% above (bench/RESULTS.md).
SAMPLE_PIECES = 256
MIN_PIECE = 512


def stream_bounds(n_targets: int, sample: int = 0) -> list[tuple[int, int]]:
    """Which targets each stream scores: contiguous [start, stop) pieces of 0..n_targets.

    With `sample` (0: all) smaller than the text, about `sample` targets in up to SAMPLE_PIECES
    pieces, spread evenly over it: many short pieces, so that a text that changes along its
    length (a code base, file after file) is sampled everywhere. The streams depend on the text
    alone, never on how many processes share the work, so a distributed evaluation adds up to
    the figure a single process computes.
    """
    sampled = 0 < sample < n_targets
    limit, size = (SAMPLE_PIECES, MIN_PIECE) if sampled else (STREAMS, MIN_STREAM)
    streams = max(1, min(limit, (sample if sampled else n_targets) // size))
    edges = np.linspace(0, n_targets, streams + 1).round().astype(int)
    share = sample // streams if sampled else n_targets
    return [(int(a), int(min(b, a + share))) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def chars_read(n_targets: int, sample: int = 0) -> int:
    """Characters an evaluation of `n_targets` targets reads, its streams' warm-ups included."""
    bounds = stream_bounds(n_targets, sample)
    return sum(stop - max(0, start - WARMUP_CHARS) for start, stop in bounds)


@torch.no_grad()
def stream_nats(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    streams: Sequence[int] | None = None,
    sample: int = 0,
    on_progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Summed negative log-likelihood (nats) of each stream's targets, in float64.

    Target j is ids[j + 1] given ids[: j + 1]. Streams are read side by side as one batch, each
    starting WARMUP_CHARS before its first target with a zero state, so that its state has seen
    the text before it by the time scoring starts; the figure then barely differs from reading
    the whole text as a single stream, and runs several times faster. `streams` picks which
    streams to compute (the others stay 0), for sharing the work between processes; with
    `sample`, the streams are that many targets' pieces of the text (see stream_bounds).
    `on_progress` hears the fraction read after each chunk.
    """
    bounds = stream_bounds(len(ids) - 1, sample)
    picked = list(range(len(bounds)) if streams is None else streams)
    nats = np.zeros(len(bounds), dtype=np.float64)
    if not picked:
        return nats
    # each picked stream reads ids[begin:stop], scoring targets from `start` on
    begins = np.array([max(0, bounds[i][0] - WARMUP_CHARS) for i in picked])
    scored_from = np.array([bounds[i][0] for i in picked])
    stops = np.array([bounds[i][1] for i in picked])
    width = int((stops - begins).max())

    was_training = model.training
    model.eval()
    sums = torch.zeros(len(picked), dtype=torch.float64, device=device)
    state = None
    for col in range(0, width, CHUNK):
        positions = begins[:, None] + col + np.arange(min(CHUNK, width - col))  # (S, T)
        inside = positions < stops[:, None]  # rows shorter than the longest are padded
        safe = np.minimum(positions, len(ids) - 2)  # padding reads something harmless
        scored = inside & (positions >= scored_from[:, None])  # not padding, not warm-up
        inputs = np.where(inside, ids[safe], 0).astype(np.int64)
        targets = np.where(scored, ids[safe + 1].astype(np.int64), IGNORE)
        logits, state = model(torch.from_numpy(inputs).to(device), state)  # (S, T, vocab)
        losses = F.cross_entropy(
            logits.float().transpose(1, 2),
            torch.from_numpy(targets).to(device),
            ignore_index=IGNORE,
            reduction="none",
        )  # (S, T), 0 where ignored
        sums += losses.double().sum(dim=1)
        if on_progress is not None:
            on_progress(min(col + CHUNK, width) / width)
    model.train(was_training)
    nats[picked] = sums.cpu().numpy()
    return nats


def total_nats(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
) -> float:
    """Summed negative log-likelihood (nats) of ids[1:], each character given the text before it
    (up to WARMUP_CHARS of it at the start of each stream: see stream_nats)."""
    return float(stream_nats(model, ids, device, on_progress=on_progress).sum())


def model_on(model: CharRNN, device: torch.device | str) -> CharRNN:
    """`model` itself if its weights are on `device`, else a copy there: the caller's model is
    never moved."""
    where, target = next(model.parameters()).device, torch.device(device)
    if where.type == target.type and target.index in (None, where.index):
        return model
    return copy.deepcopy(model).to(target)


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
    split: str | None = None  # "validation": the model's own held-out text, not a whole file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    loaded: LoadedModel,
    file: str | Path | None = None,
    *,
    encoding: str = "utf-8",
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
) -> EvalResult:
    """Evaluate a loaded model on a text file, or with no file on its own validation split (the
    text its training held out), each character given the text before it (see stream_nats). The
    model runs on `device` (on a copy if it is elsewhere), in eval mode, and is left as it was.
    `on_progress` hears the fraction of the text read, now and then."""
    ids, unknown, missing = ids_to_score(loaded, file, encoding)
    name, split = (corpus_name(loaded), "validation") if file is None else (str(file), None)
    model = model_on(loaded.model, device)
    nats = total_nats(model, ids, next(model.parameters()).device, on_progress) / (len(ids) - 1)
    return EvalResult(
        file=name,
        chars=len(ids),
        predicted=len(ids) - 1,
        unknown=unknown,
        unknown_chars=missing,
        nats_per_char=nats,
        bits_per_char=nats / math.log(2),
        perplexity=math.exp(nats),
        split=split,
    )


def ids_to_score(
    loaded: LoadedModel, file: str | Path | None, encoding: str = "utf-8"
) -> tuple[np.ndarray, int, str]:
    """What a model is scored on: the ids of the characters of `file` it knows, how many it does
    not (left out) and which; with no file, its validation split."""
    if file is None:
        return validation_ids(loaded), 0, ""
    text = read_corpus(file, encoding)
    ids, unknown = loaded.vocab.encode_known(text)
    missing = loaded.vocab.unknown(text) if unknown else []
    if len(ids) < 2:  # a score is of characters predicted from the ones before them
        unknown_ones = f" (unknown: {describe_chars(missing)})" if missing else ""
        raise CharnnError(
            f"{file} has fewer than two characters the model knows{unknown_ones}: a score "
            "needs at least two"
        )
    return ids, unknown, "".join(missing)


def corpus_name(loaded: LoadedModel) -> str:
    """The corpus a model trained on, as its run named it."""
    return ", ".join(loaded.train_config.corpus_paths)


def model_corpus(loaded: LoadedModel, purpose: str, remedy: str) -> EncodedCorpus:
    """The corpus a model trained on, encoded as its training encoded it (from the cache when
    the text has not changed). `purpose` and `remedy` word the error when it cannot be read."""
    config = loaded.train_config
    if not any(config.corpus_paths):  # a model made in Python, never trained from a file
        raise CharnnError(f"{purpose}, and the model names no corpus: {remedy}")
    try:
        return load_corpus(config.corpus_spec(), config.encoding, val_frac=config.val_frac)
    except CharnnError as err:
        raise CharnnError(
            f"{purpose}, and the model's corpus cannot be read ({err}; a relative path is "
            f"read from the current folder): {remedy}"
        ) from None


def validation_ids(loaded: LoadedModel) -> np.ndarray:
    """The model's validation split: the part of its corpus that training held out and measured
    it on, whole (a run's own evaluations may score a sample of it: --eval-chars). Refused
    unless the corpus is, to its SHA-256, the text the model trained on."""
    remedy = "pass a FILE of held-out text to evaluate on (not the training corpus)"
    purpose = "with no FILE the model is scored on its validation split"
    corpus = model_corpus(loaded, purpose, remedy)
    if loaded.corpus_sha256 != corpus.sha256:
        state = "has changed since" if loaded.corpus_sha256 else "cannot be checked against"
        raise CharnnError(
            f"{corpus_name(loaded)} {state} the text the model trained on, so its validation "
            f"split may not be the text held out: {remedy}"
        )
    ids = corpus.ids_in(loaded.vocab)  # the same text: the model knows every character
    return split_train_val(ids, loaded.train_config.val_frac, corpus.val_start)[1]
