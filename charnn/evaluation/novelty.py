"""How much of a sample is new: the share of its n-character substrings found nowhere in a corpus.

For each n, every n-gram of the sample (one per position) is looked for in the corpus ids.
The corpus is read once, in chunks, with every n hashed from one prefix sum per chunk: with
G[k] = Σ_{j<k} x_j·Q^j (mod 2^64), the n-gram at i hashes to (G[i+n] − G[i])·Q^−i =
Σ_{t<n} x_{i+t}·Q^t, the same wherever it occurs. A corpus position is a candidate when its
hash falls in a bit table of the sample's still unfound hashes, is confirmed by a sorted
search of those hashes, and counts only after its characters are compared with the sample's:
a hash collision can never make a new n-gram look copied. A base Q under which two different
n-grams of the sample share a hash is skipped, so the figures are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from charnn.errors import CharnnError
from charnn.text.vocab import Vocab, code_points

if TYPE_CHECKING:  # not imported at run time: comparing with a corpus file needs no torch
    from charnn.checkpoints.loading import LoadedModel

DEFAULT_NS = (5, 10, 20, 30, 40, 50)
CHUNK = 1 << 20  # corpus positions hashed at a time: a few arrays of 8 bytes each per position
VERIFY_ROWS = 1 << 18  # candidate windows compared at a time: bounds memory on repetitive text
BASES = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)  # odd: invertible mod 2^64
MIX = np.uint64(0xD6E8FEB86659FD93)  # the bit table's slot: the top bits of hash·MIX


@dataclass(frozen=True)
class Novelty:
    """Of a sample's `ngrams` n-grams (one per position), `novel` occur nowhere in the corpus."""

    n: int
    ngrams: int
    novel: int

    @property
    def fraction(self) -> float | None:
        return self.novel / self.ngrams if self.ngrams else None

    def to_dict(self) -> dict[str, int | float | None]:
        return {"n": self.n, "ngrams": self.ngrams, "novel": self.novel,
                "novel_fraction": self.fraction}  # fmt: skip


def novelty(
    sample: str, corpus_ids: np.ndarray, vocab: Vocab, ns: Sequence[int] = DEFAULT_NS
) -> list[Novelty]:
    """For each n in `ns`, how many of the sample's n-grams never occur in `corpus_ids` (ids
    under `vocab`; a memory-mapped array is read chunk by chunk)."""
    if not ns or min(ns) < 1:
        raise CharnnError("n-gram lengths must be at least 1")
    table = code_points(vocab.chars)
    points = code_points(sample)
    ids = np.searchsorted(table, points).clip(max=len(table) - 1)
    ids[table[ids] != points] = len(table)  # a character the corpus lacks: matches nothing
    ns = sorted(set(ns))
    base = next((q for q in BASES if _distinct(ids, ns, q)), None)
    if base is None:  # not seen in practice: three 64-bit bases would each have to collide
        raise CharnnError("the sample's n-grams collide under every hash base")
    powers = _Powers(base, max(CHUNK, len(ids)) + max(ns))
    searches = {n: _Search(ids, n, powers) for n in ns if len(ids) >= n}
    for start in range(0, max(len(corpus_ids) - min(ns) + 1, 0), CHUNK):
        open_searches = [s for s in searches.values() if not s.done]
        if not open_searches:
            break  # every n-gram of the sample has been found
        chunk = np.asarray(corpus_ids[start : start + CHUNK + max(ns) - 1])
        prefix = powers.prefix(chunk)
        for search in open_searches:
            search.scan(chunk, prefix)
    return [Novelty(n, max(len(ids) - n + 1, 0), searches[n].novel() if n in searches else 0)
            for n in ns]  # fmt: skip


def training_ids(loaded: LoadedModel) -> tuple[np.ndarray, Vocab]:
    """The ids and vocabulary of the text a model trained on: its corpus without the
    validation split, which the model never learned from."""
    from charnn.evaluation.evaluator import model_corpus

    corpus = model_corpus(
        loaded,
        "novelty compares with the training text",
        "compare with another text (--corpus FILE on the command line)",
    )
    train_end = corpus.train_end(loaded.train_config.val_frac)
    return corpus.ids[:train_end], corpus.vocab


class _Powers:
    """Q^j and Q^−j (mod 2^64) for j below `size`, and the prefix sums hashes are cut from."""

    def __init__(self, base: int, size: int) -> None:
        self.up = _cumulative_powers(base, size)
        self.down = _cumulative_powers(pow(base, -1, 1 << 64), size)

    def prefix(self, ids: np.ndarray) -> np.ndarray:
        """G (len(ids) + 1,): G[k] = Σ_{j<k} ids[j]·Q^j."""
        out = np.zeros(len(ids) + 1, dtype=np.uint64)
        np.cumsum(ids.astype(np.uint64) * self.up[: len(ids)], out=out[1:])
        return out

    def hashes(self, prefix: np.ndarray, n: int) -> np.ndarray:
        """The hash of every n-gram: (G[i+n] − G[i])·Q^−i, wrapping mod 2^64."""
        count = len(prefix) - n
        hashes = prefix[n:] - prefix[:count]
        hashes *= self.down[:count]
        return hashes


def _cumulative_powers(base: int, size: int) -> np.ndarray:
    powers = np.full(size, base, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, out=powers)  # integer products wrap mod 2^64


def _distinct(ids: np.ndarray, ns: list[int], base: int) -> bool:
    """Whether different n-grams of the sample get different hashes under this base."""
    powers = _Powers(base, len(ids) + 1)
    prefix = powers.prefix(ids)
    for n in ns:
        if len(ids) >= n:
            windows = np.unique(sliding_window_view(ids, n), axis=0)
            if len(np.unique(powers.hashes(prefix, n))) != len(windows):
                return False
    return True


class _Search:
    """The sample's n-grams for one n, and which of them the corpus has shown so far."""

    def __init__(self, ids: np.ndarray, n: int, powers: _Powers) -> None:
        self.n, self.powers = n, powers
        self.windows = sliding_window_view(ids, n)  # (positions, n)
        hashes = powers.hashes(powers.prefix(ids), n)
        # keys: the distinct hashes, sorted; first: a sample position holding each; of: the
        # key of every position
        self.keys, self.first, self.of = np.unique(hashes, return_index=True, return_inverse=True)
        self.found = np.zeros(len(self.keys), dtype=bool)
        self.done = False
        self._build_table()

    def _build_table(self) -> None:
        """A bit table of the unfound hashes: most corpus positions miss it at one lookup."""
        unfound = self.keys[~self.found]
        bits = int(np.clip(np.ceil(np.log2(max(len(unfound), 1))) + 6, 12, 27))
        self.shift = np.uint64(64 - bits)
        self.table = np.zeros(1 << bits, dtype=bool)
        self.table[(unfound * MIX) >> self.shift] = True

    def scan(self, chunk: np.ndarray, prefix: np.ndarray) -> None:
        """Mark the sample's n-grams that occur at the n-grams starting in this chunk."""
        if len(chunk) < self.n:
            return
        hashes = self.powers.hashes(prefix[: min(len(chunk), CHUNK + self.n - 1) + 1], self.n)
        slots = hashes * MIX
        slots >>= self.shift
        where = np.flatnonzero(self.table[slots.view(np.int64)])  # below 2^27: a safe view
        keys = np.searchsorted(self.keys, hashes[where]).clip(max=len(self.keys) - 1)
        hit = self.keys[keys] == hashes[where]
        where, keys = where[hit], keys[hit]
        corpus_windows = sliding_window_view(chunk, self.n)
        before = int(self.found.sum())
        for start in range(0, len(where), VERIFY_ROWS):
            rows, rows_keys = where[start : start + VERIFY_ROWS], keys[start : start + VERIFY_ROWS]
            unfound = ~self.found[rows_keys]  # each n-gram needs confirming once
            rows, rows_keys = rows[unfound], rows_keys[unfound]
            same = (corpus_windows[rows] == self.windows[self.first[rows_keys]]).all(axis=1)
            self.found[rows_keys[same]] = True
        if int(self.found.sum()) != before:
            self.done = bool(self.found.all())
            self._build_table()

    def novel(self) -> int:
        """How many of the sample's positions hold an n-gram the corpus never showed."""
        return int((~self.found[self.of]).sum())
