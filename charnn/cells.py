"""The recurrent cells, written the way their equations read.

Each cell is a step function: given this step's input projection (W·x_t + b, computed for all
T steps at once by one matrix product) and the previous state, it returns the new state. A
`RecurrentStack` runs a cell over a sequence and over layers, with parameters named and laid out
as PyTorch's fused modules name them (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, ...), so a
checkpoint moves between the fused and the hand-written paths wherever the math is the same.

Training and sampling use PyTorch's fused modules for rnn, rnn-relu, lstm and gru, and these
cells for the variants PyTorch does not have: peephole and cifg. Gate rows are stacked in the
order named in each docstring. Given a `seen` dict, a step also records its gates there (by the
names in SEEN), which is how `charnn viz` looks inside.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

Seen = dict[str, Tensor] | None  # where a step records its gates, when asked


def rnn_step(xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, relu: bool = False) -> Tensor:
    """The vanilla RNN:  h_t = act(W·x_t + U·h_{t−1} + b),  act = tanh (or ReLU for rnn-relu)."""
    pre = xw + h @ w_hh.T + b_hh
    return torch.relu(pre) if relu else torch.tanh(pre)


def gru_step(xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, seen: Seen = None) -> Tensor:
    """The GRU as PyTorch defines it (Cho et al. 2014); rows: r, z, n.

    r_t = σ(W_r·x_t + b_ir + U_r·h_{t−1} + b_hr)          reset gate
    z_t = σ(W_z·x_t + b_iz + U_z·h_{t−1} + b_hz)          update gate
    n_t = tanh(W_n·x_t + b_in + r_t ⊙ (U_n·h_{t−1} + b_hn))  candidate
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}
    """
    x_r, x_z, x_n = xw.chunk(3, dim=1)
    h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, dim=1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    if seen is not None:
        seen.update(reset=r, update=z)
    return (1 - z) * n + z * h


def lstm_step(
    xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor, seen: Seen = None
) -> tuple[Tensor, Tensor]:
    """The LSTM; rows: i, f, C̃, o.  [h_{t−1}, x_t] is split into W·x_t + U·h_{t−1}.

    f_t = σ(W_f·[h_{t−1}, x_t] + b_f)          forget gate: what to keep of the cell state
    i_t = σ(W_i·[h_{t−1}, x_t] + b_i)          input gate: how much of the candidate to add
    C̃_t = tanh(W_C·[h_{t−1}, x_t] + b_C)       candidate values
    C_t = f_t ⊙ C_{t−1} + i_t ⊙ C̃_t            the cell state, the conveyor belt
    o_t = σ(W_o·[h_{t−1}, x_t] + b_o)          output gate
    h_t = o_t ⊙ tanh(C_t)
    """
    x_i, x_f, x_c, x_o = xw.chunk(4, dim=1)
    h_i, h_f, h_c, h_o = (h @ w_hh.T + b_hh).chunk(4, dim=1)
    f = torch.sigmoid(x_f + h_f)
    i = torch.sigmoid(x_i + h_i)
    candidate = torch.tanh(x_c + h_c)
    c = f * c + i * candidate
    o = torch.sigmoid(x_o + h_o)
    if seen is not None:
        seen.update(forget=f, input=i, candidate=candidate, output=o)
    return o * torch.tanh(c), c


def peephole_step(
    xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor, peep: Tensor, seen: Seen = None
) -> tuple[Tensor, Tensor]:
    """The peephole LSTM (Gers & Schmidhuber 2000); rows: i, f, C̃, o; peep rows: p_i, p_f, p_o.

    The gates also look at the cell state, through diagonal weights:
        f_t = σ(W_f·[h_{t−1}, x_t] + p_f ⊙ C_{t−1} + b_f)
        i_t = σ(W_i·[h_{t−1}, x_t] + p_i ⊙ C_{t−1} + b_i)
        C̃_t = tanh(W_C·[h_{t−1}, x_t] + b_C)
        C_t = f_t ⊙ C_{t−1} + i_t ⊙ C̃_t
        o_t = σ(W_o·[h_{t−1}, x_t] + p_o ⊙ C_t + b_o)       the output gate sees the new C_t
        h_t = o_t ⊙ tanh(C_t)
    """
    x_i, x_f, x_c, x_o = xw.chunk(4, dim=1)
    h_i, h_f, h_c, h_o = (h @ w_hh.T + b_hh).chunk(4, dim=1)
    p_i, p_f, p_o = peep.chunk(3)
    f = torch.sigmoid(x_f + h_f + p_f * c)
    i = torch.sigmoid(x_i + h_i + p_i * c)
    candidate = torch.tanh(x_c + h_c)
    c = f * c + i * candidate
    o = torch.sigmoid(x_o + h_o + p_o * c)
    if seen is not None:
        seen.update(forget=f, input=i, candidate=candidate, output=o)
    return o * torch.tanh(c), c


def cifg_step(
    xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor, seen: Seen = None
) -> tuple[Tensor, Tensor]:
    """The LSTM with coupled input and forget gates; rows: f, C̃, o.

    New values are let in exactly where old ones are forgotten:
        f_t = σ(W_f·[h_{t−1}, x_t] + b_f)
        C̃_t = tanh(W_C·[h_{t−1}, x_t] + b_C)
        C_t = f_t ⊙ C_{t−1} + (1 − f_t) ⊙ C̃_t
        o_t = σ(W_o·[h_{t−1}, x_t] + b_o)
        h_t = o_t ⊙ tanh(C_t)
    """
    x_f, x_c, x_o = xw.chunk(3, dim=1)
    h_f, h_c, h_o = (h @ w_hh.T + b_hh).chunk(3, dim=1)
    f = torch.sigmoid(x_f + h_f)
    candidate = torch.tanh(x_c + h_c)
    c = f * c + (1 - f) * candidate
    o = torch.sigmoid(x_o + h_o)
    if seen is not None:
        seen.update(forget=f, input=1 - f, candidate=candidate, output=o)
    return o * torch.tanh(c), c


GATES = {"rnn": 1, "rnn-relu": 1, "gru": 3, "lstm": 4, "peephole": 4, "cifg": 3}
HAS_CELL_STATE = {"lstm", "peephole", "cifg"}
FORGET_ROWS = {"lstm": 1, "peephole": 1, "cifg": 0}  # which block of gate rows is f
# What a layer of each cell shows, step by step: its state and the gates a step records
SEEN = {
    "rnn": ("hidden",),
    "rnn-relu": ("hidden",),
    "gru": ("hidden", "update", "reset"),
    "lstm": ("hidden", "cell", "forget", "input", "output"),
    "peephole": ("hidden", "cell", "forget", "input", "output"),
    "cifg": ("hidden", "cell", "forget", "input", "output"),
}


class RecurrentStack(nn.Module):
    """Layers of a hand-written cell over (B, T, input) sequences, batch first.

    State as PyTorch's fused modules keep it: (h, c) for LSTM-family cells, h otherwise, each
    (layers, B, H).
    """

    def __init__(
        self, cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.cell, self.hidden_size, self.num_layers, self.dropout = (
            cell,
            hidden_size,
            num_layers,
            dropout,
        )
        gates = GATES[cell] * hidden_size
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
            if cell == "peephole":
                self.register_parameter(
                    f"peephole_l{k}",
                    nn.Parameter(torch.empty(3 * hidden_size).uniform_(-bound, bound)),
                )

    def forward(self, x: Tensor, state=None, record: list[dict[str, list[Tensor]]] | None = None):
        """x (B, T, input) -> outputs (B, T, H) and the final state. Given `record` (one dict per
        layer), each step appends what it saw to record[k][name] (names in SEEN), each (B, H)."""
        B = x.shape[0]
        H = self.hidden_size
        if state is None:
            zeros = x.new_zeros(self.num_layers, B, H)
            state = (zeros, zeros.clone()) if self.cell in HAS_CELL_STATE else zeros
        hs, cs = [], []
        for k in range(self.num_layers):
            if k > 0 and self.dropout > 0 and self.training:
                x = nn.functional.dropout(x, self.dropout, training=True)
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            b_ih, b_hh = getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")
            xw = x @ w_ih.T + b_ih  # (B, T, gates): the input projection of all T steps at once
            if self.cell in HAS_CELL_STATE:
                h, c = state[0][k], state[1][k]
            else:
                h, c = state[k], None
            if c is not None and record is None and torch.is_grad_enabled():
                # training: the same steps, with the backward pass written out
                from charnn.sequence import LSTMFamilyWindow  # it imports the steps from here

                peep = getattr(self, f"peephole_l{k}", xw.new_empty(0))
                x, h, c = LSTMFamilyWindow.apply(self.cell, xw, h, c, w_hh, b_hh, peep)
                hs.append(h)
                cs.append(c)
                continue
            outputs = []
            for t in range(x.shape[1]):
                seen: Seen = None if record is None else {}
                h, c = self._step(k, xw[:, t], h, c, w_hh, b_hh, seen)
                outputs.append(h)
                if record is not None and seen is not None:
                    seen.update(hidden=h, **({} if c is None else {"cell": c}))
                    for name, value in seen.items():
                        record[k].setdefault(name, []).append(value)
            x = torch.stack(outputs, dim=1)  # (B, T, H)
            hs.append(h)
            cs.append(c)
        h_n = torch.stack(hs)
        return x, ((h_n, torch.stack(cs)) if self.cell in HAS_CELL_STATE else h_n)

    def _step(self, k, xw, h, c, w_hh, b_hh, seen: Seen):
        if self.cell in ("rnn", "rnn-relu"):
            return rnn_step(xw, h, w_hh, b_hh, relu=self.cell == "rnn-relu"), None
        if self.cell == "gru":
            return gru_step(xw, h, w_hh, b_hh, seen), None
        if self.cell == "lstm":
            return lstm_step(xw, h, c, w_hh, b_hh, seen)
        if self.cell == "peephole":
            return peephole_step(xw, h, c, w_hh, b_hh, getattr(self, f"peephole_l{k}"), seen)
        return cifg_step(xw, h, c, w_hh, b_hh, seen)
