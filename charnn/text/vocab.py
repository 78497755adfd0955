"""The character vocabulary: every distinct code point of the training text, sorted.

Text is turned into code points with one numpy call (via UTF-32) and mapped to ids with a
binary search over the sorted vocabulary, so encoding never loops over characters in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charnn.errors import CharnnError


def code_points(text: str) -> np.ndarray:
    """The text's Unicode code points, (len(text),) uint32, in one call."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@dataclass(frozen=True)
class Vocab:
    """An ordered set of characters; a character's id is its index in `chars`."""

    chars: str

    def __post_init__(self) -> None:
        points = code_points(self.chars)
        if (points[1:] <= points[:-1]).any():  # ids are found by binary search over the order
            raise CharnnError("a vocabulary's characters must be distinct and in code-point order")

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        if not text:
            raise CharnnError("cannot build a vocabulary from empty text")
        points = np.unique(code_points(text))  # sorted by code point: a stable order
        return cls(points.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass"))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: object) -> bool:
        return isinstance(char, str) and len(char) == 1 and char in self.chars

    def _lookup(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Ids for every character of `text` and a mask of those found in the vocabulary."""
        table = code_points(self.chars)
        points = code_points(text)
        ids = np.searchsorted(table, points).clip(max=len(table) - 1)
        return ids.astype(np.int64), table[ids] == points

    def encode(self, text: str) -> np.ndarray:
        """Ids of `text` (int64); raises if a character is not in the vocabulary."""
        ids, known = self._lookup(text)
        if not known.all():
            raise CharnnError(
                f"text has characters the vocabulary lacks: {describe_chars(self.unknown(text))}"
            )
        return ids

    def encode_known(self, text: str) -> tuple[np.ndarray, int]:
        """Ids of the in-vocabulary characters of `text`, and how many were left out."""
        ids, known = self._lookup(text)
        return ids[known], int((~known).sum())

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` that the vocabulary lacks, in order of code point."""
        _, known = self._lookup(text)
        missing = np.unique(code_points(text)[~known])
        return list(missing.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass"))

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1).tolist())


def describe_chars(chars: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(c) for c in chars[:limit])
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return f"{shown}{more}"
