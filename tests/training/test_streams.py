import numpy as np
import pytest
import torch

from charnn.config.model import ModelSpec
from charnn.errors import CharnnError
from charnn.nn.model import CharRNN
from charnn.text.corpus import split_train_val
from charnn.training.streams import StreamShape, TrainStreams, fit_shape
from charnn.training.trainer import loss_on


def test_split_keeps_the_last_fraction_for_validation():
    ids = np.arange(100)
    train, val = split_train_val(ids, 0.1)
    assert np.array_equal(train, np.arange(90)) and np.array_equal(val, np.arange(90, 100))
    with pytest.raises(CharnnError, match="too short"):
        split_train_val(np.arange(5), 0.1)


def test_streams_are_contiguous_and_targets_shift_by_one():
    ids = np.arange(26)  # "a".."z" as in the diagram: B = 3, T = 4
    streams = TrainStreams(ids, fit_shape(len(ids), 3, 4))
    windows = list(streams)
    assert len(windows) == streams.windows_per_pass == 2
    for inputs, targets in windows:
        assert torch.equal(targets, inputs + 1)
    # each row continues in the next window exactly where it stopped
    rows = torch.cat([inputs for inputs, _ in windows], dim=1)
    assert rows.tolist() == [list(range(0, 8)), list(range(8, 16)), list(range(16, 24))]


def test_each_pass_cuts_the_text_in_new_places_and_the_last_row_loops():
    ids = np.arange(26)
    streams = TrainStreams(ids, fit_shape(len(ids), 3, 4), seed=1337)
    shifts = [streams.shift(p) for p in range(8)]
    assert shifts[0] == 0 and len(set(shifts)) > 2 and all(0 <= s < 4 for s in shifts)
    assert shifts == [TrainStreams(ids, streams.shape, seed=1337).shift(p) for p in range(8)]
    assert shifts != [TrainStreams(ids, streams.shape, seed=7).shift(p) for p in range(8)]
    p = next(p for p, s in enumerate(shifts) if s == 3)
    windows = [streams.window(w, p) for w in range(streams.windows_per_pass)]
    for inputs, targets in windows:
        assert torch.equal(targets, (inputs + 1) % 26)  # past "z" the text starts again
    rows = torch.cat([inputs for inputs, _ in windows], dim=1)
    assert rows.tolist() == [list(range(3, 11)), list(range(11, 19)), [*range(19, 26), 0]]


def test_fit_shape_gives_a_short_text_fewer_rows_each_one_whole_window():
    assert fit_shape(10_000, 64, 64) == StreamShape(64, 64)  # 156 windows fit: unchanged
    assert fit_shape(200, 64, 64) == StreamShape(3, 66)  # 199 targets: 3 rows of 66, 1 left
    assert fit_shape(57, 32, 32) == StreamShape(1, 56)  # one row: the whole text, not 32 of it
    assert fit_shape(5, 64, 64) == StreamShape(1, 4)  # 4 targets: one row, a shorter window


def test_carried_state_makes_window_two_depend_on_window_one():
    torch.manual_seed(0)
    model = CharRNN(ModelSpec(vocab_size=10, hidden_size=16, embed_size=8))
    window_two = torch.randint(0, 10, (2, 5)), torch.randint(0, 10, (2, 5))

    def loss_after(first_window: torch.Tensor) -> float:
        _, state = model(first_window)
        loss, _ = loss_on(model, *window_two, state)
        return loss.item()

    a = loss_after(torch.zeros(2, 5, dtype=torch.long))
    b = loss_after(torch.full((2, 5), 7, dtype=torch.long))
    assert a != pytest.approx(b, abs=1e-6)
