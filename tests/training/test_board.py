"""TensorBoard: what a run logs reads back with TensorBoard's own reader, a resumed run goes on
along the same curves, and a folder that cannot be written is refused before training."""

from __future__ import annotations

import json

import pytest

from charnn.config.model import ModelConfig
from charnn.config.train import TrainConfig
from charnn.training.trainer import train

from conftest import TINY, make_text, run_charnn

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402


def read_board(folder) -> EventAccumulator:
    board = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    board.Reload()
    return board


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_board_holds_what_the_run_measured(tmp_path, corpus):
    proc = run_charnn("train", str(corpus), "--max-steps", "40", "--eval-every", "20",
                      "--checkpoint-dir", str(tmp_path / "ck"), "--tensorboard",
                      str(tmp_path / "tb"), *TINY)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    board = read_board(tmp_path / "tb")
    evaluated = [m for m in metrics(tmp_path / "ck" / "corpus-lstm") if m["evaluated"]]
    val = board.Scalars("val/bits_per_char")
    assert [e.step for e in val] == [m["step"] for m in evaluated] == [20, 40]
    assert [e.value for e in val] == pytest.approx([m["val_bpc"] for m in evaluated], rel=1e-6)
    for name in ("train/bits_per_char", "train/learning_rate", "train/chars_per_sec",
                 "train/grad_norm"):  # fmt: skip
        values = [e.value for e in board.Scalars(name)]
        assert values and min(values) >= 0 and max(values) > 0  # the rate warms up from 0
    samples = board.Tensors("val/sample/text_summary")
    assert [e.step for e in samples] == [20, 40]
    text = samples[-1].tensor_proto.string_val[0].decode("utf-8")
    assert len(text.strip("`\n")) > 100  # a 200-character sample, shown as code
    plan = board.Tensors("run/plan/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"hidden_size": 32' in plan


def test_a_resumed_run_goes_on_along_the_same_curves(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_text(20_000), encoding="utf-8")
    settings = dict(corpus=str(corpus), eval_every=10, save_every=10, device="cpu", name="run",
                    checkpoint_dir=str(tmp_path / "ck"), tensorboard=str(tmp_path / "tb"),
                    model=ModelConfig(hidden_size=16, embed_size=8, layers=1))  # fmt: skip
    steps = iter(range(10**6))
    # stopped just after its evaluation and save at step 20: the resumed run starts there
    train(TrainConfig(max_steps=40, **settings), stop_requested=lambda: next(steps) >= 20)
    with SummaryWriter(str(tmp_path / "tb")) as late:  # as if logged past the save, then lost
        late.add_scalar("val/bits_per_char", 99.0, 25)
    train(TrainConfig(max_steps=40, **settings), resume=tmp_path / "ck" / "run")
    val = read_board(tmp_path / "tb").Scalars("val/bits_per_char")
    # once each: the saved step's own kept, what was logged past the save dropped
    assert [e.step for e in val] == [10, 20, 30, 40] and max(e.value for e in val) < 99
    train_steps = [e.step for e in read_board(tmp_path / "tb").Scalars("train/bits_per_char")]
    assert train_steps == sorted(train_steps)


def test_a_board_folder_that_cannot_be_written_is_refused_before_training(tmp_path, corpus):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    folders = ["--tensorboard", str(blocked / "tb"), "--checkpoint-dir", str(tmp_path / "ck")]
    proc = run_charnn("train", str(corpus), "--max-steps", "5", *folders, *TINY)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "cannot write TensorBoard's files" in proc.stderr and "--tensorboard" in proc.stderr
    assert not any((tmp_path / "ck").glob("*/*.pt"))  # nothing trained, nothing left
    assert not list((tmp_path / "ck").iterdir())
