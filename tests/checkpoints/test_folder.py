"""A run folder's checkpoint is recognised the same way everywhere: loading, finding the newest
run, listing, describing, resuming and claiming a folder for a new run."""

import json
import shutil
from pathlib import Path

import pytest

from charnn.checkpoints import folder
from charnn.checkpoints.format import make_payload, save_atomic
from charnn.checkpoints.loading import checkpoint_path, find_checkpoint, load_checkpoint
from charnn.checkpoints.summary import describe_checkpoint, list_runs
from charnn.config.model import ModelSpec
from charnn.config.train import RunConfig, TrainConfig
from charnn.errors import CharnnError
from charnn.nn.model import CharRNN
from charnn.text.vocab import Vocab
from charnn.training.prepare import resume_checkpoint

from conftest import run_charnn


def save(path: Path, step: int) -> None:
    """A checkpoint whose step tells which file it is."""
    model = CharRNN(ModelSpec(vocab_size=3, hidden_size=8, embed_size=4, layers=1))
    config = RunConfig(corpus="c.txt").to_dict()
    save_atomic(make_payload(model, Vocab("abc"), config, {}, step, {"val_bpc": 1.0}), path)


# what each folder holds, by file name -> the step of the checkpoint it stands for and resumes
FOLDERS = {
    "best-and-last": ({"best.pt": 2, "last.pt": 3, "step-00000001.pt": 1}, 2, 3),
    "last-only": ({"last.pt": 3}, 3, 3),
    "snapshots-only": ({"step-00000001.pt": 1, "step-00000010.pt": 10}, 10, 10),
    "nothing-saved": ({}, None, None),
    "someone-elses": ({"model.pt": 4}, None, None),
}


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "checkpoints"
    for name, (files, _, _) in FOLDERS.items():
        (root / name).mkdir(parents=True)
        (root / name / folder.METRICS_LOG).write_text(json.dumps({"step": 1}) + "\n")
        for file, step in files.items():
            save(root / name / file, step)
    return root


def step_of(path: Path) -> int:
    return load_checkpoint(path).step


@pytest.mark.parametrize("name", FOLDERS)
def test_every_reader_agrees_on_what_a_folder_holds(runs, name):
    _, stands_for, resumes = FOLDERS[name]
    run = runs / name
    assert folder.holds_checkpoint(run) == (stands_for is not None)
    config = TrainConfig(corpus="c.txt", checkpoint_dir=str(runs), name=name)
    resumed = resume_checkpoint(str(run), config, Path("c.txt"))
    assert resumed == resume_checkpoint("auto", config, Path("c.txt"))
    listed = {summary["name"] for summary in list_runs(runs)}
    assert (name in listed) == (stands_for is not None)
    if stands_for is None:
        assert resumed is None  # a run started there begins anew
        with pytest.raises(CharnnError, match="holds no best.pt, last.pt or step-N.pt"):
            checkpoint_path(run)
        assert folder.claim(runs, name, "x") == run  # taken as new...
        assert not (run / folder.METRICS_LOG).exists()  # ...its unsaved metrics cleared
        return
    assert step_of(checkpoint_path(run)) == stands_for
    assert step_of(resumed) == resumes
    assert describe_checkpoint(run)["step"] == stands_for
    with pytest.raises(CharnnError, match="already exists"):
        folder.claim(runs, name, "x")


def test_the_newest_run_is_found_by_its_newest_checkpoint_of_any_kind(runs):
    newest = runs / "snapshots-only"
    save(newest / "step-00000020.pt", 20)  # written last
    assert find_checkpoint(runs) == newest / "step-00000020.pt"
    shutil.rmtree(newest)
    assert find_checkpoint(runs).parent.name in ("best-and-last", "last-only")


def test_the_command_line_reads_a_folder_as_the_library_does(runs):
    for name in ("best-and-last", "snapshots-only"):
        proc = run_charnn("info", str(runs / name), "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["step"] == FOLDERS[name][1]
    proc = run_charnn("sample", str(runs / "nothing-saved"), "--length", "5")
    assert proc.returncode == 1 and "holds no best.pt" in proc.stderr


def test_a_checkpoint_folder_given_for_a_run_points_at_its_runs(runs):
    with pytest.raises(CharnnError, match="holds runs, not a run's checkpoints"):
        checkpoint_path(runs)
