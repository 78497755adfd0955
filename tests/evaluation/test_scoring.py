"""Scoring in passes of bounded memory gives the figures of unbounded passes."""

import numpy as np
import pytest
import torch

from charnn.config.model import ModelSpec
from charnn.evaluation.scoring import (
    MAX_CHARS,
    MIN_CHARS,
    bytes_per_position,
    pass_shape,
    stream_nats,
)
from charnn.nn.model import CharRNN

UNBOUNDED = 1 << 60


def model(vocab: int, cell: str = "lstm") -> CharRNN:
    torch.manual_seed(0)
    spec = ModelSpec(vocab_size=vocab, cell=cell, hidden_size=16, embed_size=8, layers=2)
    return CharRNN(spec).eval()


def test_a_pass_takes_every_row_and_as_many_characters_as_fit():
    wide = model(1000)
    per = bytes_per_position(wide)  # its logits three times over, and more
    assert per > 3 * 4 * 1000
    assert pass_shape(256, wide, UNBOUNDED) == (256, MAX_CHARS)
    rows, chars = pass_shape(256, wide, 256 * 100 * per)
    assert (rows, chars) == (256, 100)
    rows, chars = pass_shape(256, wide, 64 * MIN_CHARS * per)  # not 32 characters of each row
    assert (rows, chars) == (64, MIN_CHARS)
    assert rows * chars * per <= 64 * MIN_CHARS * per
    assert pass_shape(3, wide, 1) == (1, 1)  # never nothing


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole"])
@pytest.mark.parametrize("sample", [0, 3_000])
def test_bounded_passes_score_as_one_unbounded_pass(cell, sample):
    wide = model(300, cell)
    ids = np.random.default_rng(1).integers(0, 300, size=16_000)
    unbounded = stream_nats(wide, ids, sample=sample, budget=UNBOUNDED)
    per = bytes_per_position(wide)
    for budget in (per * 5_000, per * 200, per * 40):  # 40: rows in groups, 32 characters each
        bounded = stream_nats(wide, ids, sample=sample, budget=budget)
        assert bounded == pytest.approx(unbounded, rel=1e-6)
        assert bounded.sum() == pytest.approx(unbounded.sum(), rel=1e-9)


def test_progress_is_heard_up_to_the_whole_text_in_bounded_passes():
    wide = model(300)
    ids = np.random.default_rng(2).integers(0, 300, size=20_000)
    heard: list[float] = []
    stream_nats(wide, ids, budget=bytes_per_position(wide) * 40, on_progress=heard.append)
    assert len(heard) > 10 and heard == sorted(heard) and heard[-1] == pytest.approx(1.0)
