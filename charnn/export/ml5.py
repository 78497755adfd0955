"""A model as the folder that ml5.js's charRNN loads (`ml5.charRNN("path/to/folder/")`).

What ml5's loader (src/CharRNN/index.js and utils/checkpointLoader.js) reads:
- manifest.json: {variable name: {"filename": ..., "shape": [...]}}, the names TensorFlow 1
  gave the variables of ml5's training script, each file the variable's raw float32 bytes;
- vocab.json: {character: id};
- per layer k, rnnlm/multi_rnn_cell/cell_k/basic_lstm_cell/{kernel,bias}, run by
  tf.basicLSTMCell: [x, h]·kernel + bias, split into gates i, j (candidate), f, o, with 1.0
  added to f before its sigmoid; `embedding` (vocab, E), which ml5 multiplies by the one-hot
  input; rnnlm/softmax_w (H, vocab) and rnnlm/softmax_b, applied to the state of layer 1.

So charnn's LSTM maps onto it exactly: kernel = [W_ih; W_hh]ᵀ with the gate columns reordered,
bias = b_ih + b_hh with 1 taken off the forget gate's. A cifg model is an LSTM whose input gate is
σ(−a_f) = 1 − f, so it is written as one with the forget gate's weights negated as the input
gate's. Nothing else fits: ml5 runs no other cell and reads layer 1's output (`state.h[1]`)
whatever the depth, so only 2-layer models give it the right probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from charnn.checkpoints.loading import LoadedModel
from charnn.errors import CharnnError, SettingError
from charnn.nn.cells import SPECS

CELL = "rnnlm/multi_rnn_cell/cell_{k}/basic_lstm_cell/{part}"
TF_GATES = ("input", "candidate", "forget", "output")  # BasicLSTMCell's i, j, f, o
TF_FORGET_BIAS = 1.0


def check_exportable(loaded: LoadedModel) -> None:
    config = loaded.model.config
    if loaded.labels:
        raise SettingError(
            "ml5's charRNN has no labels, and this model was trained on them: export it with "
            "{format} html instead"
        )
    if config.cell not in ("lstm", "cifg"):
        why = {
            "peephole": "its basic LSTM cell has no peephole connections",
            "gru": "it has no GRU cell",
            "mogrifier": "its basic LSTM cell has no mogrifier rounds",
        }.get(config.cell, "it has no plain RNN cell")
        raise SettingError(
            f"ml5's charRNN runs LSTM models only ({why}), and this is a {config.cell} model: "
            "export it with {format} html instead"
        )
    if config.layers != 2:
        raise SettingError(
            "ml5's charRNN predicts from the output of its second layer (state.h[1]) whatever "
            f"the depth, so it runs 2-layer models only; this one has {config.layers}: "
            "export it with {format} html instead"
        )


def variables(loaded: LoadedModel) -> dict[str, np.ndarray]:
    """ml5's variables, by their TensorFlow names, as float32 arrays."""
    check_exportable(loaded)
    model = loaded.model
    spec = SPECS[model.config.cell]
    H = model.hidden_size
    params = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
    out = {"embedding": params["embed.weight"]}
    for k in range(model.config.layers):
        w = np.concatenate([params[f"rnn.weight_ih_l{k}"], params[f"rnn.weight_hh_l{k}"]], axis=1)
        b = params[f"rnn.bias_ih_l{k}"] + params[f"rnn.bias_hh_l{k}"]

        def block(gate: str, w: np.ndarray = w, b: np.ndarray = b) -> tuple[np.ndarray, np.ndarray]:
            if gate == "input" and spec.name == "cifg":  # i = 1 − σ(a_f) = σ(−a_f)
                w_f, b_f = block("forget")
                return -w_f, -b_f
            rows = spec.rows(gate, H)
            return w[rows], b[rows]

        blocks = [block(gate) for gate in TF_GATES]
        kernel = np.concatenate([w_g for w_g, _ in blocks]).T  # ((E or H) + H, 4H)
        bias = np.concatenate([b_g for _, b_g in blocks])
        bias[TF_GATES.index("forget") * H : (TF_GATES.index("forget") + 1) * H] -= TF_FORGET_BIAS
        out[CELL.format(k=k, part="kernel")] = kernel
        out[CELL.format(k=k, part="bias")] = bias
    out["rnnlm/softmax_w"] = params["decoder.weight"].T
    out["rnnlm/softmax_b"] = params["decoder.bias"]
    return {name: np.ascontiguousarray(a, dtype="<f4") for name, a in out.items()}


def filename(name: str) -> str:
    """As ml5's converter names the files: letters, digits and _ kept, / made _."""
    return "".join(
        "_" if c == "/" else c for c in name if c.isascii() and (c.isalnum() or c in "_/")
    )


def export_ml5(loaded: LoadedModel, out: str | Path) -> Path:
    """Write the folder `out` (created if missing): manifest.json, vocab.json, one file each."""
    found = variables(loaded)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise CharnnError(f"{folder} is a file: ml5's format is a folder, give a folder's path")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, array in found.items():
        manifest[name] = {"filename": filename(name), "shape": list(array.shape)}
        (folder / filename(name)).write_bytes(array.tobytes())
    vocab = {c: i for i, c in enumerate(loaded.vocab.chars)}
    (folder / "vocab.json").write_text(
        json.dumps(vocab, indent=2, sort_keys=True), encoding="utf-8"
    )
    (folder / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8"
    )
    return folder
