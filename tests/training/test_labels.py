"""A model conditioned on labels: each label's text read with its label, samples in one label or
a mix of two, a resumed labelled run, and the errors a labelled corpus or model can meet."""

from __future__ import annotations

import json
import random
import re
import shlex
from dataclasses import replace

import numpy as np
import pytest
import torch

import charnn
from charnn.checkpoints.loading import load_checkpoint
from charnn.config.model import CELLS, ModelConfig, ModelSpec
from charnn.config.train import TrainConfig
from charnn.errors import CharnnError
from charnn.evaluation.evaluator import evaluate_by_label
from charnn.generation.sampler import sample_batch
from charnn.nn.model import CharRNN
from charnn.nn.stepper import Stepper
from charnn.text.corpus import load_corpus
from charnn.text.sources import CorpusSpec
from charnn.training.trainer import train

from conftest import TINY, make_text, needs, page_dom, run_charnn


def write_styles(root, lines: int = 400) -> None:
    """Two labels whose texts share nothing but the line end: a's, and b's."""
    rng = random.Random(0)
    for label, char in (("ayes", "a"), ("bees", "b")):
        (root / label).mkdir(parents=True)
        text = "\n".join(char * rng.randint(3, 30) for _ in range(lines)) + "\n"
        (root / label / "text.txt").write_text(text, encoding="utf-8")


SMALL = ModelConfig(hidden_size=24, embed_size=8, layers=1, dropout=0.0, weight_drop=0.0)


def labelled(tmp_path, **settings) -> TrainConfig:
    defaults = dict(corpus=str(tmp_path / "styles"), label_from="folder", model=SMALL,
                    device="cpu", checkpoint_dir=str(tmp_path / "ck"), name="styles",
                    eval_every=100)  # fmt: skip
    return TrainConfig(**{**defaults, **settings})


@pytest.fixture(scope="module")
def styled(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    write_styles(root / "styles")
    train(labelled(root, max_steps=600))
    return root, load_checkpoint(root / "ck" / "styles")


def letters(loaded, **options) -> list[str]:
    """The letters of 16 samples of 300 characters (line ends left out), one string a sample."""
    config = charnn.SampleConfig(length=300, seed=1, num_samples=16, **options)
    return [text.replace("\n", "") for text in sample_batch(loaded, config)]


def share(texts: list[str], char: str) -> float:
    return sum(text.count(char) for text in texts) / sum(len(text) for text in texts)


def test_each_label_writes_its_own_characters_and_a_mix_writes_both(styled):
    _, loaded = styled
    assert loaded.labels == ("ayes", "bees")
    assert share(letters(loaded, label="ayes"), "a") > 0.97
    assert share(letters(loaded, label="bees"), "b") > 0.97
    mixed = letters(loaded, label="ayes=0.5,bees=0.5")  # each sample settles on one style
    assert {max(set(text), key=text.count) for text in mixed} == {"a", "b"}
    beam = sample_batch(loaded, charnn.SampleConfig(length=40, beam=3, label="bees"))[0]
    assert set(beam) - {"\n"} == {"b"}


def test_the_label_is_what_the_model_reads_its_text_by(styled):
    _, loaded = styled
    for score in evaluate_by_label(loaded):
        assert score.own < score.wrong - 0.05  # the wrong label makes the text a surprise
        assert score.own <= score.any + 0.05
    assert charnn.evaluate(loaded, label="ayes").bits_per_char > 0


def test_the_stepper_reads_a_label_and_a_mix_as_the_model_does():
    torch.manual_seed(0)
    for cell in CELLS:
        model = CharRNN(ModelSpec(vocab_size=9, cell=cell, hidden_size=12, embed_size=5,
                                  labels=3, label_size=4)).eval()  # fmt: skip
        stepper = Stepper(model)
        weights = np.array([[0.0, 0.3, 0.7, 0.0]])
        ids = torch.tensor([[1, 4, 2, 8, 0]])
        with torch.no_grad():
            expected, _ = model(ids, labels=model.mixed(torch.tensor(weights)))
        state = stepper.state_from_torch(model.initial_state(1))
        bias = stepper.label_bias(weights)
        for t in range(ids.shape[1]):
            logits, state = stepper.step(ids[0, t : t + 1].numpy(), state, bias)
            assert logits[0] == pytest.approx(expected[0, t].numpy(), abs=1e-5), cell


def test_a_resumed_labelled_run_is_the_run_not_interrupted(tmp_path):
    write_styles(tmp_path / "styles", lines=100)
    whole = train(labelled(tmp_path, max_steps=40, name="whole", save_every=10))
    steps = iter(range(10**6))
    config = labelled(tmp_path, max_steps=40, name="parts", save_every=10)
    train(config, stop_requested=lambda: next(steps) >= 20)
    train(config, resume=tmp_path / "ck" / "parts")
    one = load_checkpoint(whole.run_dir / "last.pt").model.state_dict()
    two = load_checkpoint(tmp_path / "ck" / "parts" / "last.pt").model.state_dict()
    assert all(torch.equal(one[name], two[name]) for name in one)


def test_a_labelled_run_resumes_without_repeating_how_its_corpus_is_read(tmp_path):
    write_styles(tmp_path / "styles", lines=100)
    small = ("--hidden-size", "24", "--embed-size", "8", "--layers", "1", "--device", "cpu")
    first = run_charnn("train", "styles", "--label-from", "folder", "--val-frac", "0.2",
                       "--max-steps", "10", "--name", "run", *small, cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = run_charnn("train", "styles", "--resume", "checkpoints/run", "--max-steps", "20",
                       cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    resumed = load_checkpoint(tmp_path / "checkpoints" / "run" / "last.pt")
    assert resumed.step == 20 and resumed.labels == ("ayes", "bees")
    assert resumed.train_config.val_frac == 0.2


def test_validation_holds_out_text_of_every_label(tmp_path):
    root = tmp_path / "styles"
    for label in ("poems", "letters"):
        for i in range(4):
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / f"{i}.txt").write_text(f"{label} {i} " * 20, encoding="utf-8")
    corpus = load_corpus(CorpusSpec((str(root),), label_from="folder"), val_frac=0.2)
    val_labels = np.asarray(corpus.label_ids)[corpus.val_start :]
    text = corpus.vocab.decode(corpus.ids[corpus.val_start :])
    assert {corpus.labels[k - 1] for k in set(val_labels.tolist())} == {"poems", "letters"}
    assert "poems 3" in text and "letters 3" in text and "poems 0" not in text  # whole, last
    chars = corpus.label_chars()  # each text, and the separators that end its documents
    assert sum(chars.values()) == len(corpus.ids) and chars["letters"] > chars["poems"] > 640


def test_a_label_of_many_documents_holds_out_the_documents_an_unlabelled_run_would(tmp_path):
    root = tmp_path / "styles"
    for label, count in (("letters", 20), ("poems", 30), ("zettel", 3)):
        (root / label).mkdir(parents=True)
        for i in range(count):
            (root / label / f"{i:02d}.txt").write_text(f"<{label} {i}> " * 5, encoding="utf-8")
    held = {}
    for label_from in ("folder", None):
        corpus = load_corpus(CorpusSpec((str(root),), label_from=label_from))
        text = corpus.vocab.decode(corpus.ids[corpus.val_start :])
        held[label_from] = set(re.findall(r"<(\w+ \d+)>", text))
    # every tenth of each label's own documents, from all over it; of a label of few, its last
    spread = {f"{label} {i}" for label, count in (("poems", 30), ("letters", 20))
              for i in range(9, count, 10)}  # fmt: skip
    assert held["folder"] == spread | {"zettel 2"}
    assert held[None] == spread  # the same files unlabelled: the same documents held out


def test_a_label_whose_last_documents_fall_short_holds_out_its_last_tenth(tmp_path):
    root = tmp_path / "styles"
    (root / "poems").mkdir(parents=True)
    (root / "poems" / "0.txt").write_text("p" * 3000, encoding="utf-8")
    (root / "poems" / "1.txt").write_text("qqqq", encoding="utf-8")  # too short a tenth
    (root / "letters").mkdir()
    for i in range(3):
        (root / "letters" / f"{i}.txt").write_text(f"letter {i} " * 30, encoding="utf-8")
    corpus = load_corpus(CorpusSpec((str(root),), label_from="folder"))
    held = np.asarray(corpus.label_ids)[corpus.val_start :]
    poems = int((held == corpus.labels.index("poems") + 1).sum())
    assert 300 <= poems <= 302  # a tenth of 3,005 characters, a document cut, not only "qqqq"
    assert corpus.vocab.decode(corpus.ids[corpus.val_start :]).count("p") >= 290
    (root / "empty").mkdir()
    (root / "empty" / "nothing.txt").write_text("", encoding="utf-8")
    with pytest.raises(CharnnError, match="'empty'.* has no text"):
        load_corpus(CorpusSpec((str(root),), label_from="folder"))


def test_labels_come_from_files_and_from_jsonl_and_csv_fields(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        "\n".join(json.dumps({"body": f"text {i}", "who": "ann" if i % 2 else "bob"})
                  for i in range(30)), encoding="utf-8")  # fmt: skip
    rows = load_corpus(CorpusSpec((str(tmp_path / "a.jsonl"),), label_from="field",
                                  text_field="body", label_field="who"))  # fmt: skip
    assert rows.labels == ("bob", "ann") and rows.documents == 30
    (tmp_path / "ids.jsonl").write_text(
        "\n".join(json.dumps({"text": f"post {i}", "label": i % 2}) for i in range(4)),
        encoding="utf-8")  # fmt: skip
    assert load_corpus(CorpusSpec((str(tmp_path / "ids.jsonl"),), label_from="field")).labels == (
        "0", "1")  # fmt: skip
    (tmp_path / "b.csv").write_text("text,label\nhello,x\nworld,y\n", encoding="utf-8")
    table = load_corpus(CorpusSpec((str(tmp_path / "b.csv"),), label_from="field"))
    assert table.labels == ("x", "y")  # each one row: its last two characters held out
    assert table.vocab.decode(table.ids) == "hel\nwor\nlo\nld"
    for name in ("one.txt", "two.txt"):
        (tmp_path / name).write_text(name * 10, encoding="utf-8")
    files = load_corpus(CorpusSpec((str(tmp_path / "one.txt"), str(tmp_path / "two.txt")),
                                   label_from="file"))  # fmt: skip
    assert files.labels == ("one", "two")


def test_a_row_without_its_fields_is_named_by_number(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(CharnnError, match=r"rows.jsonl row 2 has no 'label' field"):
        load_corpus(CorpusSpec((str(path),), label_from="field"))


def test_unknown_and_unwanted_labels_are_refused_in_one_line(styled, trained):
    root, _ = styled
    unknown = run_charnn("sample", str(root / "ck" / "styles"), "--label", "cees")
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1
    assert "--label 'cees' is not a label of this model: it knows ayes, bees" in unknown.stderr
    plain = run_charnn("sample", str(trained[2]), "--label", "ayes")
    assert plain.returncode == 1 and "trained without labels" in plain.stderr


def test_a_label_with_little_text_is_named_at_the_start(tmp_path):
    root = tmp_path / "styles"
    (root / "big").mkdir(parents=True)
    (root / "tiny").mkdir()
    (root / "big" / "t.txt").write_text(make_text(30_000), encoding="utf-8")
    (root / "tiny" / "t.txt").write_text(make_text(400, seed=1), encoding="utf-8")
    notices: list = []
    train(labelled(tmp_path, max_steps=2), notices.append)
    said = [getattr(n, "message", "") for n in notices]
    assert any(re.match(r"label 'tiny' has 40\d characters, 1.\d% of the corpus", m) for m in said)


def test_info_and_serve_name_the_labels(styled):
    root, _ = styled
    info = run_charnn("info", str(root / "ck" / "styles"))
    assert "labels       2 and any: ayes 49." in info.stdout or "ayes 50." in info.stdout


LABELLED_DRIVER = """
const S = require(process.argv[2]);
const input = JSON.parse(require("fs").readFileSync(process.argv[3], "utf8"));
const model = S.loadModel(input.model);
const label = S.labelVector(model, input.weights);
let state = S.initialState(model);
const out = [];
for (const id of input.ids) {
  const r = S.step(model, state, id, label);
  state = r.state;
  out.push(Array.from(r.logits));
}
console.log(JSON.stringify(out));
"""


def test_the_web_pages_stepper_reads_a_label_mix_as_numpy_does(styled, tmp_path):
    import shutil
    import subprocess
    from importlib import resources

    from charnn.export.web import model_json

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    _, loaded = styled
    weights = [0.0, 0.25, 0.75]
    ids = [0, 1, 1, 2, 0, 2, 2]
    (tmp_path / "driver.js").write_text(LABELLED_DRIVER)
    (tmp_path / "input.json").write_text(
        json.dumps({"model": model_json(loaded), "ids": ids, "weights": weights})
    )
    stepper_js = resources.files("charnn.export").joinpath("stepper.js")
    proc = subprocess.run([node, tmp_path / "driver.js", str(stepper_js), tmp_path / "input.json"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    stepper = Stepper(loaded.model)
    state = stepper.state_from_torch(loaded.model.initial_state(1))
    bias = stepper.label_bias(np.array([weights]))
    for i, js in zip(ids, json.loads(proc.stdout), strict=True):
        logits, state = stepper.step(np.array([i]), state, bias)
        assert np.abs(np.array(js) - logits[0]).max() < 1e-4


def test_the_server_samples_in_a_label_as_charnn_sample_does(styled):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from charnn.serve.app import ServeSettings, create_app

    _, loaded = styled
    with TestClient(create_app(loaded, ServeSettings())) as client:
        assert client.get("/v1/model").json()["labels"] == ["ayes", "bees"]
        body = {"length": 60, "seed": 4, "label": "bees", "prime": "b"}
        served = client.post("/v1/sample", json=body).json()["samples"][0]["text"]
        refused = client.post("/v1/sample", json={**body, "label": "cees"})
    config = charnn.SampleConfig(length=60, seed=4, label="bees", prime="b")
    assert served == sample_batch(loaded, config)[0]
    assert refused.status_code == 400 and "it knows ayes, bees" in refused.json()["error"]


def test_viz_reads_the_text_in_a_label_as_the_model_does(styled):
    from charnn.inspect.trace import trace

    root, loaded = styled
    text = "aaab\nbbb"
    ids = torch.from_numpy(loaded.vocab.encode(text))[None]
    for label, k in ((None, 0), ("ayes", 1), ("bees", 2)):
        traced = trace(loaded, text, label)
        with torch.no_grad():
            probs = torch.softmax(loaded.model(ids, labels=torch.tensor([k]))[0][0], dim=-1)
        for t, guesses in enumerate(traced.next_chars):
            char, p = guesses[0]
            assert char == loaded.vocab.chars[int(probs[t].argmax())], (label, t)
            assert p == pytest.approx(float(probs[t].max()), abs=1e-5), (label, t)
    run = str(root / "ck" / "styles")
    shown = run_charnn("viz", run, "--text", text, "--label", "bees", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "".join(json.loads(shown.stdout)["chars"]) == text
    unknown = run_charnn("viz", run, "--text", text, "--label", "cees")
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1
    assert "--label 'cees' is not a label of this model: it knows ayes, bees" in unknown.stderr


def test_dynamic_evaluation_reads_each_character_in_its_label(styled, tmp_path, monkeypatch):
    from charnn.evaluation import dynamic

    _, loaded = styled
    static = charnn.evaluate(loaded)  # the validation split, each character in its own label
    assert abs(charnn.evaluate(loaded, label="any").bits_per_char - static.bits_per_char) > 1e-3
    # with steps of 0 the weights never move: dynamic evaluation must read as the static one
    monkeypatch.setattr(dynamic, "choose_settings", lambda *_: dynamic.DynamicSettings(0.0, 0.0))
    adapted = dynamic.evaluate_dynamic(loaded)
    assert adapted.bits_per_char == pytest.approx(static.bits_per_char, rel=1e-5)
    bees = tmp_path / "bees.txt"
    bees.write_text("\n".join("b" * (3 + i % 20) for i in range(120)), encoding="utf-8")
    one = charnn.evaluate(loaded, bees, label="bees")
    assert abs(charnn.evaluate(loaded, bees).bits_per_char - one.bits_per_char) > 1e-3
    adapted = dynamic.evaluate_dynamic(loaded, bees, tune_on=bees, label="bees")
    assert adapted.bits_per_char == pytest.approx(one.bits_per_char, rel=1e-5)
    ids, tags = dynamic._training_tail(loaded, None)  # the steps are set on labelled text too
    assert tags is not None and len(tags) == len(ids) > 1_000
    for k, letter in ((1, "a"), (2, "b")):
        assert set(loaded.vocab.decode(ids[tags == k])) == {letter, "\n"}


def test_a_label_with_too_little_validation_text_is_left_out_with_a_note(tmp_path):
    root = tmp_path / "styles"
    for name, text in (("big", make_text(3_000)), ("large", make_text(3_000, 1)), ("tiny", "xyz")):
        (root / name).mkdir(parents=True)
        (root / name / "t.txt").write_text(text, encoding="utf-8")
    proc = run_charnn("train", str(root), "--label-from", "folder", "--max-steps", "2",
                      "--checkpoint-dir", str(tmp_path / "ck"), *TINY)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = str(tmp_path / "ck" / "styles-lstm")
    as_json, table = (run_charnn("eval", run, "--by-label", *extra) for extra in (["--json"], []))
    for proc in (as_json, table):
        assert proc.returncode == 0, proc.stderr
        assert "note: label 'tiny' has too little validation text to score" in proc.stderr
        assert "-0.0000" not in proc.stdout and "Traceback" not in proc.stderr
    assert [json.loads(line)["label"] for line in as_json.stdout.splitlines()] == ["big", "large"]
    both = run_charnn("eval", run, "--by-label", "--label", "big")
    assert both.returncode == 2 and "no --label" in both.stderr  # not silently ignored


def test_a_short_label_of_one_document_holds_out_two_characters(tmp_path):
    root = tmp_path / "styles"
    for name, text in (("long", "l" * 300), ("short", "abcdefghijklmno")):  # a tenth of 15: 1
        (root / name).mkdir(parents=True)
        (root / name / "t.txt").write_text(text, encoding="utf-8")
    corpus = load_corpus(CorpusSpec((str(root),), label_from="folder"), val_frac=0.1)
    val = slice(corpus.val_start, None)
    short = np.asarray(corpus.label_ids)[val] == corpus.labels.index("short") + 1
    assert corpus.vocab.decode(np.asarray(corpus.ids)[val][short]) == "no"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("any", 'built-in label for text of no label, "any"'),
        ("a,b", "write a mix of labels"),
        ("x=1", "write a mix of labels"),
        (" x", "starts or ends with whitespace"),
        ("", "it is empty"),
    ],  # fmt: skip
)
def test_a_label_that_could_never_be_asked_for_is_refused(tmp_path, name, why):
    rows = [{"text": f"text {i}", "label": name if i % 2 else "ok"} for i in range(10)]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    with pytest.raises(CharnnError) as refused:
        load_corpus(CorpusSpec((str(path),), label_from="field"))
    line = str(refused.value)
    assert "\n" not in line and f"the label {name!r} (from label_from field)" in line
    assert why in line and "could never be asked for" in line, line


def test_a_folder_named_any_is_refused_before_training(tmp_path):
    write_styles(tmp_path / "styles", lines=20)
    (tmp_path / "styles" / "bees").rename(tmp_path / "styles" / "any")
    proc = run_charnn("train", str(tmp_path / "styles"), "--label-from", "folder",
                      "--checkpoint-dir", str(tmp_path / "ck"), *TINY)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "the label 'any' (from --label-from folder) could never be asked for" in proc.stderr
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").iterdir())


def test_a_mix_may_have_spaces_around_its_names_and_weights(styled):
    from charnn.config.sample import label_weights

    _, loaded = styled
    assert label_weights(" ayes = 3 , bees=1 ") == {"ayes": 0.75, "bees": 0.25}
    assert label_weights("ayes=1e308,bees=1e308") == {"ayes": 0.5, "bees": 0.5}  # no overflow
    with pytest.raises(CharnnError, match="must be a label, or labels with weights"):
        label_weights("ayes=,bees=1")  # a weight left out is not a weight of 1
    spaced = charnn.SampleConfig(length=40, seed=3, label="ayes = 1")
    assert sample_batch(loaded, spaced) == sample_batch(loaded, replace(spaced, label="ayes"))


def test_a_shared_labelled_model_says_its_labels_and_its_example_runs(styled, tmp_path):
    root, _ = styled
    out = tmp_path / "voices"
    exported = run_charnn("export", str(root / "ck" / "styles"), "--format", "hf", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Labels (`--label NAME`" in card and "`ayes`, `bees`" in card
    command = next(line for line in card.splitlines() if line.startswith("charnn sample"))
    assert "--label ayes" in command and "--prime" not in command  # no "T" in this vocabulary
    proc = run_charnn(*shlex.split(command)[1:], "--seed", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.replace("\n", "")
    assert text.count("a") > 0.9 * len(text)  # in the voice of "ayes"
    run = run_charnn("sample", str(root / "ck" / "styles"), "--length", "500", "--label", "ayes",
                     "--seed", "1")  # fmt: skip
    assert proc.stdout == run.stdout  # the shared folder writes what the run writes


def test_a_label_that_looks_like_markup_leaves_the_web_page_working(styled, tmp_path):
    import html

    from charnn.export.web import export_html, model_json, script_json

    _, loaded = styled
    odd = replace(loaded, labels=("<!--<script>", "</script><b>"))
    embedded = script_json(model_json(odd))
    assert "<" not in embedded and json.loads(embedded)["labels"] == list(odd.labels)
    needs("chromium")
    page = export_html(odd, tmp_path / "odd.html")
    dom = page_dom(page, tmp_path / "profile")
    options = re.findall(r"<option[^>]*>(.*?)</option>", dom)
    assert [html.unescape(option) for option in options] == ["any", *odd.labels]
    assert re.search(r'id="output"[^>]*data-state="done"', dom), dom[-2000:]
