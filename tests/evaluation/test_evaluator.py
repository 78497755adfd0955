"""Bits per character: side-by-side streams read as one, and the caller's model left alone."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import charnn.evaluation.scoring as scoring
from charnn.checkpoints.loading import LoadedModel
from charnn.config.model import ModelSpec
from charnn.config.train import RunConfig
from charnn.errors import CharnnError
from charnn.evaluation.evaluator import evaluate
from charnn.evaluation.scoring import (
    MIN_STREAM,
    STREAMS,
    WARMUP_CHARS,
    chars_read,
    model_on,
    stream_bounds,
    stream_nats,
    total_nats,
)
from charnn.nn.model import CharRNN
from charnn.text.corpus import load_corpus
from charnn.text.vocab import Vocab

FORGET = 0.953  # sigmoid(3): the cell state keeps 95% a step, about 20 characters of memory


def long_memory_model(hidden: int = 16) -> CharRNN:
    """An LSTM whose cell state is a running average of the characters read: its forget gate
    is fixed at FORGET and nothing feeds back from h, so the text before a stream's first
    scored character changes its figure, and 512 characters of warm-up make up for it."""
    torch.manual_seed(0)
    model = CharRNN(ModelSpec(vocab_size=20, layers=1, hidden_size=hidden, embed_size=8))
    forget = slice(hidden, 2 * hidden)  # PyTorch's gate order: input, forget, cell, output
    with torch.no_grad():
        model.rnn.weight_hh_l0.zero_()
        model.rnn.weight_ih_l0[forget] = 0
        model.rnn.bias_ih_l0[forget] = torch.logit(torch.tensor(FORGET))
        model.rnn.bias_hh_l0[forget] = 0
        model.decoder.weight.mul_(4)  # the state's say in the prediction, made larger
    return model.eval()


def single_stream_nats(model: CharRNN, ids: np.ndarray) -> float:
    """The reference: the whole text as one stream, in one forward pass."""
    tensor = torch.from_numpy(ids.astype(np.int64))[None]
    with torch.no_grad():
        logits, _ = model(tensor[:, :-1])
    return F.cross_entropy(logits[0].double(), tensor[0, 1:], reduction="sum").item()


def test_warm_up_makes_side_by_side_streams_read_as_one(monkeypatch):
    model = long_memory_model()
    ids = np.random.default_rng(0).integers(0, 20, size=30_000)
    assert len(stream_bounds(len(ids) - 1)) == 7  # several streams, so warm-up matters
    whole = single_stream_nats(model, ids)
    assert total_nats(model, ids) == pytest.approx(whole, rel=1e-7)
    monkeypatch.setattr(scoring, "WARMUP_CHARS", 0)  # this model needs its warm-up
    assert total_nats(model, ids) != pytest.approx(whole, rel=1e-5)


def single_stream_losses(model: CharRNN, ids: np.ndarray) -> np.ndarray:
    """The reference, target by target: each character given the whole text before it."""
    tensor = torch.from_numpy(ids.astype(np.int64))[None]
    with torch.no_grad():
        logits, _ = model(tensor[:, :-1])
    return F.cross_entropy(logits[0].double(), tensor[0, 1:], reduction="none").numpy()


def test_a_sample_scores_pieces_spread_over_the_text_as_one_reading_would():
    model = long_memory_model()
    ids = np.random.default_rng(1).integers(0, 20, size=30_000)
    bounds = stream_bounds(len(ids) - 1, sample=3_000)
    assert [b - a for a, b in bounds] == [600] * 5  # pieces of the sample...
    assert [a for a, _ in bounds] == [0, 6_000, 12_000, 17_999, 23_999]  # ...all over the text
    losses = single_stream_losses(model, ids)
    expected = sum(losses[a:b].sum() for a, b in bounds)
    assert stream_nats(model, ids, sample=3_000).sum() == pytest.approx(expected, rel=1e-7)
    # a sample as large as the text is the text
    assert stream_bounds(len(ids) - 1, sample=len(ids)) == stream_bounds(len(ids) - 1)


def loaded_in_training_mode(tmp_path: Path) -> tuple[LoadedModel, Path]:
    vocab = Vocab("\n abcdefghij")
    torch.manual_seed(1)
    config = ModelSpec(vocab_size=len(vocab), layers=2, hidden_size=16, dropout=0.5)
    loaded = LoadedModel(CharRNN(config).train(), vocab, Path("memory"), RunConfig(), 0)
    text = tmp_path / "text.txt"
    rng = np.random.default_rng(2)
    text.write_text("".join(rng.choice(list(vocab.chars), size=5_000)), encoding="utf-8")
    return loaded, text


def test_evaluate_leaves_the_callers_model_as_it_was(tmp_path):
    loaded, text = loaded_in_training_mode(tmp_path)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    first = evaluate(loaded, text).bits_per_char
    assert loaded.model.training  # still training: the evaluation ran in eval mode and restored it
    assert evaluate(loaded, text).bits_per_char == first  # no dropout drawn: the same figure
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].device.type == "cpu" for k in after)


def model_of_its_corpus(tmp_path: Path) -> tuple[LoadedModel, Path]:
    """A model whose checkpoint names a corpus on disk and that text's fingerprint, as a
    trained run's does."""
    loaded, text = loaded_in_training_mode(tmp_path)
    sha = load_corpus(text).sha256
    return replace(loaded, train_config=RunConfig(corpus=str(text)), corpus_sha256=sha), text


def test_with_no_file_the_model_is_scored_on_its_validation_split(tmp_path):
    loaded, text = model_of_its_corpus(tmp_path)
    held_out = text.read_text(encoding="utf-8")[-500:]  # the last 10% of 5,000 characters
    (tmp_path / "held_out.txt").write_text(held_out, encoding="utf-8")
    result = evaluate(loaded)
    assert result.split == "validation" and result.file == str(text) and result.chars == 500
    alone = evaluate(loaded, tmp_path / "held_out.txt")
    assert alone.split is None
    assert result.bits_per_char == alone.bits_per_char  # the same characters, the same reading


def test_a_changed_missing_or_unknown_corpus_is_refused_rather_than_scored(tmp_path):
    loaded, text = model_of_its_corpus(tmp_path)
    with pytest.raises(CharnnError, match="model names no corpus"):
        evaluate(replace(loaded, train_config=RunConfig()))  # made in Python, never trained
    with pytest.raises(CharnnError, match="cannot be checked against"):
        evaluate(replace(loaded, corpus_sha256=None))  # a checkpoint that kept no fingerprint
    with text.open("a", encoding="utf-8") as out:
        out.write("abc")  # the split now ends in other text, some of it trained on
    with pytest.raises(CharnnError, match="has changed since"):
        evaluate(loaded)
    text.unlink()
    with pytest.raises(CharnnError, match="corpus cannot be read.*held-out text"):
        evaluate(loaded)


def test_progress_is_heard_chunk_by_chunk_up_to_the_whole_text(tmp_path):
    loaded, text = loaded_in_training_mode(tmp_path)  # 5,000 characters: one stream, 3 chunks
    heard: list[float] = []
    evaluate(loaded, text, on_progress=heard.append)
    assert heard == sorted(heard) and len(heard) == 3 and heard[-1] == 1.0


def test_a_model_elsewhere_is_copied_to_the_device_never_moved():
    model = long_memory_model()
    assert model_on(model, "cpu") is model
    copy = model_on(model, "meta")  # a device every PyTorch has
    assert copy is not model and next(copy.parameters()).device.type == "meta"
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_an_evaluation_reads_its_targets_and_each_later_streams_warm_up():
    assert chars_read(100_000) == 100_000 + (STREAMS - 1) * WARMUP_CHARS
    assert chars_read(2 * MIN_STREAM + 10) == 2 * MIN_STREAM + 10 + WARMUP_CHARS  # two streams
    pieces = stream_bounds(10**6, 250_000)
    assert chars_read(10**6, 250_000) == 256 * (250_000 // 256) + (len(pieces) - 1) * WARMUP_CHARS
    assert chars_read(100) == 100  # one stream, nothing before it


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a", r"has fewer than two characters the model knows: a score needs at least two$"),
        ("aXYZ", r"knows \(unknown: .*X.*\): a score needs at least two$"),
    ],
)
def test_a_text_with_under_two_known_characters_says_which_are_unknown_if_any(
    tmp_path, text, message
):
    loaded, _ = loaded_in_training_mode(tmp_path)
    short = tmp_path / "short.txt"
    short.write_text(text, encoding="utf-8")
    with pytest.raises(CharnnError, match=message):
        evaluate(loaded, short)
