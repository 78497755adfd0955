"""Choosing the next character from the model's logits: temperature, top-k and top-p."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from charnn.config.sample import SampleConfig


def filtering(config: SampleConfig) -> tuple[float, int | None, float | None]:
    """What choosing depends on: rows that share it choose in one call."""
    return config.temperature, config.top_k, config.top_p


def choose(logits: np.ndarray, config: SampleConfig, noise: Callable[[], np.ndarray]) -> np.ndarray:
    """Next character ids (B,) from logits (B, vocab) by temperature, top-k and top-p; `noise`
    gives standard Gumbel draws (B, vocab), asked for only where something is drawn."""
    if config.temperature == 0:
        return logits.argmax(axis=1)
    scores = logits.astype(np.float64)
    if config.temperature != 1:
        scores /= config.temperature
    if config.top_k is not None and config.top_k < scores.shape[1]:
        kth = np.partition(scores, -config.top_k, axis=1)[:, -config.top_k, None]
        scores[scores < kth] = -np.inf
    if config.top_p is not None and config.top_p < 1:
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        order = np.argsort(-probs, axis=1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=1)
        before = np.cumsum(sorted_probs, axis=1) - sorted_probs  # mass of the likelier ones
        drop = np.zeros_like(probs, dtype=bool)
        np.put_along_axis(drop, order, before >= config.top_p, axis=1)  # the first always stays
        scores[drop] = -np.inf
    # the Gumbel-max trick: argmax(scores + G), G ~ Gumbel(0, 1) independent per character, is
    # a draw from softmax(scores), with no normalising (a few NumPy calls per step)
    return (scores + noise()).argmax(axis=1)
