"""A shared model's folder (safetensors, config.json, a model card): every command reads it as
it reads the run it came from, nothing in it is a pickle, and a folder that lies is refused."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import charnn
from charnn.checkpoints.hf import CARD, CONFIG, WEIGHTS
from charnn.errors import CharnnError

from conftest import TINY, make_text, run_charnn


@pytest.fixture(scope="module")
def shared(trained, tmp_path_factory):
    root, corpus, run = trained
    folder = tmp_path_factory.mktemp("hf") / "tiny-lstm"
    proc = run_charnn("export", str(run), "--format", "hf", "--out", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(folder)
    return run, folder, corpus


def output(*args: str) -> str:
    proc = run_charnn(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_folder_samples_scores_and_describes_as_its_run_does(shared):
    run, folder, corpus = shared
    for args in (["sample", "--seed", "1", "--length", "80", "--prime", "The "],
                 ["eval", "--json"], ["eval", str(corpus), "--json"]):  # fmt: skip
        assert output(args[0], str(folder), *args[1:]) == output(args[0], str(run), *args[1:])
    info, from_run = (json.loads(output("info", str(p), "--json")) for p in (folder, run))
    for field in ("step", "vocab", "parameters", "metrics", "model_config", "train_config",
                  "plan", "val_bpc_history"):  # fmt: skip
        assert info[field] == from_run[field], field
    page = run_charnn("export", str(folder), "--format", "html", "--out", str(folder.parent))
    assert page.returncode == 0 and (folder.parent / "tiny-lstm.html").is_file()
    traced = json.loads(output("viz", str(folder), "--text", "the cell state", "--json"))
    assert "".join(traced["chars"]) == "the cell state"


def test_python_loads_the_folder_as_the_run(shared):
    run, folder, _ = shared
    model, original = charnn.load(folder), charnn.load(run)
    assert model.vocab == original.vocab and model.train_config == original.train_config
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(model.model.state_dict()[name], tensor), name


def test_nothing_in_the_folder_is_a_pickle(shared):
    _, folder, corpus = shared
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS, CONFIG, CARD])
    weights = load_file(folder / WEIGHTS)  # safetensors: a header and raw bytes
    assert "rnn.weight_hh_l0" in weights and "embed.weight" in weights
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    assert config["charnn_format"] == 1 and config["vocab"] == charnn.load(folder).vocab.chars
    assert corpus.read_text(encoding="utf-8")[:200] not in (folder / CONFIG).read_text()


def test_the_model_card_has_the_hubs_front_matter_and_the_corpus_by_name_and_hash(shared):
    run, folder, corpus = shared
    card = (folder / CARD).read_text(encoding="utf-8")
    front = card.split("---\n")[1]
    assert re.search(r'^library_name: "charnn"$', front, re.M)
    best = charnn.load(run).metrics["best_val_bpc"]
    index = json.loads(re.search(r"^model-index: (.*)$", front, re.M).group(1))
    assert index[0]["results"][0]["metrics"][0]["value"] == best
    size = corpus.stat().st_size
    assert f"| {corpus.name} | {size:,} |" in card
    assert "charnn sample tiny-lstm" in card
    assert corpus.read_text(encoding="utf-8")[:200] not in card


def lying(folder, tmp_path, edit):
    copy = tmp_path / "lying"
    copy.mkdir()
    for name in (WEIGHTS, CONFIG, CARD):
        (copy / name).write_bytes((folder / name).read_bytes())
    edit(copy)
    return copy


def edit_config(**changes):
    def edit(folder):
        config = json.loads((folder / CONFIG).read_text())
        for key, value in changes.items():
            if key == "hidden_size":
                config["model_config"]["hidden_size"] = value
            else:
                config[key] = value
        (folder / CONFIG).write_text(json.dumps(config))

    return edit


def truncate(folder):
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])


def drop_a_character(folder):
    config = json.loads((folder / CONFIG).read_text())
    config["vocab"] = config["vocab"][:-1]  # still distinct and in order: a Vocab of its own
    (folder / CONFIG).write_text(json.dumps(config))


def drop_tensor(folder):
    weights = load_file(folder / WEIGHTS)
    del weights["decoder.bias"]
    save_file(weights, folder / WEIGHTS)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (edit_config(hidden_size=64), r"not a usable charnn checkpoint \(.*size mismatch"),
        (truncate, "model.safetensors is corrupt or truncated"),
        (drop_tensor, r"not a usable charnn checkpoint \(.*decoder.bias"),
        (edit_config(charnn_format=99), "config.json has charnn format 99, newer than"),
        (edit_config(vocab=None), "its vocab is missing or malformed"),
        (drop_a_character, r"its vocab has \d+ characters but its model_config a vocab_size of"),
        (edit_config(labels=[1, 2, 3]), "its label names are not all strings: 1, 2, 3"),
    ],
    ids=[
        "shapes that lie",
        "truncated",
        "a missing tensor",
        "a newer format",
        "no vocabulary",
        "a vocabulary one short",
        "labels that are no names",
    ],  # fmt: skip
)
def test_a_folder_that_lies_is_refused_in_one_line_naming_it(shared, tmp_path, edit, says):
    _, folder, _ = shared
    copy = lying(folder, tmp_path, edit)
    with pytest.raises(CharnnError) as refused:
        charnn.load(copy)
    line = str(refused.value)
    assert "\n" not in line and str(copy) in line and re.search(says, line), line


def test_the_command_line_refuses_a_lying_folder_in_one_line(shared, tmp_path):
    _, folder, _ = shared
    for edit, says in ((truncate, "corrupt or truncated"), (drop_a_character, "vocab_size of")):
        (tmp_path / edit.__name__).mkdir()
        copy = lying(folder, tmp_path / edit.__name__, edit)
        proc = run_charnn("sample", str(copy), "--length", "5")
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_a_folder_that_holds_other_files_is_not_written_into(shared, tmp_path):
    run = tmp_path / "run"  # a copy: the shared run must survive this test failing
    shutil.copytree(shared[0], run)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my own notes", encoding="utf-8")
    for target in (mine, run):  # someone's folder, and the run folder itself
        before = sorted(p.name for p in target.iterdir())
        proc = run_charnn("export", str(run), "--format", "hf", "--out", str(target))
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "already holds files and is not a charnn model's folder" in proc.stderr
        assert "--out" in proc.stderr and sorted(p.name for p in target.iterdir()) == before
    assert (mine / "README.md").read_text(encoding="utf-8") == "my own notes"
    again = tmp_path / "again"
    (again / ".git").mkdir(parents=True)  # a fresh clone of a Hub repository: hidden files only
    for _ in range(2):  # a new folder, then the shared model's folder it now is: replaced
        proc = run_charnn("export", str(run), "--format", "hf", "--out", str(again))
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in again.iterdir()) == sorted([".git", WEIGHTS, CONFIG, CARD])


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A run on three labels (each a folder of the corpus), and its shared folder."""
    root = tmp_path_factory.mktemp("labelled")
    for seed, label in enumerate("ABC"):
        (root / "styles" / label).mkdir(parents=True)
        (root / "styles" / label / "t.txt").write_text(make_text(6_000, seed), encoding="utf-8")
    proc = run_charnn("train", str(root / "styles"), "--label-from", "folder", "--max-steps",
                      "4", "--checkpoint-dir", str(root / "ck"), *TINY)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run, folder = root / "ck" / "styles-lstm", root / "hf" / "styles"
    proc = run_charnn("export", str(run), "--format", "hf", "--out", str(folder))
    assert proc.returncode == 0, proc.stderr
    return run, folder


def test_a_labelled_model_shares_its_labels(labelled):
    run, folder = labelled
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    assert config["labels"] == ["A", "B", "C"]
    assert set(config["label_chars"]) == {"A", "B", "C"}
    assert all(isinstance(n, int) and n > 5_000 for n in config["label_chars"].values())
    for args in (
        ["sample", "--seed", "1", "--length", "80", "--label", "B"],
        ["sample", "--seed", "1", "--length", "80", "--label", "A=1,C=2"],
        ["eval", "--json"],
        ["eval", "--by-label", "--json"],
        ["info", "--json"],
    ):
        from_run, from_folder = (output(args[0], str(p), *args[1:]) for p in (run, folder))
        if args[0] == "info":  # the paths differ
            from_run, from_folder = (json.loads(t)["labels"] for t in (from_run, from_folder))
        assert from_folder == from_run, args
    model, original = charnn.load(folder), charnn.load(run)
    assert model.labels == original.labels == ("A", "B", "C")
    ids = torch.from_numpy(original.vocab.encode("The cell state"))[None]
    with torch.no_grad():
        for k in range(4):  # "any", then each label
            labels = torch.tensor([k])
            assert torch.equal(model.model(ids, labels=labels)[0],
                               original.model(ids, labels=labels)[0]), k  # fmt: skip


def test_a_shared_model_fine_tunes_but_cannot_be_resumed(shared, tmp_path):
    _, folder, corpus = shared
    resumed = run_charnn("train", str(corpus), "--resume", str(folder), "--quiet")
    assert resumed.returncode == 1
    assert "holds no training state" in resumed.stderr and "--init-from" in resumed.stderr
    tuned = run_charnn("train", str(corpus), "--init-from", str(folder), "--max-steps", "2",
                       "--checkpoint-dir", str(tmp_path), "--quiet")  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr
    assert charnn.load(tmp_path / "corpus-lstm").model.config.hidden_size == 32
