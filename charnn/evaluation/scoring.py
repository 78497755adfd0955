"""Scoring a text: the summed negative log-likelihood of each character given the text before it,
read as many streams side by side, in forward passes of bounded memory.

A text is cut into up to STREAMS contiguous streams (or, to sample a long text, SAMPLE_PIECES
short pieces spread over it), read together as one batch. Each stream starts WARMUP_CHARS before
its first scored character with a zero state, so its state has seen the text before it by the
time scoring starts: the figure barely differs from reading the whole text as one stream, and
comes several times faster.

A forward pass's memory grows with its positions (rows x characters) times the vocabulary
(logits) and the width (gates): 256 streams x 2,048 characters of a 1,058-character vocabulary
took 2.2 GB of logits alone. So a pass reads at most PASS_BYTES worth of positions: all rows and
fewer characters, or, where even MIN_CHARS characters of every row would not fit, groups of rows.
The state is carried from pass to pass, so the figure is the same whatever the bound.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from charnn.nn.model import CharRNN

IGNORE = -100  # target value cross_entropy leaves out (warm-up and padding)
MAX_CHARS = 2048  # characters per row in one forward pass at most
MIN_CHARS = 32  # ...and at least, where the rows are then split into groups
STREAMS = 8  # the text is read as up to this many streams side by side
MIN_STREAM = 4096  # scored characters per stream at least: short texts use fewer streams
WARMUP_CHARS = 512  # each stream but the first first reads this much text before it, unscored
# A sample of a text (eval_chars) is read as up to SAMPLE_PIECES pieces of at least MIN_PIECE
# scored characters: many short pieces sample a text that changes along its length everywhere
# (docs/experiments.md#evaluations)
SAMPLE_PIECES = 256
MIN_PIECE = 512
PASS_BYTES = 256 << 20  # a forward pass's activations, logits and loss temporaries at most


def stream_bounds(n_targets: int, sample: int = 0) -> list[tuple[int, int]]:
    """Which targets each stream scores: contiguous [start, stop) pieces of 0..n_targets.

    With `sample` (0: all) smaller than the text, about `sample` targets in up to SAMPLE_PIECES
    pieces, spread evenly over it. The streams depend on the text alone, never on how many
    processes share the work, so a distributed evaluation adds up to the figure a single process
    computes.
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


def bytes_per_position(model: CharRNN) -> int:
    """What one scored position takes in a forward pass, about: its logits three times over
    (the logits, cross-entropy's log-probabilities and their float copy), and per layer the
    gates' pre-activations and the outputs, in fp32."""
    config = model.config
    gates = 4 * config.hidden_size  # the LSTM's; the other cells have fewer
    per_layer = gates + 2 * config.hidden_size
    return 4 * (3 * config.vocab_size + config.layers * per_layer + config.embed_size)


def pass_shape(rows: int, model: CharRNN, budget: int = PASS_BYTES) -> tuple[int, int]:
    """(rows, characters) of one forward pass: every row and as many characters as fit in
    `budget`, up to MAX_CHARS; where fewer than MIN_CHARS would fit, fewer rows at a time."""
    positions = max(1, budget // bytes_per_position(model))
    group = min(rows, max(1, positions // MIN_CHARS))
    return group, max(1, min(MAX_CHARS, positions // group))


@torch.no_grad()
def stream_nats(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    streams: Sequence[int] | None = None,
    sample: int = 0,
    on_progress: Callable[[float], None] | None = None,
    budget: int = PASS_BYTES,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Summed negative log-likelihood (nats) of each stream's targets, in float64.

    Target j is ids[j + 1] given ids[: j + 1]. `streams` picks which streams to compute (the
    others stay 0), for sharing the work between processes; with `sample`, the streams are that
    many targets' pieces of the text (see stream_bounds). A forward pass takes at most `budget`
    bytes (pass_shape). `on_progress` hears the fraction read after each pass. A conditioned
    model reads each character in its label (`labels`, aligned with `ids`; None: "any").
    """
    bounds = stream_bounds(len(ids) - 1, sample)
    picked = list(range(len(bounds)) if streams is None else streams)
    nats = np.zeros(len(bounds), dtype=np.float64)
    if not picked:
        return nats
    was_training = model.training
    model.eval()
    group, _ = pass_shape(len(picked), model, budget)
    done, total = 0, sum(bounds[i][1] - max(0, bounds[i][0] - WARMUP_CHARS) for i in picked)
    for first in range(0, len(picked), group):
        rows = picked[first : first + group]

        def heard(read: int, done: int = done) -> None:
            if on_progress is not None:
                on_progress((done + read) / total)

        nats[rows] = _rows_nats(model, ids, [bounds[i] for i in rows], device, budget, heard,
                                labels)  # fmt: skip
        done += sum(bounds[i][1] - max(0, bounds[i][0] - WARMUP_CHARS) for i in rows)
    model.train(was_training)
    return nats


def _rows_nats(
    model: CharRNN,
    ids: np.ndarray,
    bounds: list[tuple[int, int]],
    device: torch.device | str,
    budget: int,
    heard: Callable[[int], None],
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """The summed nats of each of these streams, read side by side, the state carried;
    `heard` hears the characters read so far."""
    begins = np.array([max(0, start - WARMUP_CHARS) for start, _ in bounds])
    scored_from = np.array([start for start, _ in bounds])
    stops = np.array([stop for _, stop in bounds])
    width = int((stops - begins).max())
    _, chars = pass_shape(len(bounds), model, budget)
    sums = torch.zeros(len(bounds), dtype=torch.float64, device=device)
    state, read = None, 0
    for col in range(0, width, chars):
        positions = begins[:, None] + col + np.arange(min(chars, width - col))  # (S, T)
        inside = positions < stops[:, None]  # rows shorter than the longest are padded
        safe = np.minimum(positions, len(ids) - 2)  # padding reads something harmless
        scored = inside & (positions >= scored_from[:, None])  # not padding, not warm-up
        inputs = np.where(inside, ids[safe], 0).astype(np.int64)
        targets = np.where(scored, ids[safe + 1].astype(np.int64), IGNORE)
        label_ids = None
        if labels is not None:
            label_ids = torch.from_numpy(np.where(inside, labels[safe], 0).astype(np.int64))
            label_ids = label_ids.to(device)
        logits, state = model(torch.from_numpy(inputs).to(device), state, label_ids)
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            torch.from_numpy(targets).reshape(-1).to(device),
            ignore_index=IGNORE,
            reduction="none",
        )  # (S·T,), 0 where ignored
        sums += losses.view(inputs.shape).double().sum(dim=1)
        read += int(inside.sum())
        heard(read)
    return sums.cpu().numpy()


def total_nats(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
    labels: np.ndarray | None = None,
) -> float:
    """Summed negative log-likelihood (nats) of ids[1:], each character given the text before it
    (up to WARMUP_CHARS of it at the start of each stream: see stream_nats)."""
    return float(stream_nats(model, ids, device, on_progress=on_progress, labels=labels).sum())


def model_on(model: CharRNN, device: torch.device | str) -> CharRNN:
    """`model` itself if its weights are on `device`, else a copy there: the caller's model is
    never moved."""
    where, target = next(model.parameters()).device, torch.device(device)
    if where.type == target.type and target.index in (None, where.index):
        return model
    return copy.deepcopy(model).to(target)
