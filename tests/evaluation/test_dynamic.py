"""Dynamic evaluation: it scores each window before learning from it, and it learns."""

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import charnn.evaluation.dynamic
from charnn.errors import CharnnError
from charnn.evaluation.dynamic import (
    TUNING_READS,
    WINDOW,
    DynamicSettings,
    dynamic_bits_per_char,
    step_scale,
    window_nats,
)
from charnn.nn.model import detach_state

from conftest import make_text, make_trainer, run_charnn

STATIC = DynamicSettings(lr=0.0, decay=0.0)
ADAPTING = DynamicSettings(lr=3e-3, decay=0.0)


@pytest.fixture(scope="module")
def repeated():
    """A model trained a little on other text, a text whose second half repeats its first, and
    step scales measured on other text again."""
    trainer = make_trainer(make_text(5_000, seed=1), max_steps=60)
    half = trainer.vocab.encode(make_text(2_048, seed=7))
    scale = step_scale(trainer.model, trainer.vocab.encode(make_text(1_000, seed=3)))
    return trainer.model, np.concatenate([half, half]), scale


def test_no_window_is_scored_by_weights_that_have_seen_it(repeated):
    model, ids, scale = repeated
    first_window = torch.from_numpy(ids[: WINDOW + 1].astype(np.int64))
    logits, _ = model.eval()(first_window[None, :-1])
    by_hand = F.cross_entropy(logits[0], first_window[1:], reduction="sum").item()
    adapting = window_nats(model, ids, ADAPTING, scale)
    static = window_nats(model, ids, STATIC, scale)
    assert adapting[0] == pytest.approx(by_hand, rel=1e-6)
    assert static[0] == pytest.approx(by_hand, rel=1e-6)
    assert adapting[1] != static[1]  # the second window already reads adapted weights


def test_it_learns_the_text_it_reads(repeated):
    model, ids, scale = repeated
    before = [p.detach().clone() for p in model.parameters()]
    halfway = len(ids) // 2 // WINDOW
    static = window_nats(model, ids, STATIC, scale)[halfway:].sum()
    adapted = window_nats(model, ids, ADAPTING, scale)[halfway:].sum()
    assert adapted < 0.97 * static  # the repeat is read with what the first half taught
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_full_pull_back_leaves_every_window_to_the_trained_weights(repeated):
    model, ids, _ = repeated
    scale = step_scale(model, ids)  # every weight this text moves has a pull of its own
    snapping = window_nats(model, ids, DynamicSettings(lr=1e-2, decay=1e9), scale)  # capped at 1
    np.testing.assert_allclose(snapping, window_nats(model, ids, STATIC, scale), rtol=1e-6)


def test_too_little_training_text_to_set_the_steps_is_refused(repeated):
    model, ids, _ = repeated
    with pytest.raises(
        CharnnError, match="at least 1,000 characters of training text, and has 999"
    ):
        dynamic_bits_per_char(model, ids, ids[:999])


def test_step_scales_are_each_weights_rms_gradient_at_the_trained_weights(repeated):
    model, ids, _ = repeated
    text = ids[: 2 * WINDOW + 1]  # two windows, the second reading the first's state
    before = [p.detach().clone() for p in model.parameters()]
    squares = [torch.zeros_like(p) for p in model.parameters()]
    state = None
    for start in (0, WINDOW):
        window = torch.from_numpy(text[start : start + WINDOW + 1].astype(np.int64))
        logits, state = model.eval()(window[None, :-1], state)
        model.zero_grad()
        F.cross_entropy(logits[0], window[1:]).backward()
        state = detach_state(state)
        for square, p in zip(squares, model.parameters(), strict=True):
            square += p.grad**2
    model.zero_grad(set_to_none=True)
    rms = [(square / 2).sqrt() for square in squares]
    mean = torch.cat([r.flatten() for r in rms]).mean()
    scale = step_scale(model, text)
    for r, divisor, pull in zip(rms, scale.divisors, scale.pulls, strict=True):
        torch.testing.assert_close(divisor, r + mean)
        torch.testing.assert_close(pull, r / mean)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_progress_is_heard_window_by_window(repeated):
    model, ids, scale = repeated
    heard: list[float] = []
    window_nats(model, ids[:1_000], STATIC, scale, on_progress=heard.append)
    assert len(heard) == -(-999 // WINDOW) and heard == sorted(heard) and heard[-1] == 1.0


def test_tuning_reads_each_setting_once_and_the_bar_covers_it(repeated, monkeypatch):
    model, ids, _ = repeated
    read: list[tuple[DynamicSettings, int]] = []

    def counting(model, ids, settings, scale, device="cpu", on_progress=None, labels=None):
        read.append((settings, len(ids)))
        return window_nats(model, ids, settings, scale, device, on_progress, labels)

    monkeypatch.setattr(charnn.evaluation.dynamic, "window_nats", counting)
    tune, text = ids[:1_000], ids[1_000:1_500]
    heard: list[float] = []
    result = dynamic_bits_per_char(model, text, tune, on_progress=heard.append)
    tuning = [settings for settings, n in read if n == len(tune)]
    assert len(tuning) == len(set(tuning)) == TUNING_READS - 1  # no setting read twice
    assert read[-1] == (result.settings, len(text)) and len(read) == TUNING_READS
    assert heard == sorted(heard) and heard[-1] == pytest.approx(1.0)
    share = TUNING_READS * len(tune) / (TUNING_READS * len(tune) + len(text))
    tuned = [f for f in heard if f <= share + 1e-12]  # the bar moves while scales and settings
    assert len(tuned) == TUNING_READS * -(-999 // WINDOW) and tuned[-1] == pytest.approx(share)


def test_eval_dynamic_from_the_command_line(trained, tmp_path):
    root, corpus, run = trained
    other = tmp_path / "other.txt"
    other.write_text(make_text(3_000, seed=5), encoding="utf-8")
    proc = run_charnn("eval", str(run), str(other), "--dynamic", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    dynamic = result["dynamic"]
    assert dynamic["bits_per_char"] > 0 and dynamic["lr"] > 0
    assert result["bits_per_char"] > 0  # the static figure stays
    text = corpus.read_text(encoding="utf-8")
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(text[len(text) - int(len(text) * 0.1) :], encoding="utf-8")
    split, alone = (
        json.loads(run_charnn("eval", str(run), *files, "--dynamic", "--json").stdout)
        for files in ([], [str(held_out)])
    )
    assert split["split"] == "validation" and split["chars"] == alone["chars"]
    for key in ("bits_per_char", "lr", "decay"):  # with no FILE, the same text read the same way
        assert split["dynamic"][key] == pytest.approx(alone["dynamic"][key], rel=1e-9)
    corpus.rename(corpus.with_suffix(".moved"))  # the training text is gone
    try:
        missing = run_charnn("eval", str(run), str(other), "--dynamic")
        assert missing.returncode != 0 and "--tune-on" in missing.stderr
        assert "Traceback" not in missing.stderr
        tuned = run_charnn("eval", str(run), str(other), "--dynamic", "--tune-on", str(other))
        assert tuned.returncode == 0, tuned.stderr
    finally:
        corpus.with_suffix(".moved").rename(corpus)
