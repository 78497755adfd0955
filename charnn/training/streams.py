"""Cutting text into streams and windows for truncated backpropagation through time.

The train split is cut into B contiguous streams, one per row, and read T characters at a time
(here B = 3, T = 4, and the text is "abcdefghijklmnopqrstuvwxyz"):

    stream length L = (26 - 1) // 3 = 8         window 0    window 1
                                                ┌───────┐  ┌───────┐
    row 0  inputs   a b c d e f g h             a b c d    e f g h
           targets  b c d e f g h i             b c d e    f g h i
    row 1  inputs   i j k l m n o p             i j k l    m n o p
           targets  j k l m n o p q             j k l m    n o p q
    row 2  inputs   q r s t u v w x             q r s t    u v w x
           targets  r s t u v w x y             r s t u    v w x y

Targets are the inputs shifted by one character. Row b of window k+1 continues exactly where
row b of window k stopped, so the hidden state is carried from one window to the next (and
detached in between, which is what makes the backpropagation "truncated"). A pass over the data
ends after L // T windows; the next pass starts again from zeros, and its windows begin a few
characters (0 to T - 1, drawn from the seed and the pass) further on: each pass cuts the text in
new places, so no character always ends a window with its gradient cut short, and a text read
many times is never read in the same windows again. The last row then runs past the end of the
split into its beginning, as if the text were a loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from charnn.errors import CharnnError
from charnn.training.length import StreamShape, fit_shape, windows_per_pass


class TrainStreams:
    """B contiguous streams over the training ids, yielding (inputs, targets) windows of T.

    `ids` may be a memory-mapped file of any unsigned integer type: each window reads just its
    B x (T + 1) characters, so the corpus is never copied whole.
    """

    def __init__(
        self,
        ids: np.ndarray,
        shape: StreamShape,
        seed: int = 0,
        label_ids: np.ndarray | None = None,
    ) -> None:
        self.shape = shape
        self.seed = seed
        B, T = shape.batch_size, shape.seq_len
        self.stream_len = (len(ids) - 1) // B  # L
        if self.stream_len < T:
            raise CharnnError(f"{len(ids)} characters cannot fill one window of {B} x {T}")
        self.ids = ids
        self.label_ids = label_ids  # a labelled corpus's: each character's label
        self.row_starts = np.arange(B, dtype=np.int64) * self.stream_len  # where each row begins
        self.offsets = np.arange(T + 1, dtype=np.int64)  # a window and the target after it
        self.windows_per_pass = windows_per_pass(len(ids), shape)

    @property
    def chars_per_window(self) -> int:
        return self.shape.chars_per_window

    def shift(self, pass_index: int) -> int:
        """How many characters after the first pass's the windows of pass `pass_index` begin."""
        if pass_index == 0:
            return 0
        return int(
            np.random.default_rng([self.seed % 2**32, pass_index]).integers(self.shape.seq_len)
        )

    def _positions(self, index: int, pass_index: int) -> np.ndarray:
        starts = self.row_starts + index * self.shape.seq_len + self.shift(pass_index)
        return (starts[:, None] + self.offsets) % len(self.ids)  # the last row may loop

    def window(self, index: int, pass_index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The `index`-th window of pass `pass_index`: inputs and targets, each (B, T) int64."""
        block = torch.from_numpy(self.ids[self._positions(index, pass_index)].astype(np.int64))
        return block[:, :-1], block[:, 1:]  # targets: the inputs shifted by one character

    def labels(self, index: int, pass_index: int = 0) -> torch.Tensor | None:
        """The labels of that window's inputs (B, T) int64 (None: an unlabelled corpus)."""
        if self.label_ids is None:
            return None
        positions = self._positions(index, pass_index)[:, :-1]
        return torch.from_numpy(np.asarray(self.label_ids)[positions].astype(np.int64))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first pass over the data, window by window."""
        for index in range(self.windows_per_pass):
            yield self.window(index)


__all__ = ["StreamShape", "TrainStreams", "fit_shape"]  # the shape is training.length's
