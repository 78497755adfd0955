"""The weights' moving average: its arithmetic, its place in best.pt, and an exact resume."""

import pytest
import torch
from torch import nn

from charnn.checkpoints.format import read_payload
from charnn.checkpoints.loading import load_checkpoint
from charnn.checkpoints.summary import summarize_checkpoint
from charnn.config.model import ModelConfig
from charnn.config.train import TrainConfig
from charnn.errors import CharnnError
from charnn.training.average import WeightAverage
from charnn.training.trainer import Trainer, train

from conftest import TINY, make_text, run_charnn

SMALL = ModelConfig(layers=1, hidden_size=16, embed_size=8)


def test_the_average_moves_by_the_share_of_the_run_over_its_horizon():
    model = nn.Linear(3, 2)
    average = WeightAverage(model, horizon=0.25)
    start = [p.detach().clone() for p in model.parameters()]
    average.update(0.1)  # the first update starts the average at the live weights
    assert all(torch.equal(a, s) for a, s in zip(average.weights, start, strict=True))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(0.15)  # 0.05 of the run over a horizon of 0.25: a fifth of the way
    for a, s in zip(average.weights, start, strict=True):
        torch.testing.assert_close(a, s + 0.2)
    average.update(0.9)  # a step longer than the horizon takes the live weights whole
    for a, p in zip(average.weights, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.detach())


def test_the_averaged_weights_are_swapped_in_and_out_and_saved_apart():
    model = nn.Linear(3, 2)
    average = WeightAverage(model, horizon=0.5)
    average.update(0.0)
    first = model.weight.detach().clone()  # what the average holds
    with torch.no_grad():
        model.weight.mul_(3.0)
    live = model.weight.detach().clone()
    with average.swapped_in():
        assert torch.equal(model.weight, average.weights[0])
    assert torch.equal(model.weight, live)
    saved = average.model_state()
    with torch.no_grad():
        model.weight.zero_()
    assert torch.equal(saved["weight"], first)  # a copy, not a view of the live weights


def test_a_saved_average_loads_only_into_the_same_shapes():
    average = WeightAverage(nn.Linear(3, 2), horizon=0.5)
    average.update(0.3)
    other = WeightAverage(nn.Linear(3, 2), horizon=0.5)
    other.load_state_dict(average.state_dict())
    assert other.fraction == 0.3
    assert all(torch.equal(a, b) for a, b in zip(other.weights, average.weights, strict=True))
    with pytest.raises(ValueError, match="shapes"):
        WeightAverage(nn.Linear(4, 2), horizon=0.5).load_state_dict(average.state_dict())


def config_for(corpus, tmp_path, name, **overrides):
    settings = dict(corpus=str(corpus), model=SMALL, batch_size=4, seq_len=16, max_steps=30,
                    eval_every=10, save_every=5, device="cpu", seed=5, average=0.3,
                    checkpoint_dir=str(tmp_path / "ck"), name=name)  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(make_text(3_000), encoding="utf-8")
    return path


def test_where_the_average_scores_better_best_pt_holds_it_and_resumes_from_the_live_weights(
    tmp_path, corpus, monkeypatch
):
    """Scored better (here by a validation that says so), the average is what best.pt keeps and
    what sampling loads; a resume from that best.pt goes on from the live weights, as from
    last.pt saved at the same step."""

    def validate(trainer: Trainer) -> float:  # the average scores 1.0, the live weights 2.0
        live = next(trainer.model.parameters())
        average = trainer.average.weights[0] if trainer.average else None
        return 1.0 if average is not None and torch.equal(live, average) else 2.0

    monkeypatch.setattr(Trainer, "validate", validate)
    train(config_for(corpus, tmp_path, "run", max_steps=10))
    run = tmp_path / "ck" / "run"
    best, last = read_payload(run / "best.pt"), read_payload(run / "last.pt")
    assert best["weights"] == "average" and "weights" not in last
    assert best["metrics"]["live_val_bpc"] == 2.0 and best["metrics"]["average_val_bpc"] == 1.0
    assert best["metrics"]["val_bpc"] == 1.0
    for name, tensor in last["model_state"].items():
        assert torch.equal(best["resume"]["live_weights"][name], tensor), name
    averaged = best["resume"]["average"]["weights"]
    names = [name for name, _ in load_checkpoint(run / "best.pt").model.named_parameters()]
    assert any(not torch.equal(best["model_state"][n], last["model_state"][n]) for n in names)
    for name, tensor in zip(names, averaged, strict=True):
        assert torch.equal(best["model_state"][name], tensor), name
    loaded = load_checkpoint(run / "best.pt").model.state_dict()
    assert all(torch.equal(loaded[n], best["model_state"][n]) for n in names)
    assert summarize_checkpoint(run / "best.pt")["weights"] == "average"
    assert summarize_checkpoint(run / "last.pt")["weights"] == "live"

    monkeypatch.undo()
    from_best = train(config_for(corpus, tmp_path, "run", max_steps=20), resume=run / "best.pt")
    after_best = read_payload(run / "last.pt")
    train(config_for(corpus, tmp_path, "again", max_steps=10))
    train(config_for(corpus, tmp_path, "again", max_steps=20), resume=tmp_path / "ck" / "again")
    after_last = read_payload(tmp_path / "ck" / "again" / "last.pt")
    assert from_best.steps == 20
    for name, tensor in after_last["model_state"].items():
        assert torch.equal(after_best["model_state"][name], tensor), name


@pytest.mark.parametrize("k", [7, 23])
def test_a_stopped_and_resumed_run_keeps_the_same_average(tmp_path, corpus, k):
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > k

    train(config_for(corpus, tmp_path, "whole"))
    train(config_for(corpus, tmp_path, "cut"), stop_requested=stop)
    train(config_for(corpus, tmp_path, "cut"), resume=tmp_path / "ck" / "cut")
    a = read_payload(tmp_path / "ck" / "whole" / "last.pt")
    b = read_payload(tmp_path / "ck" / "cut" / "last.pt")
    # each update takes the fraction of the run done as its step began: 29/30 at the last
    assert a["resume"]["average"]["fraction"] == b["resume"]["average"]["fraction"] == 29 / 30
    for x, y in zip(a["resume"]["average"]["weights"], b["resume"]["average"]["weights"],
                    strict=True):  # fmt: skip
        assert torch.equal(x, y)
    assert a["metrics"]["average_val_bpc"] == b["metrics"]["average_val_bpc"]


def test_the_command_line_reports_both_scores_and_refuses_a_horizon_outside_the_run(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_text(4_000), encoding="utf-8")
    proc = run_charnn("train", str(corpus), "--max-steps", "12", "--eval-every", "6",
                      "--average", "0.5", "--checkpoint-dir", str(tmp_path / "ck"),
                      *[a for a in TINY if a != "--quiet"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "(live weights " in proc.stderr and ", average " in proc.stderr
    [run] = (tmp_path / "ck").iterdir()
    info = run_charnn("info", str(run / "last.pt"))
    assert info.returncode == 0 and "weights      live (live weights " in info.stdout
    bad = run_charnn("train", str(corpus), "--average", "1.5", *TINY)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "--average" in bad.stderr
    with pytest.raises(CharnnError, match="average must be a share of the run"):
        TrainConfig(corpus="x", average=-0.1)
