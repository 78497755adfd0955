"""One character at a time, fast: the cells' own steps on NumPy arrays, for sampling.

Calling PyTorch's fused modules once per character costs more in per-call overhead than in
arithmetic (a 2x512 nn.LSTM step runs a few hundred characters per second on a small CPU). Here
each step is a handful of small NumPy operations on the model's own weights: the step functions
of charnn.nn.cells (the same ones training and `charnn viz` run on torch tensors) over NumPy arrays,
and the first layer's input projection is looked up from a table precomputed for every character
(not the mogrifier's, whose input is gated by the state before it is projected).
"""

from __future__ import annotations

import numpy as np
import torch

from charnn.nn.cells import NUMPY, SPECS, mogrifier_names, mogrify, step
from charnn.nn.model import CharRNN, State

# A stepper's state: per layer h, or (h, C), each (B, H). Rows of a batch are taken, joined and
# repeated alike in every layer (take_rows, join_rows, repeat_rows).
StepperState = list


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().float().contiguous().numpy()


class Stepper:
    """Runs a CharRNN forward one character per call, for a batch of B independent streams.

    The state is a list with one entry per layer: (h, c) for LSTM-family cells, h otherwise,
    each (B, H).
    Weights are rearranged once, so that each layer's step is as few NumPy calls as possible:
    - layer 0's input projection W_ih·embed(x) + b_ih is a table lookup, one row per character;
    - layers above it compute W_ih·x + W_hh·h as one product, [x, h]·[W_ih; W_hh], with the two
      biases added together beforehand (not the GRU's, which keeps its projections apart).
    The mogrifier projects its gated x and h as one product in every layer, layer 0 too: its
    x is gated by h first, so no table of W_ih·embed(x) holds.
    """

    def __init__(self, model: CharRNN) -> None:
        config = model.config
        self.cell = config.cell
        self.spec = spec = SPECS[config.cell]
        self.hidden = model.hidden_size
        rnn = model.rnn
        self.peepholes = [
            _numpy(getattr(rnn, f"peephole_l{k}")) if spec.peepholes else None
            for k in range(config.layers)
        ]
        self.rounds = [  # the mogrifier's Q^i and R^i, per layer
            [
                _numpy(getattr(rnn, name))
                for name in mogrifier_names(spec, config.mogrifier_rounds, k)
            ]
            for k in range(config.layers)
        ]
        fold_biases = not spec.separate_projections
        with torch.no_grad():
            self.layers = []
            for k in range(config.layers):
                w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
                b_ih, b_hh = getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")
                if fold_biases:
                    b_ih, b_hh = b_ih + b_hh, torch.zeros_like(b_hh)
                # stored transposed, so that a step is x @ W: (B, in) @ (in, G·H)
                w_ih, w_hh = w_ih.T, w_hh.T
                joined = fold_biases and (k > 0 or spec.mogrifies)
                w_both = torch.cat([w_ih, w_hh]) if joined else None
                self.layers.append(
                    (
                        _numpy(w_ih),
                        _numpy(b_ih),
                        _numpy(w_hh),
                        _numpy(b_hh),
                        None if w_both is None else _numpy(w_both),
                    )
                )
            first = self.layers[0]
            E = config.embed_size  # layer 0's inputs: the character's embedding, then the label
            labels = None if model.label_embed is None else _numpy(model.label_embed.weight)
            if spec.mogrifies:  # layer 0 reads [embed(c), label] itself
                self.input_table = _numpy(model.embed.weight)  # (vocab, E)
                self.label_table = labels  # (labels + 1, label_size)
            else:
                # W_ih·embed(c) + b_ih (+ b_hh when folded) for every character c: (vocab, G·H)
                self.input_table = _numpy(model.embed.weight) @ first[0][:E] + first[1]
                # W_ih·label(l) for every label l, "any" first: (labels + 1, G·H); a row's label
                # (or mix of labels) adds its combination to layer 0's input at every step
                self.label_table = None if labels is None else labels @ first[0][E:]
            self.decoder = (_numpy(model.decoder.weight.T), _numpy(model.decoder.bias))

    def state_from_torch(self, state: State) -> StepperState:
        """A fused module's state (layers, B, H) as this stepper keeps it."""
        layers = range(len(self.layers))
        if isinstance(state, tuple):
            return [(_numpy(state[0][k]), _numpy(state[1][k])) for k in layers]
        return [_numpy(state[k]) for k in layers]

    def label_bias(self, weights: np.ndarray) -> np.ndarray:
        """What rows with these weights over the labels (B, labels + 1) add to layer 0's
        input: (B, G·H); for the mogrifier, which reads them before projecting, the mixed label
        vectors themselves (B, label_size)."""
        assert self.label_table is not None, "an unconditioned model has no labels"
        return (weights @ self.label_table).astype(np.float32)

    def step(
        self, ids: np.ndarray, state: StepperState, bias: np.ndarray | None = None
    ) -> tuple[np.ndarray, StepperState]:
        """ids (B,) -> logits (B, vocab) and the new state; `bias`: each row's label
        (label_bias), for a conditioned model (None: the "any" label)."""
        if bias is None and self.label_table is not None:
            bias = np.broadcast_to(self.label_table[0], (len(ids), self.label_table.shape[1]))
        spec = self.spec
        new_state: list = []
        h: np.ndarray = np.empty(0)  # the output of the layer below; layer 0 reads the table
        for k, (w_ih, b_ih, w_hh, b_hh, w_both) in enumerate(self.layers):
            h_prev, c = state[k] if spec.has_cell_state else (state[k], None)
            if spec.separate_projections:  # the GRU: W·x + b_i and U·h + b_h apart
                xw = self._layer0(ids, bias) if k == 0 else h @ w_ih + b_ih
                h, c = step(spec, xw, h_prev @ w_hh + b_hh, h_prev, c, NUMPY)
            elif spec.mogrifies:  # x and h gate each other, then [x, h]·[W_ih; W_hh] + b
                x, h_gated = mogrify(self._layer0(ids, bias) if k == 0 else h, h_prev,
                                     self.rounds[k], NUMPY)  # fmt: skip
                a = np.concatenate([x, h_gated], axis=1) @ w_both + b_ih
                h, c = step(spec, a, None, h_prev, c, NUMPY)
            else:
                if k == 0:
                    a = self._layer0(ids, bias) + h_prev @ w_hh  # W_ih·x + W_hh·h + b
                else:
                    a = np.concatenate([h, h_prev], axis=1) @ w_both + b_ih
                h, c = step(spec, a, None, h_prev, c, NUMPY, self.peepholes[k])
            new_state.append((h, c) if spec.has_cell_state else h)
        w_out, b_out = self.decoder
        return h @ w_out + b_out, new_state

    def _layer0(self, ids: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        """Layer 0's input projection: the characters' rows of the table, plus the labels'
        (the mogrifier's: the characters' embeddings, joined by the labels' vectors)."""
        rows = self.input_table[ids]
        if bias is None:
            return rows
        return np.concatenate([rows, bias], axis=1) if self.spec.mogrifies else rows + bias


def take_rows(state: StepperState, rows: np.ndarray) -> StepperState:
    """These rows (indices or a mask), in this order; an index may repeat."""
    return [tuple(part[rows] for part in layer) if isinstance(layer, tuple) else layer[rows]
            for layer in state]  # fmt: skip


def join_rows(first: StepperState, second: StepperState) -> StepperState:
    """The rows of `first`, then those of `second`."""
    return [
        tuple(np.concatenate(parts) for parts in zip(a, b, strict=True))
        if isinstance(a, tuple) else np.concatenate([a, b])
        for a, b in zip(first, second, strict=True)
    ]  # fmt: skip


def repeat_rows(state: StepperState, times: int) -> StepperState:
    """Each row `times` times over, in place."""
    return [tuple(np.repeat(part, times, axis=0) for part in layer) if isinstance(layer, tuple)
            else np.repeat(layer, times, axis=0) for layer in state]  # fmt: skip
