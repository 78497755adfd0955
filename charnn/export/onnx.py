"""One step of a model as an ONNX graph, for runtimes in other languages (the `onnx` extra).

    inputs   id (B,) int64: the character just read;  h (layers, B, H) float32;  c, the cell
             state (layers, B, H), for the LSTM family (lstm, peephole, cifg, mogrifier)
    outputs  logits (B, vocab): the next character's;  h_out;  c_out for the LSTM family

The step is the cells' own (nn.cells, on torch tensors), so every cell exports alike, and a
runtime feeds h_out and c_out back in for the next character; a zero state starts a text. The
file's metadata holds the vocabulary (`charnn_vocab`, its characters in id order, as JSON) and
the shape. docs/export.md samples with onnxruntime alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import torch

from charnn import __version__
from charnn.checkpoints.loading import LoadedModel
from charnn.errors import CharnnError
from charnn.nn.cells import SPECS, TORCH, mogrifier_names, mogrify, step
from charnn.nn.model import CharRNN

EXTRA_HINT = "ONNX export needs the onnx extra: pip install 'charnn[onnx]'"


class OneStep(torch.nn.Module):
    """A CharRNN's step: (id, h[, c]) -> (logits, h_out[, c_out])."""

    def __init__(self, model: CharRNN) -> None:
        super().__init__()
        self.model = model
        self.spec = SPECS[model.config.cell]

    def forward(
        self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        rnn, x, config = self.model.rnn, self.model.embed(ids), self.model.config  # x (B, embed)
        hs, cs = [], []
        for k in range(config.layers):
            rounds = mogrifier_names(self.spec, config.mogrifier_rounds, k)  # none but its
            x, h_k = mogrify(x, h[k], [getattr(rnn, name) for name in rounds], TORCH)
            xw = x @ getattr(rnn, f"weight_ih_l{k}").T + getattr(rnn, f"bias_ih_l{k}")
            hw = h_k @ getattr(rnn, f"weight_hh_l{k}").T + getattr(rnn, f"bias_hh_l{k}")
            peep = getattr(rnn, f"peephole_l{k}", None)
            x, c_k = step(self.spec, xw, hw, h[k], None if c is None else c[k], TORCH, peep)
            hs.append(x)
            cs.append(c_k)
        logits = self.model.decoder(x)
        if c is None:
            return logits, torch.stack(hs)
        return logits, torch.stack(hs), torch.stack([c_k for c_k in cs if c_k is not None])


def export_onnx(loaded: LoadedModel, out: str | Path) -> Path:
    """Write the model's step to `out` (a file; a folder gets MODEL.onnx inside it)."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError:
        raise CharnnError(EXTRA_HINT) from None
    if loaded.labels:
        raise CharnnError(
            "ONNX export writes unconditioned models: this one was trained on labels; export "
            "it with --format html or hf instead"
        )
    path = Path(out)
    if path.is_dir():
        path = path / f"{loaded.name}.onnx"
    model = loaded.model.cpu().eval()
    stepper = OneStep(model)
    config = model.config
    has_c = SPECS[config.cell].has_cell_state
    state = torch.zeros(config.layers, 1, config.hidden_size)
    args = (torch.zeros(1, dtype=torch.long), state, state.clone())[: 3 if has_c else 2]
    names = ["id", "h", "c"][: len(args)]
    batch = torch.export.Dim("batch")
    dynamic = {"ids": {0: batch}, "h": {1: batch}, **({"c": {1: batch}} if has_c else {})}
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            stepper, args, input_names=names, dynamic_shapes=dynamic, dynamo=True,
            output_names=["logits", "h_out", "c_out"][: len(args)], verbose=False,
        )  # fmt: skip
    assert program is not None, "torch.onnx.export returns the program it made"
    graph = program.model_proto
    metadata = {"charnn_vocab": json.dumps(loaded.vocab.chars, ensure_ascii=False),
                "charnn_cell": config.cell, "charnn_layers": str(config.layers),
                "charnn_hidden_size": str(config.hidden_size),
                "charnn_version": __version__, "charnn_step": str(loaded.step)}  # fmt: skip
    onnx.helper.set_model_props(graph, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(path))
    return path


@contextlib.contextmanager
def _quiet():  # type: ignore[no-untyped-def]
    """torch.onnx reports its progress on stdout and warns on stderr: stdout carries data."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
