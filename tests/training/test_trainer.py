import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

import charnn.nn.devices
from charnn.checkpoints.loading import load_checkpoint
from charnn.config.model import ModelConfig, ModelSpec
from charnn.config.train import LR_DECAYS, RunConfig, TrainConfig
from charnn.errors import CharnnError
from charnn.evaluation.scoring import stream_nats, total_nats
from charnn.generation.sampler import sample
from charnn.nn.devices import cpu_runs_lstm_in_bf16
from charnn.text.vocab import Vocab
from charnn.training.length import Schedule, lr_at
from charnn.training.plan import (
    Facts,
    plan_run,
)
from charnn.training.trainer import Trainer

from conftest import as_loaded, make_trainer


@pytest.mark.slow
def test_hello_the_classic_example():
    """Vocabulary "helo", text "hello": after "l" comes "l" once and "o" once, so only a model
    that uses its state can greedy-sample "ello" from "h"."""
    trainer = make_trainer("hello", max_steps=300)
    assert trainer.vocab.chars == "ehlo"
    trainer.run()
    generated = "".join(sample(as_loaded(trainer), 4, temperature=0, prime="h"))
    assert generated == "ello"


@pytest.mark.slow
def test_overfits_a_short_text_to_near_zero_loss():
    text = "the quick brown fox jumps over the lazy dog, then naps.\n"
    trainer = make_trainer(text, model=ModelConfig(hidden_size=64, embed_size=16, layers=1))
    result = trainer.run()
    assert result.final_val_bpc < 0.05  # bits/char on the very text it trained on


def test_clipping_bounds_the_global_gradient_norm():
    def norms_seen(clip: float) -> list[float]:
        trainer = make_trainer("abcabdabeabf" * 20, max_steps=5, lr=1.0, clip=clip)
        seen = []
        step = trainer.optimizer.step

        def record_then_step(*args, **kwargs):
            grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
            seen.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
            return step(*args, **kwargs)

        trainer.optimizer.step = record_then_step
        trainer.run()
        return seen

    assert max(norms_seen(clip=0)) > 0.05  # unclipped gradients are larger than the bound...
    assert max(norms_seen(clip=0.05)) <= 0.05 + 1e-6  # ...and clipping holds them to it


def test_state_is_carried_between_windows_and_reset_each_pass(monkeypatch):
    import charnn.training.trainer as train_module

    states = []
    real_loss_on = train_module.loss_on

    def spy(model, inputs, targets, state, labels=None):
        states.append(state)
        loss, new_state = real_loss_on(model, inputs, targets, state)
        states.append(new_state)
        return loss, new_state

    monkeypatch.setattr(train_module, "loss_on", spy)
    text = "".join(chr(97 + i % 26) for i in range(401))
    trainer = make_trainer(text, max_steps=8, batch_size=2, seq_len=50)  # 4 windows per pass
    assert trainer.streams.windows_per_pass == 4
    trainer.run()
    given = states[0::2]
    returned = states[1::2]
    assert given[0] is None and given[4] is None  # each pass starts from zeros
    for step in (1, 2, 3, 5):
        h_given, h_before = given[step][0], returned[step - 1][0]
        assert torch.equal(h_given, h_before)  # the same values...
        assert not h_given.requires_grad  # ...detached from the previous window's graph


def test_learning_rate_warms_up_then_decays_to_zero():
    for decay in LR_DECAYS:
        assert lr_at(0.0, 1.0, decay) == 0.0
        assert lr_at(0.01, 1.0, decay) == pytest.approx(0.5)
        assert lr_at(0.02, 1.0, decay) == pytest.approx(1.0)
        assert lr_at(1.0, 1.0, decay) == pytest.approx(0.0)
        assert lr_at(1.5, 1.0, decay) == pytest.approx(0.0)
    assert lr_at(0.51, 2.0) == pytest.approx(2.0 * 0.5)  # linear, the default: halfway, half
    assert lr_at(0.51, 2.0, "cosine") == pytest.approx(1 + math.cos(math.pi * 0.49 / 0.98))
    assert lr_at(0.8, 1.0, "cosine") < lr_at(0.8, 1.0, "linear")  # cosine falls faster late


def test_a_run_follows_its_lr_decay_and_one_saved_before_the_choice_resumes_cosine():
    linear = Schedule(RunConfig(max_steps=100, lr=1.0), windows_per_pass=10)
    cosine = Schedule(RunConfig(max_steps=100, lr=1.0, lr_decay="cosine"), windows_per_pass=10)
    assert linear.lr(0.755) == pytest.approx(0.25)
    assert cosine.lr(0.755) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.735 / 0.98)))
    saved = RunConfig().to_dict()  # as a run saves its settings
    assert RunConfig.from_dict(saved).lr_decay == "linear"
    del saved["lr_decay"]
    assert RunConfig.from_dict(saved).lr_decay == "cosine"


def test_time_budget_stops_training(tmp_path):
    trainer = make_trainer("abcdefgh" * 200, max_steps=None, time_budget=1.5)
    result = trainer.run()
    assert 1.5 <= result.elapsed < 10 and result.steps > 1
    assert np.isfinite(result.final_val_bpc)


@pytest.mark.parametrize("cell", ["lstm", "cifg"])
def test_bf16_autocast_trains(cell):
    """bf16 trains the fused LSTM where the CPU has its kernel, and a written-out cell on any."""
    if cell == "lstm" and not cpu_runs_lstm_in_bf16():
        pytest.skip("this CPU has no bf16 LSTM kernel: the refusal is tested below")
    text = "the quick brown fox jumps over the lazy dog, then naps.\n"
    model = ModelConfig(cell=cell, hidden_size=32, embed_size=8, layers=1)
    trainer = make_trainer(text, max_steps=150, precision="bf16", model=model)
    before = trainer.model.decoder.weight.detach().clone()
    trainer.run()
    assert not trainer.scaler.is_enabled()  # only fp16 scales the loss
    assert trainer.model.decoder.weight.dtype == torch.float32  # weights stay fp32
    assert not torch.equal(before, trainer.model.decoder.weight)
    assert trainer.state.best_val_bpc < 2.0  # it learned (from about 4.3 bits/char at the start)


@pytest.mark.parametrize(("lstm_kernel", "way_out"), [(True, "bf16 or fp32"), (False, "fp32")])
def test_fp16_on_a_cpu_is_refused_with_the_way_out(monkeypatch, lstm_kernel, way_out):
    monkeypatch.setattr(charnn.nn.devices, "cpu_runs_lstm_in_bf16", lambda: lstm_kernel)
    with pytest.raises(CharnnError, match=f"fp16 needs a GPU; on a CPU use {way_out}$"):
        make_trainer("hello world", precision="fp16")


def test_bf16_lstm_on_a_cpu_without_its_kernel_is_refused_with_the_way_out(monkeypatch):
    monkeypatch.setattr(charnn.nn.devices, "cpu_runs_lstm_in_bf16", lambda: False)
    with pytest.raises(CharnnError, match="no bf16 LSTM kernel .* use precision fp32"):
        make_trainer("hello world", precision="bf16")
    cifg = ModelConfig(cell="cifg", hidden_size=32, embed_size=8, layers=1)
    make_trainer("hello world", precision="bf16", model=cifg)  # a written-out cell still runs


def test_threads_setting_reaches_pytorch(tmp_path):
    from charnn.training.trainer import train

    corpus = tmp_path / "c.txt"
    corpus.write_text("abcdefgh" * 200, encoding="utf-8")
    previous = torch.get_num_threads()
    config = TrainConfig(corpus=str(corpus), model=ModelConfig(hidden_size=8, embed_size=4),
                         max_steps=2, threads=1, checkpoint_dir=str(tmp_path / "ck"))  # fmt: skip
    try:
        torch.set_num_threads(2)
        train(config)
        assert torch.get_num_threads() == 1
        too_many = replace(config, threads=(os.cpu_count() or 1) + 1, name="many")
        with pytest.raises(CharnnError, match="more than this machine's"):
            train(too_many)  # not thousands of threads on two cores
        assert torch.get_num_threads() == 1 and not (tmp_path / "ck" / "many").exists()
    finally:
        torch.set_num_threads(previous)


def test_calibration_measures_widths_until_one_no_longer_fits():
    from charnn.training.calibrate import calibrate

    config = TrainConfig(time_budget=1, batch_size=4, seq_len=8)  # 1 s: too short for any
    facts = calibrate(config, Facts(train_chars=10**5), vocab_size=20, device=torch.device("cpu"))
    assert list(facts.widths) == [128]  # too wide already: none wider is tried
    assert facts.widths[128].chars_per_sec > 0
    assert (
        facts.widths[128].parameters
        == 4 * 128 * (64 + 128 + 2) + 4 * 128 * (128 + 128 + 2) + 20 * 64 + 129 * 20
    )
    roomy = calibrate(replace(config, time_budget=3600), Facts(train_chars=10**7), 20,
                      torch.device("cpu"))  # fmt: skip
    assert list(roomy.widths)[:3] == [128, 256, 384]  # narrowest first, on while they fit
    wide = calibrate(config, Facts(train_chars=10**5), vocab_size=1_000, device=torch.device("cpu"))
    assert (  # the embedding the plan will give a 1,000-character vocabulary is what is timed
        wide.widths[128].parameters
        == 4 * 128 * (256 + 128 + 2) + 4 * 128 * (128 + 128 + 2) + 1_000 * 256 + 129 * 1_000
    )


def test_calibration_takes_the_median_step_so_one_slow_step_does_not_move_the_plan(monkeypatch):
    import charnn.training.calibrate as calibration

    # steps of 10 ms, after two slow warm-ups, and one step of the five timed stalls for 2 s
    durations = iter([5.0, 5.0, 0.01, 0.01, 2.0, 0.01, 0.01])
    clock = {"now": 0.0, "calls": 0}

    def perf_counter() -> float:
        clock["calls"] += 1
        if clock["calls"] % 2 == 0:  # a step's end
            clock["now"] += next(durations)
        return clock["now"]

    monkeypatch.setattr(calibration.time, "perf_counter", perf_counter)
    config = TrainConfig(time_budget=60, batch_size=4, seq_len=8,
                         model=ModelConfig(hidden_size=16))  # fmt: skip
    facts = calibration.calibrate(config, Facts(train_chars=1000), 20, torch.device("cpu"))
    assert facts.widths[16].chars_per_sec == pytest.approx(4 * 8 / 0.01)


def test_a_width_timed_in_a_slow_stretch_is_timed_again_before_it_is_given_up(monkeypatch):
    import charnn.training.calibrate as calibration

    timed: list[int] = []
    slow_first = {256}  # caught the machine busy once, then ran at its speed

    def step_seconds(model, *args, warmup=calibration.WARMUP_STEPS):
        width = model.hidden_size
        timed.append(width)
        if width >= 384 or (width in slow_first and timed.count(width) == 1):
            return 10.0
        return 1e-4

    monkeypatch.setattr(calibration, "_step_seconds", step_seconds)
    config = TrainConfig(time_budget=60, batch_size=4, seq_len=8)
    facts = calibration.calibrate(config, Facts(train_chars=10**7), 20, torch.device("cpu"))
    assert facts.widths[256].chars_per_sec == pytest.approx(4 * 8 / 1e-4)  # the faster timing
    assert timed == [128, 256, 256, 384, 384]  # 384 slow twice: given up, none wider tried
    assert plan_run(config, facts).config.model.hidden_size == 256


def test_a_width_given_explicitly_is_timed_alone_so_its_dropout_is_still_planned():
    from charnn.training.calibrate import calibrate

    config = TrainConfig(time_budget=600, batch_size=4, seq_len=8,
                         model=ModelConfig(hidden_size=48))  # fmt: skip
    facts = calibrate(config, Facts(train_chars=10), vocab_size=20, device=torch.device("cpu"))
    assert list(facts.widths) == [48]
    plan = plan_run(config, facts)
    # 10 minutes of a tiny model on 10 characters: past 35 passes at 2 chars/s, however busy
    # the machine
    assert plan.passes is not None and plan.passes > 35
    assert plan.config.model.dropout == 0.5 and plan.config.model.hidden_size == 48


@pytest.mark.parametrize(
    ("native", "cell", "lstm_kernel", "bf16"),
    [(True, "cifg", False, True), (False, "cifg", True, False), (True, "lstm", False, False)],
)
def test_a_time_budget_trains_in_bf16_where_the_cpu_has_it(
    tmp_path, monkeypatch, native, cell, lstm_kernel, bf16
):
    """The trainer asks the CPU, picks bf16 only where it is native and has the cell's kernel
    (the written-out cifg runs in it anywhere), and says so."""
    import charnn.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(charnn.nn.devices, "cpu_runs_lstm_in_bf16", lambda: lstm_kernel)
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 40, encoding="utf-8")
    model = ModelConfig(cell=cell, hidden_size=16)
    config = TrainConfig(
        corpus=str(corpus), model=model, time_budget=60, max_steps=2,
        batch_size=4, seq_len=16, device="cpu", checkpoint_dir=str(tmp_path / "runs"),
    )  # fmt: skip
    events: list = []
    result = trainer_module.train(config, events.append, given={"hidden_size"})
    saved = load_checkpoint(result.run_dir / "last.pt")
    assert saved.train_config.precision == ("bf16" if bf16 else "fp32")
    notices = [e.message for e in events if isinstance(e, trainer_module.Notice)]
    assert any("bf16 autocast" in n for n in notices) == bf16


def test_evaluations_score_the_eval_chars_sample_and_say_so():
    text = "".join(np.random.default_rng(0).choice(list("abcdefgh \n"), size=20_000))
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    events: list = []
    config = RunConfig(model=ModelSpec(hidden_size=16, embed_size=8, layers=1),
                       max_steps=1, eval_chars=4_096, device="cpu")  # fmt: skip
    trainer = Trainer(config, vocab, ids[:10_000], ids[10_000:], on_event=events.append)
    model = trainer.model
    sampled = stream_nats(model, trainer.val_ids, sample=4_096).sum() / 4_096 / math.log(2)
    assert trainer.validate() == pytest.approx(sampled, rel=1e-9)  # per scored character
    whole = total_nats(model, trainer.val_ids) / (len(trainer.val_ids) - 1) / math.log(2)
    assert sampled != pytest.approx(whole, rel=1e-6)  # a sample, not the whole split
    assert any("score 4,096 of the validation split's 9,999 characters, in 8 pieces" in e.message
               for e in events)  # fmt: skip

    everything = Trainer(replace(config, eval_chars=0), vocab, ids[:10_000], ids[10_000:])
    everything.model.load_state_dict(model.state_dict())
    assert everything.validate() == pytest.approx(whole, rel=1e-9)


def test_a_run_saved_before_eval_chars_existed_resumes_scoring_the_whole_split():
    saved = TrainConfig(max_steps=5).to_dict()
    assert RunConfig.from_dict(saved).eval_chars == TrainConfig().eval_chars
    del saved["eval_chars"]
    assert RunConfig.from_dict(saved).eval_chars == 0


def test_patience_stops_after_that_many_evaluations_without_a_new_best(tmp_path, monkeypatch):
    scores = iter([3.0, 2.5, 2.6, 2.55, 2.4, 2.7])  # no new best at the 3rd and 4th evaluation
    monkeypatch.setattr(Trainer, "validate", lambda self: next(scores))
    trainer = make_trainer("hello world " * 50, run_dir=tmp_path, eval_every=5, patience=2)
    result = trainer.run()
    assert result.stopped_early and result.steps == 20  # the 4th evaluation, at step 20
    assert result.best_val_bpc == 2.5
    best = load_checkpoint(tmp_path / "best.pt")
    assert best.step == 10  # best.pt stays where the best was

    scores = iter([3.0, 2.5, 2.6, 2.55, 2.4, 2.7])
    patient = make_trainer("hello world " * 50, eval_every=5, patience=3, max_steps=30).run()
    assert not patient.stopped_early and patient.steps == 30

    scores = iter([3.0, 2.5, 2.6, 2.55, 2.7, 2.8])
    never = make_trainer("hello world " * 50, eval_every=5, patience=0, max_steps=30).run()
    assert not never.stopped_early and never.steps == 30  # 0: never stops early
