"""`charnn export`: the web page's JavaScript stepper against NumPy's (under Node), the page in a
real headless Chromium, and the ml5 folder run through ml5's forward pass written in NumPy."""

from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from charnn.checkpoints.loading import LoadedModel, load_checkpoint
from charnn.config.model import CELLS, ModelSpec
from charnn.config.train import RunConfig
from charnn.export.ml5 import export_ml5
from charnn.export.web import model_json
from charnn.nn.model import CharRNN
from charnn.nn.stepper import Stepper
from charnn.text.vocab import Vocab

from conftest import needs, page_dom, run_charnn

VOCAB = Vocab('\n !".?ABTabcdehilnorstw\u00e9\U0001f600')  # one character outside the BMP


def random_model(cell: str, layers: int = 2, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    config = ModelSpec(
        vocab_size=len(VOCAB), cell=cell, layers=layers, hidden_size=24, embed_size=7
    )
    model = CharRNN(config).eval()
    with torch.no_grad():  # larger than the initialisation, so that every gate matters
        for p in model.parameters():
            p.uniform_(-0.6, 0.6)
    return LoadedModel(model, VOCAB, Path(f"{cell}.pt"), RunConfig(), step=0)


def stepper_probs(loaded: LoadedModel, ids: list[int]) -> np.ndarray:
    """charnn's NumPy stepper: the next-character probabilities after each id, (T, vocab)."""
    stepper = Stepper(loaded.model)
    state = stepper.state_from_torch(loaded.model.initial_state(1))
    rows = []
    for i in ids:
        logits, state = stepper.step(np.array([i]), state)
        rows.append(softmax(logits[0].astype(np.float64)))
    return np.array(rows)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


IDS = [0, 5, 9, 13, 2, 22, 23, 7, 7, 15, 1, 20, 4, 11]

NODE_DRIVER = """
const S = require(process.argv[2]);
const input = JSON.parse(require("fs").readFileSync(process.argv[3], "utf8"));
const model = S.loadModel(input.model);
let state = S.initialState(model);
const out = [];
for (const id of input.ids) {
  const r = S.step(model, state, id);
  state = r.state;
  out.push(Array.from(S.probabilities(r.logits, 1)));
}
console.log(JSON.stringify({ probs: out, vocab: model.vocab }));
"""


@pytest.mark.parametrize("cell", CELLS)
def test_javascript_stepper_equals_numpy(cell, tmp_path):
    node = needs("node")
    loaded = random_model(cell)
    (tmp_path / "driver.js").write_text(NODE_DRIVER)
    (tmp_path / "input.json").write_text(json.dumps({"model": model_json(loaded), "ids": IDS}))
    stepper_js = resources.files("charnn.export").joinpath("stepper.js")
    proc = subprocess.run(
        [node, tmp_path / "driver.js", str(stepper_js), tmp_path / "input.json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert "".join(answer["vocab"]) == VOCAB.chars  # code points, not UTF-16 halves
    js = np.array(answer["probs"])
    expected = stepper_probs(loaded, IDS)
    assert js.shape == expected.shape
    assert np.abs(js - expected).max() < 1e-5
    assert np.abs(expected[-1] - expected[0]).max() > 1e-2  # the state carried something


class Output(HTMLParser):
    """The generated text of the page's <pre id="output"> (the prime's span left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, str | None] = {}
        self.depth = 0  # inside the output element
        self.in_prime = False
        self.text = ""

    def handle_starttag(self, tag, attrs):
        if self.depth:
            self.depth += 1
            self.in_prime = dict(attrs).get("class") == "prime"
        elif dict(attrs).get("id") == "output":
            self.attrs, self.depth = dict(attrs), 1

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1
            self.in_prime = False

    def handle_data(self, data):
        if self.depth and not self.in_prime:
            self.text += data


def test_the_page_generates_in_headless_chromium(trained, tmp_path):
    needs("chromium")
    _, _, run_dir = trained
    page = tmp_path / "page.html"
    proc = run_charnn("export", str(run_dir), "--format", "html", "--out", str(page))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(page)
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"\b(src|href)\s*=", text)  # nothing fetched: no network, file:// works
    assert "default-src 'none'" in text  # and the browser is told to refuse any fetch

    dom = page_dom(page, tmp_path / "profile")
    output = Output()
    output.feed(dom)
    assert output.attrs.get("data-state") == "done", dom[-2000:]
    assert output.attrs.get("data-generated") == "500"
    assert len(output.text) == 500  # the page's default length
    vocab = load_checkpoint(run_dir).vocab
    assert set(output.text) <= set(vocab.chars)
    assert len(set(output.text)) > 5  # sampled, not one character repeated


# --- ml5 -----------------------------------------------------------------------------------


def ml5_load(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The variables as ml5's CharRNN.loadCheckpoints names them, from its manifest's files.

    Its rules (src/CharRNN/index.js): a name matching /cell_[0-9]|lstm_[0-9]/ is a layer's
    Kernel_N (if it also matches /weights|weight|kernel|kernels|w/, N its first digit) or Bias_N;
    one matching /softmax/ is fullyConnectedWeights or fullyConnectedBiases the same way; any
    other keeps its own name (such as "embedding")."""
    manifest = json.loads((folder / "manifest.json").read_text())
    model: dict[str, np.ndarray] = {}
    weights = re.compile(r"weights|weight|kernel|kernels|w", re.I)
    for key, entry in manifest.items():
        values = np.fromfile(folder / entry["filename"], dtype="<f4")
        tensor = values.reshape(entry["shape"]).astype(np.float64)
        if re.search(r"cell_[0-9]|lstm_[0-9]", key, re.I):
            digit = re.search(r"[0-9]", key).group()
            model[("Kernel_" if weights.search(key) else "Bias_") + digit] = tensor
        elif re.search(r"softmax", key, re.I):
            name = "fullyConnectedWeights" if weights.search(key) else "fullyConnectedBiases"
            model[name] = tensor
        else:
            model[key] = tensor
    vocab = json.loads((folder / "vocab.json").read_text())
    return model, vocab


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def ml5_probs(model: dict[str, np.ndarray], vocab: dict[str, int], text: str) -> np.ndarray:
    """ml5's generateInternal, feeding `text`: one-hot input, times `embedding` when there is
    one, through tf.multiRNNCell of tf.basicLSTMCell (forget bias 1.0), then the probabilities
    from state.h[1]; (len(text), vocab)."""
    cells = sum(1 for k in model if k.startswith("Kernel_"))
    size = len(vocab)
    c = [np.zeros((1, model[f"Bias_{i}"].shape[0] // 4)) for i in range(cells)]
    h = [np.zeros_like(x) for x in c]
    rows = []
    for char in text:
        onehot = np.zeros((1, size))
        onehot[0, vocab[char]] = 1.0
        data = onehot @ model["embedding"] if "embedding" in model else onehot
        for i in range(cells):  # tf.multiRNNCell: each cell's new h is the next one's input
            res = np.concatenate([data, h[i]], axis=1) @ model[f"Kernel_{i}"] + model[f"Bias_{i}"]
            i_, j, f, o = np.split(res, 4, axis=1)
            c[i] = sigmoid(i_) * np.tanh(j) + c[i] * sigmoid(1.0 + f)
            h[i] = np.tanh(c[i]) * sigmoid(o)
            data = h[i]
        logits = h[1] @ model["fullyConnectedWeights"] + model["fullyConnectedBiases"]
        probabilities = np.exp(logits / 1.0)  # ml5 divides by the temperature, here 1
        rows.append((probabilities / probabilities.sum())[0])
    return np.array(rows)


@pytest.mark.parametrize("cell", ["lstm", "cifg"])
def test_the_ml5_folder_gives_charnns_probabilities(cell, tmp_path):
    loaded = random_model(cell, seed=3)
    folder = export_ml5(loaded, tmp_path / "ml5")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "rnnlm/multi_rnn_cell/cell_1/basic_lstm_cell/kernel" in manifest
    for entry in manifest.values():  # raw float32, nothing else
        assert (folder / entry["filename"]).stat().st_size == 4 * np.prod(entry["shape"])
    model, vocab = ml5_load(folder)
    assert vocab == {c: i for i, c in enumerate(VOCAB.chars)}
    assert model["Kernel_0"].shape == (7 + 24, 4 * 24)
    text = "The cat. " + "\U0001f600\u00e9 Bah!"
    expected = stepper_probs(loaded, VOCAB.encode(text).tolist())
    assert np.abs(ml5_probs(model, vocab, text) - expected).max() < 1e-5


def test_ml5_export_from_the_command_line(tmp_path):
    loaded = random_model("lstm")
    path = tmp_path / "model.pt"
    torch.save(
        {
            "format_version": 1,
            "model_config": loaded.model.config.__dict__.copy(),
            "vocab": VOCAB.chars,
            "model_state": loaded.model.state_dict(),
            "step": 0,
            "metrics": {},
        },
        path,
    )
    proc = run_charnn("export", str(path), "--format", "ml5", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [
            "embedding", "manifest.json", "vocab.json", "rnnlm_softmax_b", "rnnlm_softmax_w",
            *(f"rnnlm_multi_rnn_cell_cell_{k}_basic_lstm_cell_{p}" for k in (0, 1)
              for p in ("kernel", "bias")),
        ]
    )  # fmt: skip
    model, vocab = ml5_load(tmp_path / "out")
    expected = stepper_probs(loaded, VOCAB.encode("hello world").tolist())
    assert np.abs(ml5_probs(model, vocab, "hello world") - expected).max() < 1e-5


@pytest.mark.parametrize(
    "cell, layers, says",
    [
        ("gru", 2, "LSTM models only"),
        ("rnn", 2, "LSTM models only"),
        ("peephole", 2, "no peephole"),
        ("mogrifier", 2, "no mogrifier rounds"),
        ("lstm", 1, "2-layer models only"),
        ("lstm", 3, "2-layer models only"),
    ],
)
def test_ml5_refuses_what_it_cannot_run(cell, layers, says, tmp_path):
    from charnn.errors import CharnnError

    with pytest.raises(CharnnError, match=says):
        export_ml5(random_model(cell, layers=layers), tmp_path / "ml5")
    assert not (tmp_path / "ml5").exists()


def test_export_errors_are_one_line(trained, tmp_path):
    _, _, run_dir = trained  # a 1-layer LSTM
    proc = run_charnn("export", str(run_dir), "--format", "ml5", "--out", str(tmp_path / "m"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1
    assert "2-layer" in proc.stderr and proc.stdout == ""
