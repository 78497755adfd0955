"""Training never loses work: exact resume, kill -9, NaN, refusals, locks, fine-tuning."""

import json
import random
import signal
import subprocess
import time
from dataclasses import replace

import pytest
import torch

import charnn.nn.devices
from charnn.checkpoints.folder import locked, read_metrics_log
from charnn.checkpoints.format import read_payload, save_atomic
from charnn.checkpoints.loading import load_checkpoint
from charnn.config.model import ModelConfig
from charnn.config.train import RunConfig, TrainConfig
from charnn.errors import CharnnError
from charnn.text.vocab import Vocab
from charnn.training.optim import BETA2
from charnn.training.trainer import Trainer, train

from conftest import CHARNN, TINY, make_text, run_charnn

SMALL = ModelConfig(layers=2, hidden_size=24, embed_size=8, dropout=0.2)  # dropout: RNG in use


def config_for(corpus, tmp_path, name, **overrides):
    settings = dict(
        corpus=str(corpus),
        model=SMALL,
        batch_size=4,
        seq_len=16,
        max_steps=40,
        eval_every=10,
        save_every=5,
        device="cpu",
        seed=3,
        checkpoint_dir=str(tmp_path / "ck"),
        name=name,
    )
    return TrainConfig(**{**settings, **overrides})


def stop_after(k):
    calls = {"n": 0}

    def requested():
        calls["n"] += 1
        return calls["n"] > k  # asked once before each step: k steps run

    return requested


@pytest.fixture
def small_corpus(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(make_text(2_000), encoding="utf-8")
    return path


@pytest.mark.parametrize("k", [7, 10, 31])  # mid-interval, on an evaluation, after a new pass
def test_stopped_and_resumed_run_is_bit_identical(tmp_path, small_corpus, k):
    whole = train(config_for(small_corpus, tmp_path, "whole"))
    cut = train(config_for(small_corpus, tmp_path, "cut"), stop_requested=stop_after(k))
    assert cut.interrupted and cut.steps == k
    resumed = train(config_for(small_corpus, tmp_path, "cut"), resume=tmp_path / "ck" / "cut")
    assert resumed.steps == whole.steps == 40
    a = read_payload(tmp_path / "ck" / "whole" / "last.pt")
    b = read_payload(tmp_path / "ck" / "cut" / "last.pt")
    for key, tensor in a["model_state"].items():
        assert torch.equal(tensor, b["model_state"][key]), key
    for slot_a, slot_b in zip(
        a["optimizer_state"]["state"].values(), b["optimizer_state"]["state"].values(), strict=True
    ):
        assert all(torch.equal(slot_a[n], slot_b[n]) for n in slot_a)
    assert a["metrics"]["val_bpc"] == b["metrics"]["val_bpc"]


def test_resume_refuses_a_different_corpus_or_model(tmp_path, small_corpus):
    train(config_for(small_corpus, tmp_path, "run", max_steps=6))
    run = tmp_path / "ck" / "run"
    other = tmp_path / "other.txt"
    other.write_text(make_text(2_000) + "Ωmega", encoding="utf-8")
    with pytest.raises(CharnnError, match="vocabulary differs.*'Ω'"):
        train(config_for(other, tmp_path, "run"), resume=run)
    shuffled = tmp_path / "shuffled.txt"  # the same characters, in another order
    shuffled.write_text(small_corpus.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    with pytest.raises(CharnnError, match="not the text the run was trained on"):
        train(config_for(shuffled, tmp_path, "run"), resume=run)
    bigger = config_for(small_corpus, tmp_path, "run", model=replace(SMALL, hidden_size=32))
    with pytest.raises(CharnnError, match="hidden_size 32 \\(run: 24\\)"):
        train(bigger, resume=run)
    with pytest.raises(CharnnError, match="lr_decay cosine \\(run: linear\\)"):
        train(config_for(small_corpus, tmp_path, "run", lr_decay="cosine"), resume=run)


def test_a_resume_that_would_overwrite_later_training_or_has_no_step_left_is_refused(
    tmp_path, small_corpus
):
    config = config_for(small_corpus, tmp_path, "kept", max_steps=20, keep=4)
    train(config)
    run = tmp_path / "ck" / "kept"
    before = {name: (run / name).read_bytes() for name in ("best.pt", "last.pt")}
    with pytest.raises(CharnnError, match="holds later training .last.pt, step 20"):
        train(replace(config, max_steps=30), resume=run / "step-00000010.pt")
    with pytest.raises(CharnnError, match="is at step 20"):
        train(replace(config, max_steps=15), resume=run)
    assert {name: (run / name).read_bytes() for name in before} == before  # nothing rewritten
    assert train(replace(config, max_steps=25), resume=run).steps == 25  # going on still works


def test_a_run_saved_before_beta1_was_planned_resumes_with_pytorchs_0_9(tmp_path, small_corpus):
    train(config_for(small_corpus, tmp_path, "run", max_steps=8), stop_requested=stop_after(4))
    last = tmp_path / "ck" / "run" / "last.pt"
    payload = read_payload(last)
    assert payload["train_config"]["beta1"] == RunConfig.beta1 == 0.5  # under a pass: planned
    assert payload["optimizer_state"]["param_groups"][0]["betas"] == (0.5, BETA2)
    del payload["train_config"]["beta1"]  # as runs saved before --beta1 have them
    for group in payload["optimizer_state"]["param_groups"]:
        group["betas"] = (0.9, BETA2)
    save_atomic(payload, last)
    again = train(config_for(small_corpus, tmp_path, "run", max_steps=8), resume=last.parent)
    assert again.steps == 8
    resumed = read_payload(last)
    assert resumed["train_config"]["beta1"] == 0.9
    groups = resumed["optimizer_state"]["param_groups"]
    assert {group["betas"] for group in groups} == {(0.9, BETA2)}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_run_resumed_on_a_cpu_without_its_arithmetic_goes_on_in_fp32(
    tmp_path, small_corpus, monkeypatch, precision
):
    """A run planned in bf16 on a CPU with the kernel, resumed on one without it (an AVX2-only
    EPYC), or one trained in fp16 on a GPU and resumed on a CPU, trains on in fp32 and says so;
    asking for that precision there is refused."""
    train(config_for(small_corpus, tmp_path, "run", max_steps=8), stop_requested=stop_after(4))
    last = tmp_path / "ck" / "run" / "last.pt"
    payload = read_payload(last)
    payload["train_config"]["precision"] = precision  # as a run where it runs saves it
    if precision == "fp16":  # ...with its gradient scaler's state
        payload["resume"]["grad_scaler"] = {"scale": 1024.0, "growth_factor": 2.0,
            "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 3}  # fmt: skip
    save_atomic(payload, last)
    monkeypatch.setattr(charnn.nn.devices, "cpu_runs_lstm_in_bf16", lambda: False)
    with pytest.raises(CharnnError, match=f"^precision {precision}"):
        train(
            config_for(small_corpus, tmp_path, "run", max_steps=8, precision=precision),
            resume=last.parent,
        )
    notices: list = []
    again = train(
        config_for(small_corpus, tmp_path, "run", max_steps=8), notices.append, resume=last.parent
    )
    assert again.steps == 8
    assert read_payload(last)["train_config"]["precision"] == "fp32"
    said = [getattr(event, "message", "") for event in notices]
    assert f"this machine cannot train this model in {precision}: training in fp32 instead" in said


def test_a_run_diverging_before_its_first_save_says_nothing_was_saved(
    tmp_path, small_corpus, monkeypatch
):
    import charnn.training.trainer as trainer_module

    real = trainer_module.loss_on

    def poisoned(model, inputs, targets, state, labels=None):
        loss, new_state = real(model, inputs, targets, state, labels)
        return loss * float("nan"), new_state

    monkeypatch.setattr(trainer_module, "loss_on", poisoned)
    with pytest.raises(CharnnError, match="diverged at step 1: .*; nothing was saved; try"):
        train(config_for(small_corpus, tmp_path, "stop"))
    assert not (tmp_path / "ck" / "stop").exists()  # a folder with no checkpoint is not left


def test_non_finite_loss_stops_without_saving_it(tmp_path, small_corpus, monkeypatch):
    import charnn.training.trainer as trainer_module

    real = trainer_module.loss_on
    calls = {"n": 0}

    def poisoned(model, inputs, targets, state, labels=None):
        calls["n"] += 1
        loss, new_state = real(model, inputs, targets, state, labels)
        return (loss * float("nan") if calls["n"] == 8 else loss), new_state

    monkeypatch.setattr(trainer_module, "loss_on", poisoned)
    with pytest.raises(  # a brace in the run's name is shown as it is
        CharnnError, match=r"diverged at step 8.*st\{1\}p/last\.pt \(the last good state\) is kept"
    ):
        train(config_for(small_corpus, tmp_path, "st{1}p"))
    kept = load_checkpoint(tmp_path / "ck" / "st{1}p" / "last.pt")
    assert kept.step == 5  # the last good save
    assert all(torch.isfinite(p).all() for p in kept.model.parameters())

    calls["n"] = 0
    events = []
    result = train(
        config_for(small_corpus, tmp_path, "skip", on_nan="skip"), on_event=events.append
    )
    assert result.steps == 40
    assert any("batch skipped" in getattr(e, "message", "") for e in events)
    payload = read_payload(tmp_path / "ck" / "skip" / "last.pt")
    assert payload["resume"]["lr_scale"] == 0.5
    assert all(torch.isfinite(t).all() for t in payload["model_state"].values())


def test_init_from_extends_the_vocabulary(tmp_path, small_corpus):
    train(config_for(small_corpus, tmp_path, "base", max_steps=4))
    base = read_payload(tmp_path / "ck" / "base" / "last.pt")
    text = make_text(2_000, seed=5) + "Ωmega ☃\n"
    vocab = Vocab.from_text(base["vocab"] + text)
    ids = vocab.encode(text)
    trainer = Trainer(RunConfig.of(config_for(small_corpus, tmp_path, None)), vocab, ids, ids)
    trainer.transplant(base)
    old_rows = [vocab.chars.index(c) for c in base["vocab"]]
    assert torch.equal(trainer.model.embed.weight[old_rows], base["model_state"]["embed.weight"])
    assert torch.equal(trainer.model.decoder.bias[old_rows], base["model_state"]["decoder.bias"])
    assert {"Ω", "☃"} <= set(vocab.chars)


def test_cli_fine_tunes_and_refuses_a_mismatched_resume(tmp_path, trained):
    _, _, run = trained
    other = tmp_path / "other.txt"
    other.write_text(make_text(5_000, seed=2) + "Ωmega\n", encoding="utf-8")
    ck = tmp_path / "ck"
    proc = run_charnn(
        "train",
        str(other),
        "--init-from",
        str(run),
        "--max-steps",
        "3",
        "--checkpoint-dir",
        str(ck),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(run_charnn("info", str(ck / "other-lstm"), "--json").stdout)
    assert "Ω" in info["vocab"] and info["model_config"]["hidden_size"] == 32  # shape kept
    refused = run_charnn("train", str(other), "--resume", str(run), "--checkpoint-dir", str(ck))
    assert refused.returncode == 1 and "vocabulary differs" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_checkpoint_of_weights_alone_fine_tunes_but_is_not_resumed(tmp_path, trained):
    """A hand-made checkpoint (a model's shape, weights and vocabulary, no training state)."""
    _, _, run = trained
    payload = read_payload(run / "last.pt")
    weights_only = tmp_path / "weights.pt"
    torch.save({k: payload[k] for k in ("format_version", "model_config", "model_state",
                                        "vocab", "step", "metrics")}, weights_only)  # fmt: skip
    other = tmp_path / "other.txt"
    other.write_text(make_text(5_000, seed=2), encoding="utf-8")
    ck = tmp_path / "ck"
    refused = run_charnn("train", str(other), "--resume", str(weights_only),
                         "--checkpoint-dir", str(ck))  # fmt: skip
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"Error: {weights_only} cannot be resumed (its train_config, optimizer_state, resume are "
        f"missing or malformed): --init-from {weights_only} starts a new run from its weights"
    ]
    tuned = run_charnn("train", str(other), "--init-from", str(weights_only), "--max-steps", "2",
                       "--checkpoint-dir", str(ck), "--quiet")  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr
    shape = read_payload(ck / "other-lstm" / "last.pt")["model_config"]
    assert shape["hidden_size"] == payload["model_config"]["hidden_size"]  # its shape kept


def test_a_damaged_training_state_is_refused_in_one_line_and_nothing_is_written(tmp_path, trained):
    _, corpus, run = trained
    payload = read_payload(run / "last.pt")
    payload["optimizer_state"] = {}  # a dict, as it should be, but empty
    damaged = tmp_path / "run" / "last.pt"
    damaged.parent.mkdir()
    torch.save(payload, damaged)
    saved = damaged.read_bytes()
    proc = run_charnn("train", str(corpus), "--resume", str(damaged), "--max-steps", "40")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "Error: the checkpoint's saved training state is incomplete or damaged ('param_groups'): "
        "--init-from starts a new run from its weights"
    ]
    assert damaged.read_bytes() == saved  # the run's lock file aside, nothing else written
    assert sorted(p.name for p in damaged.parent.iterdir() if p.name != ".lock") == ["last.pt"]


def test_one_writer_per_run_folder(tmp_path, small_corpus):
    train(config_for(small_corpus, tmp_path, "run", max_steps=3))
    run = tmp_path / "ck" / "run"
    with locked(run):
        proc = run_charnn("train", str(small_corpus), "--resume", str(run), "--max-steps", "4",
                          "--quiet")  # fmt: skip
    assert proc.returncode == 1 and "being written by another" in proc.stderr
    proc = run_charnn(
        "train", str(small_corpus), "--resume", str(run), "--max-steps", "5", "--quiet"
    )
    assert proc.returncode == 0, proc.stderr  # the lock went with its holder
    assert load_checkpoint(run / "last.pt").step == 5


@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_every_checkpoint_loadable(tmp_path, corpus):
    rng = random.Random(0)
    ck = tmp_path / "ck"
    command = [
        *CHARNN,
        "train",
        str(corpus),
        "--resume",
        "auto",
        "--name",
        "run",
        "--checkpoint-dir",
        str(ck),
        "--time-budget",
        "1h",
        "--save-every",
        "1",
        "--eval-every",
        "7",
        "--keep",
        "3",
        *TINY,
    ]
    saved = 0  # the step of last.pt when each process starts
    for launch in range(5):
        lines_before = len(read_metrics_log(ck / "run"))
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(read_metrics_log(ck / "run")) == lines_before and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1].decode()  # it must be training
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))  # then kill it at a random moment, mid-save or not
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, stderr.decode()  # killed, not ended by itself
        new_lines = read_metrics_log(ck / "run")[lines_before:]
        assert new_lines and new_lines[0]["step"] == saved + 1, (launch, saved, new_lines[:1])
        for path in sorted((ck / "run").glob("*.pt")):
            load_checkpoint(path)  # raises if any file is damaged
        saved = load_checkpoint(ck / "run" / "last.pt").step
        assert saved >= new_lines[-1]["step"]  # every metrics line has a checkpoint behind it
        # a kill between a new snapshot and the pruning of the oldest leaves one over --keep
        assert len(list((ck / "run").glob("step-*.pt"))) <= 4
    finished = subprocess.run([*command, "--max-steps", str(saved + 2)], capture_output=True)
    assert finished.returncode == 0, finished.stderr.decode()
    assert load_checkpoint(ck / "run" / "last.pt").step == saved + 2
    assert len(list((ck / "run").glob("step-*.pt"))) == 3  # the next saves prune it back


def test_list_shows_runs(tmp_path, trained):
    root, _, run = trained
    proc = run_charnn("list", "--checkpoint-dir", str(run.parent), "--json")
    assert proc.returncode == 0, proc.stderr
    (entry,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert entry["name"] == run.name and entry["cell"] == "lstm" and entry["steps"] == 30
    table = run_charnn("list", "--checkpoint-dir", str(run.parent))
    assert run.name in table.stdout


def test_newer_checkpoint_format_is_refused(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format_version": 99}, path)
    with pytest.raises(CharnnError, match="newer than this charnn"):
        read_payload(path)
