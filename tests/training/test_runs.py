"""Preparing runs: settings planned the same for every caller, folders that failed before their
first save, and checkpoints that two identical runs write alike."""

import json
import math
from dataclasses import replace

import pytest
import torch

import charnn.nn.devices
from charnn.checkpoints.format import read_payload
from charnn.config.model import DECODER_DROPOUT_SHARE, ModelConfig
from charnn.config.train import RunConfig, TrainConfig
from charnn.errors import CharnnError
from charnn.evaluation.scoring import chars_read
from charnn.training.plan import EVAL_COST, EVAL_SHARE
from charnn.training.trainer import train

from conftest import TINY, make_text, run_charnn

PLANNED = ("hidden_size", "dropout", "weight_drop", "precision", "patience", "eval_every", "beta1")


def planned_settings(payload: dict) -> dict:
    saved = RunConfig.from_dict(payload["train_config"])
    values = {**saved.to_dict(), **saved.model.__dict__}
    return {name: values[name] for name in PLANNED}


@pytest.fixture
def small_corpus(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(make_text(3_000), encoding="utf-8")
    return path


def test_python_and_the_cli_plan_the_same_run(tmp_path, small_corpus):
    """A 5-minute budget plans the model (and bf16 where the CPU has it) alike from either door."""
    shape = ["--batch-size", "4", "--seq-len", "16", "--max-steps", "2", "--device", "cpu"]
    proc = run_charnn(
        "train", str(small_corpus), "--time-budget", "5m", *shape,
        "--checkpoint-dir", str(tmp_path / "cli"), "--name", "run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config = TrainConfig(
        corpus=str(small_corpus), time_budget=300, batch_size=4, seq_len=16, max_steps=2,
        device="cpu", checkpoint_dir=str(tmp_path / "api"), name="run",
    )  # fmt: skip
    notices: list = []
    train(config, notices.append)
    cli_payload = read_payload(tmp_path / "cli" / "run" / "last.pt")
    from_cli = planned_settings(cli_payload)
    from_api = planned_settings(read_payload(tmp_path / "api" / "run" / "last.pt"))
    assert from_cli == from_api
    # 2 steps are too few characters for any width: the narrowest measured
    assert from_api["hidden_size"] == 128
    # one notice where the plan chose anything (bf16, on a CPU that multiplies it), from each door
    chose = bool(cli_payload["plan"]["chosen"])
    assert ("planned for a 5m budget" in proc.stderr) == chose
    assert any("planned for a 5m budget" in getattr(n, "message", "") for n in notices) == chose


def test_a_resumed_run_keeps_its_plan(tmp_path, small_corpus):
    common = dict(corpus=str(small_corpus), batch_size=4, seq_len=16, device="cpu",
                  checkpoint_dir=str(tmp_path / "ck"), name="run")  # fmt: skip
    train(TrainConfig(time_budget=300, max_steps=2, **common))
    first = planned_settings(read_payload(tmp_path / "ck" / "run" / "last.pt"))
    # resumed with no budget at all: a new run would plan no bf16, this one keeps its plan
    train(TrainConfig(max_steps=4, **common), resume="auto")
    payload = read_payload(tmp_path / "ck" / "run" / "last.pt")
    assert payload["step"] == 4
    assert planned_settings(payload) == first


def test_a_resumed_run_whose_plan_was_hand_edited_goes_on_without_it(tmp_path, small_corpus):
    """A plan of another shape (here from_passes a number) is not the trainer's to re-plan from:
    the run resumes on its saved settings, not re-planned, and ends as asked."""
    common = dict(corpus=str(small_corpus), batch_size=4, seq_len=16, device="cpu",
                  checkpoint_dir=str(tmp_path / "ck"), name="run", time_budget=300)  # fmt: skip
    train(TrainConfig(max_steps=1, **common))
    last = tmp_path / "ck" / "run" / "last.pt"
    payload = torch.load(last, weights_only=True)
    assert payload["plan"]["from_passes"] and "replanned" not in payload["plan"]
    payload["plan"]["from_passes"] = 5
    torch.save(payload, last)
    # 20 steps: re-planning falls due at step 2 (a tenth of the run) on a well-formed plan
    train(TrainConfig(max_steps=20, **common), resume="auto")
    resumed = read_payload(last)
    assert resumed["step"] == 20 and resumed["plan"] is None
    assert planned_settings(resumed) == planned_settings(payload)


def test_evaluations_are_planned_from_the_validation_split_and_kept_on_resume(tmp_path):
    corpus = tmp_path / "halves.txt"
    text = make_text(60_000)
    corpus.write_text(text, encoding="utf-8")
    shape = ["--batch-size", "4", "--seq-len", "16", "--val-frac", "0.5", "--hidden-size", "16",
             "--embed-size", "8", "--layers", "1", "--device", "cpu"]  # fmt: skip
    folder = ["--checkpoint-dir", str(tmp_path / "ck"), "--name", "run"]
    proc = run_charnn("train", str(corpus), "--max-steps", "2", *shape, *folder)
    assert proc.returncode == 0, proc.stderr
    # half the text is validation: an evaluation reads it, warm-ups included, at EVAL_COST of
    # a training character's time; EVAL_SHARE of the training time allows one every so often
    read = chars_read(int(len(text) * 0.5) - 1)  # the validation split's targets
    expected = math.ceil(read * EVAL_COST / (EVAL_SHARE * 4 * 16) / 100) * 100
    assert expected > 1000
    assert f"eval every {expected}" in proc.stderr
    last = tmp_path / "ck" / "run" / "last.pt"
    assert read_payload(last)["train_config"]["eval_every"] == expected
    resumed = run_charnn(
        "train", str(corpus), "--max-steps", "4", *shape, *folder, "--resume", "auto"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert read_payload(last)["step"] == 4  # continued, with the plan it had
    assert read_payload(last)["train_config"]["eval_every"] == expected
    folder[-1] = "told"
    told = run_charnn(
        "train", str(corpus), "--max-steps", "2", *shape, *folder, "--eval-every", "3"
    )
    assert told.returncode == 0, told.stderr
    assert "eval every" not in told.stderr
    assert read_payload(tmp_path / "ck" / "told" / "last.pt")["train_config"]["eval_every"] == 3


def test_a_resumed_run_keeps_settings_whose_default_changed_since(tmp_path, small_corpus):
    """Weight decay and the learning rate's decay were 0 and cosine before they became 0.1 and
    linear: a run saved with those, resumed without naming them, goes on as it trained."""
    common = dict(corpus=str(small_corpus), batch_size=4, seq_len=16, device="cpu",
                  checkpoint_dir=str(tmp_path / "ck"), name="run")  # fmt: skip
    train(TrainConfig(max_steps=2, weight_decay=0.0, lr_decay="cosine", **common))
    train(TrainConfig(max_steps=4, **common), resume="auto")
    saved = read_payload(tmp_path / "ck" / "run" / "last.pt")["train_config"]
    assert (saved["weight_decay"], saved["lr_decay"]) == (0.0, "cosine")
    train(TrainConfig(max_steps=2, **{**common, "name": "new"}))
    fresh = read_payload(tmp_path / "ck" / "new" / "last.pt")["train_config"]
    assert (fresh["weight_decay"], fresh["lr_decay"]) == (0.1, "linear")


def logged_steps(run_dir) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def crashed_before_first_save(run_dir):
    """What a run killed during its first save left behind (before saves wrote the metrics line
    last): a lock file and a metrics line, but no checkpoint."""
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").write_text("12345")
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 10, "val_bpc": 4.0}) + "\n")


def test_a_budget_in_arithmetic_the_cpu_lacks_is_refused_before_calibrating(
    tmp_path, small_corpus, monkeypatch
):
    """Calibrating in bf16 on a CPU without a bf16 LSTM kernel would end in oneDNN's traceback:
    the run is refused first, in one line, and leaves no folder behind."""
    monkeypatch.setattr(charnn.nn.devices, "cpu_runs_lstm_in_bf16", lambda: False)
    config = TrainConfig(
        corpus=str(small_corpus), time_budget=60, precision="bf16", batch_size=4, seq_len=16,
        device="cpu", checkpoint_dir=str(tmp_path / "ck"), name="run",
    )  # fmt: skip
    with pytest.raises(CharnnError, match="no bf16 LSTM kernel"):
        train(config)
    assert not (tmp_path / "ck" / "run").exists()


@pytest.mark.parametrize("how", ["auto", "folder"])
def test_a_folder_with_no_checkpoint_resumes_as_a_new_run(tmp_path, small_corpus, how):
    run_dir = tmp_path / "ck" / "run"
    crashed_before_first_save(run_dir)
    resume = "auto" if how == "auto" else str(run_dir)
    proc = run_charnn(
        "train", str(small_corpus), "--resume", resume, "--name", "run", "--max-steps", "3",
        "--batch-size", "4", "--seq-len", "16", "--checkpoint-dir", str(tmp_path / "ck"), *TINY,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert read_payload(run_dir / "last.pt")["step"] == 3
    steps = logged_steps(run_dir)
    assert steps == [3]  # the stale line of a step never saved is gone


def test_a_failed_save_writes_no_metrics_line(tmp_path, small_corpus, monkeypatch):
    import charnn.checkpoints.writer as writer_module

    calls = {"n": 0}
    real_save = writer_module.save_atomic

    def failing_second_save(payload, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_save(payload, path)

    monkeypatch.setattr(writer_module, "save_atomic", failing_second_save)
    config = TrainConfig(
        corpus=str(small_corpus), model=ModelConfig(hidden_size=16, layers=1), batch_size=4,
        seq_len=16, max_steps=4, save_every=2, eval_every=100, device="cpu",
        checkpoint_dir=str(tmp_path / "ck"), name="run",
    )  # fmt: skip
    with pytest.raises(OSError):
        train(config)
    run_dir = tmp_path / "ck" / "run"
    steps = logged_steps(run_dir)
    assert steps == [2] and read_payload(run_dir / "last.pt")["step"] == 2


def tensors_of(value, path="") -> dict[str, torch.Tensor]:
    """Every tensor in a checkpoint, by where it sits."""
    if isinstance(value, torch.Tensor):
        return {path: value}
    if not isinstance(value, dict | list | tuple):
        return {}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    found: dict[str, torch.Tensor] = {}
    for key, item in items:
        found.update(tensors_of(item, f"{path}/{key}"))
    return found


def assert_same_tensors(a: dict, b: dict) -> None:
    ta, tb = tensors_of(a), tensors_of(b)
    assert ta.keys() == tb.keys()
    assert len(ta) > 10  # weights, optimizer moments, hidden state, RNG
    for where, tensor in ta.items():
        assert torch.equal(tensor, tb[where]), where


def test_two_identical_runs_write_equal_checkpoints(tmp_path, small_corpus):
    def run(name):
        config = TrainConfig(
            corpus=str(small_corpus), model=ModelConfig(hidden_size=16, dropout=0.2),
            batch_size=4, seq_len=16, max_steps=12, save_every=5, eval_every=100,
            device="cpu", checkpoint_dir=str(tmp_path / "ck"), name=name,
        )  # fmt: skip
        train(config)
        return read_payload(tmp_path / "ck" / name / "last.pt")

    assert_same_tensors(run("a"), run("b"))


def test_a_killed_and_resumed_run_saves_what_the_whole_run_saves(tmp_path, small_corpus):
    """Every tensor of last.pt, RNG state included, and not only the weights."""

    def config(name):
        return TrainConfig(
            corpus=str(small_corpus), model=ModelConfig(hidden_size=16, dropout=0.2),
            batch_size=4, seq_len=16, max_steps=12, save_every=5, eval_every=100,
            device="cpu", checkpoint_dir=str(tmp_path / "ck"), name=name,
        )  # fmt: skip

    asked = iter(range(100))
    train(config("whole"))
    cut = train(config("cut"), stop_requested=lambda: next(asked) >= 7)  # asked before each step
    assert cut.interrupted and cut.steps == 7
    train(config("cut"), resume=tmp_path / "ck" / "cut")
    whole = read_payload(tmp_path / "ck" / "whole" / "last.pt")
    resumed = read_payload(tmp_path / "ck" / "cut" / "last.pt")
    assert resumed["step"] == whole["step"] == 12
    assert_same_tensors(whole, resumed)


def test_drawing_progress_and_sampling_do_not_import_the_training_stack():
    import subprocess
    import sys

    code = (
        "import sys, charnn.cli.display, charnn.generation.sampler, charnn.cli.data; "
        "print(sorted(m for m in sys.modules "
        "if m in ('charnn.training.trainer', 'charnn.training.prepare')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_given_model_still_plans_what_follows_from_the_passes(tmp_path, small_corpus):
    """The speeds are measured whenever a setting that follows from the passes is unset."""
    from charnn.text.corpus import load_corpus
    from charnn.training.plan import Facts, Width, patience_for
    from charnn.training.prepare import prepare_run

    measured = []

    def measure(config, facts, vocab_size):  # a fast machine: hundreds of passes in the budget
        measured.append(config.model.hidden_size)
        return Facts(facts.train_chars, facts.native_bf16, {32: Width(10**6, 10_000)})

    config = TrainConfig(corpus=str(small_corpus), time_budget=600,
                         checkpoint_dir=str(tmp_path / "runs"),
                         model=ModelConfig(hidden_size=32, dropout=0.1))  # fmt: skip
    run = prepare_run(config, load_corpus(str(small_corpus)), measure=measure)
    assert measured == [32]
    assert run.config.model.weight_drop == 0.5 and run.config.model.dropout == 0.1
    assert run.config.patience == patience_for(run.config.eval_every)

    model = ModelConfig(hidden_size=32, dropout=0.1, weight_drop=0.0)  # patience, β1 are open
    config = replace(config, checkpoint_dir=str(tmp_path / "more"), model=model)
    run = prepare_run(config, load_corpus(str(small_corpus)), measure=measure)
    assert measured == [32, 32] and run.config.beta1 == 0.9
    assert run.config.patience == patience_for(run.config.eval_every)
    given = replace(config, checkpoint_dir=str(tmp_path / "given"), patience=0, beta1=0.5)
    run = prepare_run(given, load_corpus(str(small_corpus)), measure=measure)
    assert measured == [32, 32] and run.config.patience == 0  # nothing left to plan from speeds


def test_a_budgeted_run_re_plans_its_regularisation_from_its_own_speed(tmp_path, monkeypatch):
    """A calibration caught in a slow second plans too few passes; the run's speed corrects it."""
    import charnn.training.trainer as trainer_module
    from charnn.training.plan import REPLAN_AT, Width, regularisation

    def slow_second(config, facts, vocab_size, device):  # 1 char/s: no passes, no dropout
        return replace(facts, widths={32: Width(1.0, 10**6)})

    monkeypatch.setattr(trainer_module, "calibrate", slow_second)
    # re-planned at half the budget, not a tenth: the first steps' one-off costs, which no
    # calibration has paid here, then weigh little even on a busy machine
    monkeypatch.setattr(trainer_module, "REPLAN_AT", 0.5)
    short = tmp_path / "short.txt"  # a short text: many passes even on a busy machine
    short.write_text(make_text(600), encoding="utf-8")
    # fp32: with no calibration to warm it up, bf16's first step took 1.8 of these 2 seconds
    # on a busy CPU
    common = dict(corpus=str(short), time_budget=2, batch_size=4, seq_len=16, device="cpu",
                  precision="fp32", eval_every=10**6)  # fmt: skip
    notices: list = []
    config = TrainConfig(**common, checkpoint_dir=str(tmp_path / "a"), name="run",
                         model=ModelConfig(hidden_size=32))  # fmt: skip
    train(config, notices.append)
    payload = read_payload(tmp_path / "a" / "run" / "last.pt")
    again = payload["plan"]["replanned"]
    assert payload["plan"]["passes"] < 0.01 and again["passes"] > 3.5  # the run is fast
    assert again["step"] > 0 and again["chars_per_sec"] > 0
    settings = planned_settings(payload)
    wanted = regularisation(again["passes"])
    assert {name: settings[name] for name in wanted} == wanted
    before = regularisation(0.0)  # what the calibration's slow second planned
    expected = {k: v for k, v in wanted.items() if v != before[k]}
    if "dropout" in expected:  # the decoder's follows, at half
        expected["decoder_dropout"] = expected["dropout"] * DECODER_DROPOUT_SHARE
    assert again["changed"] == expected
    assert RunConfig.from_dict(payload["train_config"]).model.decoder_dropout == (
        wanted["dropout"] * DECODER_DROPOUT_SHARE
    )
    betas = [group["betas"] for group in payload["optimizer_state"]["param_groups"]]
    assert {beta1 for beta1, _ in betas} == {wanted["beta1"]}  # the optimizer follows
    messages = [getattr(n, "message", "") for n in notices]
    assert any(m.startswith("re-planned at step") for m in messages)
    assert payload["metrics"]["elapsed"] >= REPLAN_AT * 2
    info = run_charnn("info", str(tmp_path / "a" / "run"))
    assert info.returncode == 0, info.stderr
    assert f"re-planned   dropout {wanted['dropout']}" in info.stdout

    given = replace(config, checkpoint_dir=str(tmp_path / "b"),
                    model=ModelConfig(hidden_size=32, dropout=0.05))  # fmt: skip
    train(given)
    payload = read_payload(tmp_path / "b" / "run" / "last.pt")
    assert planned_settings(payload)["dropout"] == 0.05  # given: it wins
    assert "dropout" not in payload["plan"]["replanned"]["changed"]
