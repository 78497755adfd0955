"""Beam search: the likeliest continuation of a prime, deterministic, the beams as one batch.

Each step extends every live beam by every character, scores each extension by the total
log-probability of its text, and keeps the `width` best; the stepper runs the beams as rows
of one batch. A beam that produces a stop string is finished, with the probability of its text
up to the stop. Beam search can lose the greedy path (its extensions crowded out at one step,
then overtaken), so the greedy path is kept among the beams whenever it would drop out: the
result is never less likely than greedy's, and a width of 1 is greedy.

With a repetition penalty (generation.penalty) the beams are scored by the penalised probabilities.
"""

from __future__ import annotations

import numpy as np

from charnn.checkpoints.loading import LoadedModel, label_weights_for
from charnn.config.sample import SampleConfig
from charnn.generation.penalty import RepetitionPenalty
from charnn.generation.prime import check_prime, read_prime
from charnn.nn.stepper import Stepper, take_rows


def beam_search(loaded: LoadedModel, config: SampleConfig) -> str:
    """The likeliest text of `config.length` characters after the prime (or shorter, ended by
    a stop string, left out unless `config.include_stop`). Beam width: `config.beam`."""
    width = config.beam or 1
    chars = loaded.vocab.chars
    stepper = Stepper(loaded.model)
    prime = check_prime(config.prime, loaded.vocab, config.unknown)
    weights = label_weights_for(loaded.labels, config.label)
    primed = read_prime(loaded.model, loaded.vocab, prime, stepper, weights)
    logits, state, bias = primed.logits, primed.state, primed.bias
    vocab_size = logits.shape[1]
    penalty = None
    if config.repetition_penalty != 1:
        penalty = RepetitionPenalty(config.repetition_penalty, 1)
    longest_stop = max((len(s) for s in config.stop), default=0)

    scores = np.zeros(1)  # (beams,) log-probability of each live beam's text
    texts = np.zeros((1, 0), dtype=np.int64)  # (beams, produced) their character ids
    greedy: int | None = 0  # the row holding the greedy path, None once it has stopped
    finished: list[tuple[float, str]] = []  # beams ended by a stop string
    for produced in range(1, config.length + 1):
        if penalty is not None:
            logits = penalty.adjust(logits)
        total = scores[:, None] + _log_softmax(logits)  # (beams, vocab)
        flat = total.ravel()
        order = np.argsort(-flat, kind="stable")[:width]  # ties: the earlier beam, then id
        if greedy is not None:
            greedy_next = greedy * vocab_size + int(total[greedy].argmax())
            if greedy_next not in order:
                order[-1] = greedy_next
            greedy = int(np.flatnonzero(order == greedy_next)[0])
        parents, ids = np.divmod(order, vocab_size)
        scores, texts = flat[order], np.concatenate([texts[parents], ids[:, None]], axis=1)

        if config.stop:
            ended = np.array([_ending(texts[b, -longest_stop:], chars, config.stop) is not None
                              for b in range(len(order))])  # fmt: skip
            for b in np.flatnonzero(ended):
                finished.append((float(scores[b]), _text(texts[b], chars, config)))
            if ended.any():
                keep = np.flatnonzero(~ended)
                greedy = None if greedy is None or ended[greedy] else int(np.sum(keep < greedy))
                parents, ids, scores, texts = parents[keep], ids[keep], scores[keep], texts[keep]
        best_finished = max(finished, default=None)
        if not len(scores) or produced == config.length:
            break
        if best_finished is not None and scores.max() <= best_finished[0]:
            break  # scores only fall: no live beam can overtake the finished one
        state = take_rows(state, parents)
        if primed.bias is not None:  # every beam writes in the one label
            bias = np.repeat(primed.bias, len(parents), axis=0)
        if penalty is not None:
            penalty.select(parents)
            penalty.append(ids)
        logits, state = stepper.step(ids, state, bias)

    live = [(float(s), _text(t, chars, config)) for s, t in zip(scores, texts, strict=True)]
    return max(finished + live, key=lambda c: c[0])[1]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    scores = logits.astype(np.float64)
    scores -= scores.max(axis=1, keepdims=True)
    return scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))


def _ending(ids: np.ndarray, chars: str, stops: tuple[str, ...]) -> str | None:
    """The stop string this text ends with, if any."""
    tail = "".join(chars[i] for i in ids)
    return next((s for s in stops if tail.endswith(s)), None)


def _text(ids: np.ndarray, chars: str, config: SampleConfig) -> str:
    text = "".join(chars[i] for i in ids)
    stop = next((s for s in config.stop if text.endswith(s)), None)
    return text[: -len(stop)] if stop and not config.include_stop else text
