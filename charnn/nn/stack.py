"""Layers of a hand-written cell over a sequence, as a module with PyTorch's parameter names.

`RecurrentStack` runs the steps of charnn.nn.cells over (B, T, input) sequences and over layers,
with parameters named and laid out as PyTorch's fused modules name them (`weight_ih_l0`,
`weight_hh_l0`, `bias_ih_l0`, ...), so a checkpoint moves between the fused and the hand-written
paths wherever the math is the same. Training and sampling use the fused modules for rnn,
rnn-relu, lstm and gru, and this stack for the variants PyTorch does not have: peephole, cifg and
mogrifier (whose rounds are mogrifier_q1_l{k}, mogrifier_r2_l{k}, ...).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from charnn.config.model import ModelConfig
from charnn.nn.cells import SPECS, TORCH, Seen, mogrifier_names, mogrify, step
from charnn.nn.sequence import lstm_family_window, mogrifier_window


class RecurrentStack(nn.Module):
    """Layers of a hand-written cell over (B, T, input) sequences, batch first.

    State as PyTorch's fused modules keep it: (h, c) for LSTM-family cells, h otherwise, each
    (layers, B, H).
    """

    def __init__(
        self, cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0,
        mogrifier_rounds: int = ModelConfig.mogrifier_rounds,
    ) -> None:  # fmt: skip
        super().__init__()
        self.cell, self.hidden_size, self.num_layers, self.dropout = (
            cell,
            hidden_size,
            num_layers,
            dropout,
        )
        self.spec = spec = SPECS[cell]
        gates = spec.blocks * hidden_size
        # per layer, the names of the mogrifier's Q^i and R^i (none for the other cells)
        self.rounds = [mogrifier_names(spec, mogrifier_rounds, k) for k in range(num_layers)]
        bound = 1 / math.sqrt(hidden_size)  # PyTorch's initialisation
        for k in range(num_layers):
            inputs = input_size if k == 0 else hidden_size
            for name, shape in (
                (f"weight_ih_l{k}", (gates, inputs)),
                (f"weight_hh_l{k}", (gates, hidden_size)),
                (f"bias_ih_l{k}", (gates,)),
                (f"bias_hh_l{k}", (gates,)),
            ):
                self.register_parameter(
                    name, nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
                )
            if spec.peepholes:
                self.register_parameter(
                    f"peephole_l{k}",
                    nn.Parameter(
                        torch.empty(len(spec.peepholes) * hidden_size).uniform_(-bound, bound)
                    ),
                )
            for i, name in enumerate(self.rounds[k], start=1):  # Q^i (input × H), R^i (H × input)
                rows, columns = (inputs, hidden_size) if i % 2 else (hidden_size, inputs)
                self.register_parameter(
                    name, nn.Parameter(torch.empty(rows, columns).uniform_(-bound, bound))
                )

    def forward(self, x: Tensor, state=None, record: list[dict[str, list[Tensor]]] | None = None):
        """x (B, T, input) -> outputs (B, T, H) and the final state. Given `record` (one dict per
        layer), each step appends what it shows to record[k][name] (names in the cell's spec's
        `shows`), each (B, H)."""
        B, H, spec = x.shape[0], self.hidden_size, self.spec
        if state is None:
            zeros = x.new_zeros(self.num_layers, B, H)
            state = (zeros, zeros.clone()) if spec.has_cell_state else zeros
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for k in range(self.num_layers):
            if k > 0 and self.dropout > 0 and self.training:
                x = nn.functional.dropout(x, self.dropout, training=True)
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            b_ih, b_hh = getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")
            peep = getattr(self, f"peephole_l{k}", None)
            rounds = [getattr(self, name) for name in self.rounds[k]]
            h, c = (state[0][k], state[1][k]) if spec.has_cell_state else (state[k], None)
            # the input projection of all T steps at once, unless x_t depends on h_{t−1}
            xw = None if spec.mogrifies else x @ w_ih.T + b_ih  # (B, T, gates)
            if c is not None and record is None and torch.is_grad_enabled():
                # training: the same steps, with the backward pass written out
                if xw is None:
                    x, h, c = mogrifier_window(x, h, c, w_ih, w_hh, b_ih, b_hh, rounds)
                else:
                    x, h, c = lstm_family_window(spec, xw, h, c, w_hh, b_hh, peep)
            else:
                outputs = []
                for t in range(x.shape[1]):
                    seen: Seen = None if record is None else {}
                    if xw is None:  # the mogrifier: x_t and h_{t−1} gate each other first
                        x_t, h_t = mogrify(x[:, t], h, rounds, TORCH, seen)
                        xw_t, hw = x_t @ w_ih.T + b_ih, h_t @ w_hh.T + b_hh
                    else:
                        xw_t, hw = xw[:, t], h @ w_hh.T + b_hh
                    h, c = step(spec, xw_t, hw, h, c, TORCH, peep, seen)
                    outputs.append(h)
                    if record is not None and seen is not None:
                        seen.update(hidden=h, **({} if c is None else {"cell": c}))
                        for name, value in seen.items():
                            record[k].setdefault(name, []).append(value)
                x = torch.stack(outputs, dim=1)  # (B, T, H)
            hs.append(h)
            if c is not None:
                cs.append(c)
        h_n = torch.stack(hs)
        return x, ((h_n, torch.stack(cs)) if spec.has_cell_state else h_n)
