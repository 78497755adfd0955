"""ONNX: one step of every cell, run by onnxruntime, gives the next-character probabilities of
charnn's NumPy stepper along a 200-character walk."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from charnn.checkpoints.loading import LoadedModel
from charnn.config.model import CELLS, ModelSpec
from charnn.config.train import RunConfig
from charnn.nn.cells import SPECS
from charnn.nn.model import CharRNN
from charnn.nn.stepper import Stepper
from charnn.text.vocab import Vocab

from conftest import run_charnn

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
from charnn.export.onnx import export_onnx  # noqa: E402  (needs the onnx extra)

VOCAB = Vocab('\n !".?ABTabcdehilnorstw\u00e9\U0001f600')


def random_model(cell: str) -> LoadedModel:
    torch.manual_seed(0)
    spec = ModelSpec(vocab_size=len(VOCAB), cell=cell, layers=2, hidden_size=24, embed_size=7)
    model = CharRNN(spec).eval()
    with torch.no_grad():  # larger than the initialisation, so that every gate matters (a relu
        # RNN far larger grows its state, and float32 sums in other orders apart, step by step)
        for p in model.parameters():
            p.uniform_(-0.4, 0.4)
    return LoadedModel(model, VOCAB, Path(f"{cell}.pt"), RunConfig(), step=0)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_onnxruntime_walks_200_characters_as_the_numpy_stepper(cell, tmp_path):
    loaded = random_model(cell)
    path = export_onnx(loaded, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path))
    names = [i.name for i in session.get_inputs()]
    assert names == (["id", "h", "c"] if SPECS[cell].has_cell_state else ["id", "h"])
    walk = np.random.default_rng(1).integers(0, len(VOCAB), size=200)
    stepper = Stepper(loaded.model)
    state = stepper.state_from_torch(loaded.model.initial_state(1))
    feeds = {name: np.zeros((2, 1, 24), np.float32) for name in names[1:]}
    for i in walk:
        logits, state = stepper.step(np.array([i]), state)
        out = session.run(None, {"id": np.array([i], np.int64), **feeds})
        assert softmax(out[0]) == pytest.approx(softmax(logits), abs=1e-5)
        feeds = dict(zip(names[1:], out[1:], strict=True))
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["charnn_vocab"]) == VOCAB.chars and meta["charnn_cell"] == cell


def test_a_batch_of_rows_steps_independently(tmp_path):
    loaded = random_model("gru")
    session = ort.InferenceSession(str(export_onnx(loaded, tmp_path / "gru.onnx")))
    ids = np.array([3, 7, 3], np.int64)
    logits, h = session.run(None, {"id": ids, "h": np.zeros((2, 3, 24), np.float32)})
    assert logits.shape == (3, len(VOCAB)) and h.shape == (2, 3, 24)
    assert np.array_equal(logits[0], logits[2]) and not np.array_equal(logits[0], logits[1])


def test_export_from_the_command_line_writes_the_file_and_prints_its_path(trained, tmp_path):
    proc = run_charnn("export", str(trained[2]), "--format", "onnx", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "corpus-lstm.onnx")
    assert (tmp_path / "corpus-lstm.onnx").is_file()


def test_the_manuals_onnxruntime_example_samples_without_torch(trained, tmp_path):
    manual = (Path(__file__).resolve().parents[2] / "docs" / "export.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", manual, re.S)
    assert "torch" not in example and "charnn" not in example.replace('"charnn_', "")
    proc = run_charnn("export", str(trained[2]), "--format", "onnx",
                      "--out", str(tmp_path / "pydoc-lstm.onnx"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ran = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("The ") and len(ran.stdout.rstrip("\n")) >= 300
