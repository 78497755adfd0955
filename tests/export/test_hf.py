"""A shared model's folder (safetensors, config.json, a model card): every command reads it as
it reads the run it came from, nothing in it is a pickle, and a folder that lies is refused."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

import charnn
from charnn.checkpoints.hf import CARD, CONFIG, WEIGHTS
from charnn.errors import CharnnError

from conftest import run_charnn


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
    ],
    ids=["shapes that lie", "truncated", "a missing tensor", "a newer format", "no vocabulary"],
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
    copy = lying(folder, tmp_path, truncate)
    proc = run_charnn("sample", str(copy), "--length", "5")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "corrupt or truncated" in proc.stderr


def test_a_shared_model_fine_tunes_but_cannot_be_resumed(shared, tmp_path):
    _, folder, corpus = shared
    resumed = run_charnn("train", str(corpus), "--resume", str(folder), "--quiet")
    assert resumed.returncode == 1
    assert "holds no training state" in resumed.stderr and "--init-from" in resumed.stderr
    tuned = run_charnn("train", str(corpus), "--init-from", str(folder), "--max-steps", "2",
                       "--checkpoint-dir", str(tmp_path), "--quiet")  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr
    assert charnn.load(tmp_path / "corpus-lstm").model.config.hidden_size == 32
