"""Looking inside a model: every unit's state and gates after each character of a text.

The model is run through the hand-written cells of charnn.nn.cells, stacked by charnn.nn.stack (the
fused modules keep their gates to themselves), with the checkpoint's own weights: the same math,
step by step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charnn.checkpoints.loading import LoadedModel, label_weights_for
from charnn.errors import CharnnError, SettingError
from charnn.nn.cells import SPECS
from charnn.nn.model import CharRNN
from charnn.text.vocab import describe_chars

TOP_NEXT = 5  # next-character predictions kept per position
CHUNK = 1024  # characters per forward pass, the state carried across


@dataclass(frozen=True)
class Trace:
    """What every unit did while the model read `text`: values[name] is (layers, T, hidden),
    the state or gate after reading each character; next_chars[t] the model's top guesses
    (character, probability) for the character after text[t]."""

    text: str
    cell: str
    values: dict[str, np.ndarray]
    next_chars: list[list[tuple[str, float]]]

    @property
    def layers(self) -> int:
        return next(iter(self.values.values())).shape[0]

    @property
    def hidden_size(self) -> int:
        return next(iter(self.values.values())).shape[2]

    def unit(self, what: str, layer: int, unit: int) -> np.ndarray:
        """One unit's value after each character, (T,)."""
        if what not in self.values:
            shown = ", ".join(self.values)
            raise CharnnError(f"a {self.cell} cell has no {what}: choose one of {shown}")
        if not 0 <= layer < self.layers:
            raise SettingError(f"{{layer}} {layer}: the model has layers 0 to {self.layers - 1}")
        if not 0 <= unit < self.hidden_size:
            raise SettingError(f"{{unit}} {unit}: layers have units 0 to {self.hidden_size - 1}")
        return self.values[what][layer, :, unit]


@torch.no_grad()
def trace(loaded: LoadedModel, text: str, label: str | None = None) -> Trace:
    """Run the model over `text` from a zero state, recording what its cell shows; a
    conditioned model reads it in `label` (a label, or a mix as sampling takes; None: "any")."""
    weights = label_weights_for(loaded.labels, label)  # a clear error before any work
    unknown = loaded.vocab.unknown(text)
    if unknown:
        raise CharnnError(
            f"the text has characters the model never saw: {describe_chars(unknown)}; "
            "remove them or use text like the training corpus"
        )
    if not text:
        raise CharnnError("the text to look at is empty")
    source = loaded.model
    model = CharRNN(source.config, hand_written=True)
    model.load_state_dict({k: v.cpu() for k, v in source.state_dict().items()})
    model.eval()
    ids = torch.from_numpy(loaded.vocab.encode(text).astype(np.int64))[None]  # (1, T)
    layers = source.config.layers
    record: list[dict[str, list[torch.Tensor]]] = [{} for _ in range(layers)]
    vector = None if weights is None else model.mixed(torch.from_numpy(weights)[None])  # (1, L)
    state = None
    guesses = []
    for start in range(0, ids.shape[1], CHUNK):
        x = model.embed(ids[:, start : start + CHUNK])  # (1, T, embed)
        if vector is not None:  # the label's vector joins every character's, as in forward()
            x = torch.cat([x, vector[:, None, :].expand(1, x.shape[1], -1)], dim=-1)
        out, state = model.rnn(x, state, record=record)
        probs = torch.softmax(model.decoder(out[0]).float(), dim=-1)  # (T, vocab)
        guesses.append(probs.topk(min(TOP_NEXT, probs.shape[-1]), dim=-1))
    chars = loaded.vocab.chars
    next_chars = [
        [(chars[i], float(p)) for p, i in zip(top.values[t], top.indices[t], strict=True)]
        for top in guesses
        for t in range(top.values.shape[0])
    ]
    values = {
        name: np.stack([torch.cat(record[k][name]).numpy() for k in range(layers)])
        for name in SPECS[source.config.cell].shows
    }  # each (layers, T, H)
    return Trace(text, source.config.cell, values, next_chars)
