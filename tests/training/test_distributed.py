"""Data-parallel training: 2 gloo processes on this machine against 1 process, and resuming
across world sizes. Also the pieces it rests on: the row split and the sharded validation."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from charnn.config.model import ModelSpec
from charnn.errors import CharnnError
from charnn.evaluation.scoring import stream_bounds, stream_nats, total_nats
from charnn.nn.model import CharRNN
from charnn.training.distributed import Ranks
from charnn.training.streams import fit_shape

from conftest import CHARNN, make_text, run_charnn

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
# validation of 20,000 x 0.5 characters is read as 2 streams: each rank computes one
SETTINGS = ["--batch-size", "8", "--seq-len", "16", "--hidden-size", "24", "--embed-size", "8",
            "--layers", "2", "--val-frac", "0.5", "--max-steps", "12", "--eval-every", "6",
            "--save-every", "6", "--keep", "3", "--seed", "5", "--quiet"]  # fmt: skip


def run_ranks(n: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [*TORCHRUN, str(n), *CHARNN[1:], *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def weights(path):
    return torch.load(path, weights_only=True)


def assert_same_run(a, b, tol=1e-5):
    for key, value in a["model_state"].items():
        assert torch.allclose(value, b["model_state"][key], atol=tol, rtol=0), key
    for x, y in zip(a["resume"]["hidden"], b["resume"]["hidden"], strict=True):
        assert x.shape == y.shape and torch.allclose(x, y, atol=tol, rtol=0)
    assert a["step"] == b["step"]
    assert a["metrics"]["val_bpc"] == pytest.approx(b["metrics"]["val_bpc"], abs=1e-6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same training run done by 1 process and by 2 gloo processes."""
    root = tmp_path_factory.mktemp("ddp")
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(20_000, seed=4), encoding="utf-8")
    ck = str(root / "ck")
    one = run_charnn("train", str(corpus), *SETTINGS, "--checkpoint-dir", ck, "--name", "one")
    assert one.returncode == 0, one.stderr
    two = run_ranks(2, "train", str(corpus), *SETTINGS, "--checkpoint-dir", ck, "--name", "two")
    assert two.returncode == 0, two.stderr
    return root, corpus, root / "ck"


@pytest.mark.slow
def test_two_processes_train_the_model_one_process_trains(runs):
    _, _, ck = runs
    one, two = weights(ck / "one" / "last.pt"), weights(ck / "two" / "last.pt")
    assert_same_run(one, two)
    assert one["train_config"]["batch_size"] == two["train_config"]["batch_size"] == 8
    changed = weights(ck / "two" / "step-00000006.pt")["model_state"]["rnn.weight_hh_l1"]
    assert not torch.allclose(changed, two["model_state"]["rnn.weight_hh_l1"])  # it trained
    # rank 0 alone wrote the files: one metrics line per save, no second writer
    lines = (ck / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


@pytest.mark.slow
@pytest.mark.parametrize("trained_by, resumed_by", [("two", 1), ("one", 2)])
def test_a_run_resumes_on_another_number_of_processes(runs, tmp_path, trained_by, resumed_by):
    _, corpus, ck = runs
    run = tmp_path / "run"
    run.mkdir()
    snapshot = run / "step-00000006.pt"
    snapshot.write_bytes((ck / trained_by / "step-00000006.pt").read_bytes())
    args = ["train", str(corpus), "--resume", str(snapshot), "--quiet"]
    proc = run_ranks(resumed_by, *args) if resumed_by > 1 else run_charnn(*args)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(weights(run / "last.pt"), weights(ck / "one" / "last.pt"))


@pytest.mark.slow
def test_a_batch_that_does_not_split_evenly_is_refused(runs):
    root, corpus, _ = runs
    ck = root / "refused"
    proc = run_ranks(2, "train", str(corpus), "--batch-size", "5", "--checkpoint-dir", str(ck))
    assert proc.returncode != 0
    assert "batch size 5 cannot be split evenly across 2 processes" in proc.stderr
    assert not list(ck.glob("*/*"))  # no run folder left behind


def test_rows_split_the_batch_into_equal_blocks():
    blocks = [Ranks(rank, 4).rows(8) for rank in range(4)]
    assert [list(range(8))[b] for b in blocks] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(CharnnError, match="multiple of 4"):
        Ranks(1, 4).rows(6)


def test_a_shrunk_batch_stays_divisible_by_the_number_of_processes():
    assert fit_shape(200, 64, 64, multiple=2).batch_size == 2  # 3 windows fit: 2 rows
    assert fit_shape(10_000, 64, 64, multiple=4).batch_size == 64  # fits: unchanged


def test_validation_shared_between_processes_adds_up_to_the_whole_figure():
    torch.manual_seed(0)
    model = CharRNN(ModelSpec(vocab_size=20, layers=2, hidden_size=16, embed_size=8))
    ids = np.random.default_rng(0).integers(0, 20, size=30_000)
    assert len(stream_bounds(len(ids) - 1)) == 7
    # shared between 3 processes: each computes some streams, the sums are added up
    shares = [stream_nats(model, ids, streams=range(r, 7, 3)) for r in range(3)]
    assert math.fsum(np.sum(shares, axis=0)) == pytest.approx(total_nats(model, ids), rel=1e-9)
    assert all(np.count_nonzero(share) == len(range(r, 7, 3)) for r, share in enumerate(shares))
