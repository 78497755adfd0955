"""A repetition penalty that works on characters: it discounts copying, not letters.

Penalising every character already produced, as CTRL does for words, would forbid common
letters. Here the unit is the repeat: for each candidate character c, let r(c) be the length of
the longest string that choosing c would end and that already occurs in the recent generated
text (the longest suffix s of the text such that s·c occurred before, plus one for c). A repeat
of MIN_REPEAT characters or more costs a factor of `penalty` for each of its characters from
the MIN_REPEAT-th on:

    logit(c) -= log(penalty) · max(0, r(c) - MIN_REPEAT + 1)

so a loop gets dearer with every character it copies, however likely the model finds it, while
a single repeated word costs little. The prime is not part of the history: repeating the
user's own text (a speaker's name, a format) is not a loop of the model's.

Finding r(c) for every c at once, per step, for a batch (NumPy, O(WINDOW) per row):
keep, for each earlier end position q of the text, m[q] = the length of the longest common
suffix of text[:q+1] and the whole text. Appending x updates it in one shift,
m'[q] = m[q-1] + 1 where text[q] == x, else 0, and r(c) - 1 is the largest m[q] among the
positions q followed by c.
"""

from __future__ import annotations

import math

import numpy as np

MIN_REPEAT = 4  # shorter repeats (most syllables, "the ") are free
WINDOW = 2048  # repeats are looked for in this many recent characters: loops are local


class RepetitionPenalty:
    """The recent text of B rows and the penalty each next character would carry."""

    def __init__(self, penalty: float, rows: int, window: int = WINDOW) -> None:
        self.log_penalty = math.log(penalty)
        # right-aligned: column -1 is the newest character; -1 marks "nothing yet"
        self.text = np.full((rows, window), -1, dtype=np.int32)
        self.match = np.zeros((rows, window), dtype=np.int32)  # m[q] above; last column unused

    def adjust(self, logits: np.ndarray) -> np.ndarray:
        """The logits (B, vocab) less each candidate's repeat penalty (a new array)."""
        # repeat length r = m[q] + 1 for the character at q + 1; only r >= MIN_REPEAT matters
        rows, cols = np.nonzero(self.match[:, :-1] >= MIN_REPEAT - 1)
        if not len(rows):
            return logits
        repeat = np.zeros(logits.shape, dtype=np.int32)
        np.maximum.at(repeat, (rows, self.text[rows, cols + 1]), self.match[rows, cols] + 1)
        excess = np.maximum(repeat - (MIN_REPEAT - 1), 0)
        return logits - (self.log_penalty * excess).astype(logits.dtype)

    def append(self, ids: np.ndarray) -> None:
        """Each row's next character ids (B,)."""
        ids = np.asarray(ids, dtype=np.int32)[:, None]
        match = np.zeros_like(self.match)
        match[:, :-1] = np.where(self.text[:, 1:] == ids, self.match[:, :-1] + 1, 0)
        self.match = match
        self.text = np.concatenate([self.text[:, 1:], ids], axis=1)

    def select(self, rows: np.ndarray) -> None:
        """Keep these rows, in this order (repeats allowed): beams that survive a step."""
        self.text, self.match = self.text[rows], self.match[rows]
