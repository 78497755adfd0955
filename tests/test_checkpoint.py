import json

import pytest
import torch

from charnn.checkpoint import find_checkpoint, load_checkpoint, read_payload
from charnn.config import ModelConfig
from charnn.errors import CharnnError

from test_train import make_trainer


@pytest.fixture
def run_dir(tmp_path):
    trainer = make_trainer(
        "abcabdabeabf" * 40,
        run_dir=tmp_path / "run",
        max_steps=20,
        eval_every=10,
        model=ModelConfig(cell="gru", hidden_size=16),
    )
    (tmp_path / "run").mkdir()
    trainer.run()
    return trainer, tmp_path / "run"


def test_run_folder_holds_last_and_best(run_dir):
    _, folder = run_dir
    assert (folder / "last.pt").is_file() and (folder / "best.pt").is_file()
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 20]  # one line per save
    for line in lines:
        assert {"step", "time", "chars_per_sec", "train_loss", "val_bpc", "lr"} <= set(line)
        assert line["evaluated"] and line["chars_per_sec"] > 0 and line["lr"] > 0


def test_checkpoint_reloads_to_identical_logits(run_dir):
    trainer, folder = run_dir
    loaded = load_checkpoint(folder / "last.pt")
    ids = torch.randint(0, len(trainer.vocab), (3, 17))
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(trainer.model(ids)[0], loaded.model(ids)[0])
    assert loaded.vocab == trainer.vocab and loaded.step == 20
    assert loaded.model.config.cell == "gru"


def test_checkpoint_is_self_describing_and_weights_only(run_dir):
    _, folder = run_dir
    payload = torch.load(folder / "best.pt", weights_only=True)
    for key in (
        "format_version",
        "charnn_version",
        "model_config",
        "train_config",
        "vocab",
        "model_state",
        "optimizer_state",
        "step",
        "metrics",
    ):
        assert key in payload
    assert all(t.device.type == "cpu" for t in payload["model_state"].values())


def test_find_checkpoint_prefers_newest_run_and_filters_by_cell(run_dir, tmp_path):
    _, folder = run_dir
    assert find_checkpoint(tmp_path) == folder / "best.pt"
    with pytest.raises(CharnnError, match="no lstm run"):
        find_checkpoint(tmp_path, cell="lstm")
    with pytest.raises(CharnnError, match="no run found"):
        find_checkpoint(tmp_path / "empty")


def test_truncated_and_foreign_files_are_refused(run_dir, tmp_path):
    _, folder = run_dir
    data = (folder / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CharnnError, match="corrupt or truncated"):
        read_payload(truncated)


class _CreatesFile:
    def __reduce__(self):
        return (open, ("/tmp/charnn-pwned-marker", "w"))


def test_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path):
    import os

    marker = "/tmp/charnn-pwned-marker"
    if os.path.exists(marker):
        os.remove(marker)
    hostile = tmp_path / "hostile.pt"
    torch.save({"format_version": 1, "evil": _CreatesFile()}, hostile, pickle_protocol=2)
    assert not os.path.exists(marker)  # saving did not run it...
    with pytest.raises(CharnnError, match="refusing"):
        read_payload(hostile)
    assert not os.path.exists(marker)  # ...and neither did loading
