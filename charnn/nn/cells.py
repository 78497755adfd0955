"""The recurrent cells: each one's layout in one spec, and its step written once, as it reads.

Layout. A `CellSpec` (one per cell, in `SPECS`) says how the cell's parameters are laid out,
and every other module reads it from there: its gate blocks in row order (each H rows of
weight_ih_l{k}, weight_hh_l{k} and the biases, stacked as PyTorch's fused modules stack them),
whether it keeps a cell state C, which gates look at C through peephole_l{k}, whether its input
and hidden projections must stay apart (the GRU's), and whether x_t and h_{t−1} first gate each
other in rounds (the mogrifier's). The forget block and the candidate block are found by name:
every cell calls its candidate values "candidate".

Steps. A step function takes one step's pre-activations a = W·x_t + b_ih + U·h_{t−1} + b_hh,
(B, G·H), and the previous state, and returns the new state. It only slices, adds, multiplies
and calls the functions of an `Ops` namespace, so the same function runs on torch tensors
(`TORCH`: training, `charnn viz`, the forward pass of charnn.nn.sequence) and on NumPy arrays
(`NUMPY`: sampling, charnn.nn.stepper). `step` picks a cell's function by its spec. Given a `seen`
dict, a step also records its gates there, which is how `charnn viz` looks inside.

The mogrifier changes what a step reads, not its gates: `mogrify` lets the input and the previous
hidden state gate each other before they are projected, and the LSTM's step runs on the result.

What keeps them honest (tests/test_cells.py unless named):
- test_hand_written_cell_matches_pytorch: rnn, rnn-relu, lstm and gru, run by
  charnn.nn.stack.RecurrentStack with weights copied from nn.RNN/LSTM/GRU: outputs, final states
  and every parameter gradient within 1e-5;
- test_written_out_backward_matches_autograd_through_the_steps: charnn.nn.sequence's backward for
  lstm, peephole, cifg and mogrifier against autograd through these steps (weights, peepholes,
  rounds, inputs, initial state); test_written_out_backward_under_bf16_autocast, the same under
  bf16 autocast; test_under_autocast_the_window_multiplies_in_bf16_and_keeps_its_state_in_fp32;
  test_a_few_bf16_training_steps_stay_finite;
- test_peephole_with_zero_peepholes_is_the_lstm;
- test_cifg_is_an_lstm_whose_input_gate_is_one_minus_forget;
- test_a_checkpoint_moves_between_fused_and_hand_written;
- test_forget_bias_starts_the_forget_gate_open;
- test_mogrifier_matches_its_equations_written_in_torch: outputs, final states and every
  gradient against a reference written in the test; test_mogrifier_with_0_rounds_is_the_lstm;
  test_the_mogrifier_under_bf16_autocast;
- test_every_spec_matches_its_parameters: each spec against the fused modules' row counts;
- test_a_step_is_the_same_on_numpy_arrays_and_torch_tensors: every cell, and `mogrify`;
- tests/test_sample.py::test_stepper_matches_the_model: the NumPy steps against the model's
  own logits, every cell;
- tests/test_viz.py::test_traced_states_are_what_the_fused_module_computes: recorded states;
  test_the_mogrifier_shows_what_its_rounds_multiply_h_by: `mogrify`'s record, by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

Array = TypeVar("Array", Tensor, np.ndarray)  # a step runs on either
Seen = dict[str, Any] | None  # where a step records its gates, when asked


@dataclass(frozen=True)
class CellSpec:
    """How one cell lays out its parameters; G = len(gates) blocks of H rows each."""

    name: str
    gates: tuple[str, ...]  # the blocks of rows, in order
    has_cell_state: bool  # the LSTM family: state (h, C); the others: h alone
    peepholes: tuple[str, ...] = ()  # gates that also see C, by the blocks of peephole_l{k}
    # the GRU: its reset gate scales U·h + b_hn alone, so W·x + b and U·h + b are kept apart
    separate_projections: bool = False
    shows: tuple[str, ...] = ("hidden",)  # what `charnn viz` shows of each layer, step by step
    # the Mogrifier: x_t and h_{t−1} gate each other in rounds before the step (`mogrify`)
    mogrifies: bool = False

    @property
    def blocks(self) -> int:
        return len(self.gates)

    def rows(self, gate: str, hidden: int) -> slice:
        """Where `gate`'s rows are among G·H."""
        k = self.gates.index(gate)
        return slice(k * hidden, (k + 1) * hidden)

    def block(self, a: Array, gate: str) -> Array:
        """`gate`'s block of the last axis of a (..., G·H) array."""
        return a[..., self.rows(gate, a.shape[-1] // self.blocks)]

    def peephole(self, p: Array, gate: str) -> Array:
        """`gate`'s diagonal peephole weights, out of peephole_l{k} (len(peepholes)·H,)."""
        H = p.shape[-1] // len(self.peepholes)
        k = self.peepholes.index(gate)
        return p[..., k * H : (k + 1) * H]


LSTM_SHOWS = ("hidden", "cell", "forget", "input", "output")
RNN = CellSpec("rnn", gates=("hidden",), has_cell_state=False)
RNN_RELU = CellSpec("rnn-relu", gates=("hidden",), has_cell_state=False)
GRU = CellSpec(
    "gru",
    gates=("reset", "update", "candidate"),
    has_cell_state=False,
    separate_projections=True,
    shows=("hidden", "update", "reset"),
)
LSTM = CellSpec(
    "lstm", gates=("input", "forget", "candidate", "output"), has_cell_state=True, shows=LSTM_SHOWS
)
PEEPHOLE = CellSpec(
    "peephole",
    gates=("input", "forget", "candidate", "output"),
    has_cell_state=True,
    peepholes=("input", "forget", "output"),
    shows=LSTM_SHOWS,
)
CIFG = CellSpec(
    "cifg", gates=("forget", "candidate", "output"), has_cell_state=True, shows=LSTM_SHOWS
)
MOGRIFIER = CellSpec(
    "mogrifier",
    gates=("input", "forget", "candidate", "output"),
    has_cell_state=True,
    shows=(*LSTM_SHOWS, "mogrify"),
    mogrifies=True,
)
SPECS = {spec.name: spec for spec in (RNN, RNN_RELU, LSTM, GRU, PEEPHOLE, CIFG, MOGRIFIER)}


@dataclass(frozen=True)
class Ops(Generic[Array]):
    """The elementwise functions a step calls, for one kind of array."""

    sigmoid: Callable[[Array], Array]
    tanh: Callable[[Array], Array]
    relu: Callable[[Array], Array]


def _numpy_sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # the logistic function, without exp's overflow


TORCH: Ops[Tensor] = Ops(torch.sigmoid, torch.tanh, torch.relu)
NUMPY: Ops[np.ndarray] = Ops(_numpy_sigmoid, np.tanh, lambda a: np.maximum(a, 0.0))


def rnn_step(a: Array, ops: Ops[Array], relu: bool = False) -> Array:
    """The vanilla RNN:  h_t = act(W·x_t + U·h_{t−1} + b),  act = tanh (or ReLU for rnn-relu)."""
    return ops.relu(a) if relu else ops.tanh(a)


def gru_step(xw: Array, hw: Array, h: Array, ops: Ops[Array], seen: Seen = None) -> Array:
    """The GRU as PyTorch defines it (Cho et al. 2014), from xw = W·x_t + b_i, hw = U·h_{t−1} + b_h.

    r_t = σ(W_r·x_t + b_ir + U_r·h_{t−1} + b_hr)          reset gate
    z_t = σ(W_z·x_t + b_iz + U_z·h_{t−1} + b_hz)          update gate
    n_t = tanh(W_n·x_t + b_in + r_t ⊙ (U_n·h_{t−1} + b_hn))  candidate
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}
    """
    gate = ops.sigmoid(xw + hw)  # every block at once, one call; the candidate's is not used
    r, z = GRU.block(gate, "reset"), GRU.block(gate, "update")
    candidate = ops.tanh(GRU.block(xw, "candidate") + r * GRU.block(hw, "candidate"))
    if seen is not None:
        seen.update(reset=r, update=z)
    return (1 - z) * candidate + z * h


def lstm_step(a: Array, c: Array, ops: Ops[Array], seen: Seen = None) -> tuple[Array, Array]:
    """The LSTM.  [h_{t−1}, x_t] is split into W·x_t + U·h_{t−1}; a holds their sums.

    f_t = σ(W_f·[h_{t−1}, x_t] + b_f)          forget gate: what to keep of the cell state
    i_t = σ(W_i·[h_{t−1}, x_t] + b_i)          input gate: how much of the candidate to add
    C̃_t = tanh(W_C·[h_{t−1}, x_t] + b_C)       candidate values
    C_t = f_t ⊙ C_{t−1} + i_t ⊙ C̃_t            the cell state, the conveyor belt
    o_t = σ(W_o·[h_{t−1}, x_t] + b_o)          output gate
    h_t = o_t ⊙ tanh(C_t)
    """
    gate = ops.sigmoid(a)  # every block at once, one call; the candidate's is not used
    f, i, o = LSTM.block(gate, "forget"), LSTM.block(gate, "input"), LSTM.block(gate, "output")
    candidate = ops.tanh(LSTM.block(a, "candidate"))
    c = f * c + i * candidate
    if seen is not None:
        seen.update(forget=f, input=i, candidate=candidate, output=o)
    return o * ops.tanh(c), c


def peephole_step(
    a: Array, c: Array, peep: Array, ops: Ops[Array], seen: Seen = None
) -> tuple[Array, Array]:
    """The peephole LSTM (Gers & Schmidhuber 2000); peep holds the diagonal weights p.

    The gates also look at the cell state, through diagonal weights:
        f_t = σ(W_f·[h_{t−1}, x_t] + p_f ⊙ C_{t−1} + b_f)
        i_t = σ(W_i·[h_{t−1}, x_t] + p_i ⊙ C_{t−1} + b_i)
        C̃_t = tanh(W_C·[h_{t−1}, x_t] + b_C)
        C_t = f_t ⊙ C_{t−1} + i_t ⊙ C̃_t
        o_t = σ(W_o·[h_{t−1}, x_t] + p_o ⊙ C_t + b_o)       the output gate sees the new C_t
        h_t = o_t ⊙ tanh(C_t)
    """
    P = PEEPHOLE
    f = ops.sigmoid(P.block(a, "forget") + P.peephole(peep, "forget") * c)
    i = ops.sigmoid(P.block(a, "input") + P.peephole(peep, "input") * c)
    candidate = ops.tanh(P.block(a, "candidate"))
    c = f * c + i * candidate
    o = ops.sigmoid(P.block(a, "output") + P.peephole(peep, "output") * c)
    if seen is not None:
        seen.update(forget=f, input=i, candidate=candidate, output=o)
    return o * ops.tanh(c), c


def cifg_step(a: Array, c: Array, ops: Ops[Array], seen: Seen = None) -> tuple[Array, Array]:
    """The LSTM with coupled input and forget gates.

    New values are let in exactly where old ones are forgotten:
        f_t = σ(W_f·[h_{t−1}, x_t] + b_f)
        C̃_t = tanh(W_C·[h_{t−1}, x_t] + b_C)
        C_t = f_t ⊙ C_{t−1} + (1 − f_t) ⊙ C̃_t
        o_t = σ(W_o·[h_{t−1}, x_t] + b_o)
        h_t = o_t ⊙ tanh(C_t)
    """
    gate = ops.sigmoid(a)  # every block at once, one call; the candidate's is not used
    f, o = CIFG.block(gate, "forget"), CIFG.block(gate, "output")
    candidate = ops.tanh(CIFG.block(a, "candidate"))
    c = f * c + (1 - f) * candidate
    if seen is not None:
        seen.update(forget=f, input=1 - f, candidate=candidate, output=o)
    return o * ops.tanh(c), c


def mogrify(
    x: Array, h: Array, rounds: Sequence[Array], ops: Ops[Array], seen: Seen = None
) -> tuple[Array, Array]:
    """The Mogrifier LSTM's rounds (Melis, Kočiský & Blunsom 2020), before each LSTM step.

    x_t (B, input) and h_{t−1} (B, H) gate each other, round i = 1 .. r taking turns:
        x ← 2σ(Q^i·h) ⊙ x      odd i,   Q^i (input × H)
        h ← 2σ(R^i·x) ⊙ h      even i,  R^i (H × input)
    rounds = [Q¹, R², Q³, ...] (r = 0: the LSTM). The step then reads the mogrified x and h; C is
    left alone. A gate 2σ(·) lies in (0, 2): 1 leaves a value as it was. Given `seen`, records
    "mogrify", what the rounds multiplied h by, ∏ 2σ(R^i·x) (B, H), all ones for r < 2, and
    "rounds", every round's gate 2σ(·) in order.

    Q^i and R^i are full matrices: the paper factors them at low rank to save parameters in
    models thousands of units wide; at our widths (64-wide embeddings, a few hundred units) full
    rank costs no more than the LSTM's own U per round, and a factored round would be two
    smaller, sequential products, which a small CPU runs no faster.
    """
    gates = []
    for i, weight in enumerate(rounds, start=1):
        if i % 2:
            gates.append(2 * ops.sigmoid(h @ weight.T))
            x = gates[-1] * x
        else:
            gates.append(2 * ops.sigmoid(x @ weight.T))
            h = gates[-1] * h
    if seen is not None:
        scale = 1.0 + 0.0 * h  # ∏ 2σ(R^i·x)
        for gate in gates[1::2]:
            scale = scale * gate
        seen.update(mogrify=scale, rounds=gates)
    return x, h


def mogrifier_names(spec: CellSpec, rounds: int, layer: int) -> list[str]:
    """The parameters `mogrify` takes in `layer`, in order: mogrifier_q1_l0 (Q¹),
    mogrifier_r2_l0 (R²), ...; none for a cell that does not mogrify."""
    if not spec.mogrifies:
        return []
    return [f"mogrifier_{'q' if i % 2 else 'r'}{i}_l{layer}" for i in range(1, rounds + 1)]


def step(
    spec: CellSpec,
    xw: Array,
    hw: Array | None,
    h: Array,
    c: Array | None,
    ops: Ops[Array],
    peep: Array | None = None,
    seen: Seen = None,
) -> tuple[Array, Array | None]:
    """One step of `spec`'s cell: (h_t, C_t), C_t None for a cell without one; each (B, H).

    xw = W·x_t + b_ih and hw = U·h_{t−1} + b_hh, each (B, G·H); a caller that has their sum
    already passes it as xw with hw None (not for the GRU, which keeps them apart). For the
    mogrifier, x_t and h_{t−1} are the mogrified ones (`mogrify`), and its step is the LSTM's.
    """
    if spec.separate_projections:
        assert hw is not None, "the GRU needs U·h_{t−1} + b_hh apart"
        return gru_step(xw, hw, h, ops, seen), None
    a = xw if hw is None else xw + hw
    if spec is PEEPHOLE:
        assert peep is not None and c is not None
        return peephole_step(a, c, peep, ops, seen)
    if spec is CIFG:
        assert c is not None
        return cifg_step(a, c, ops, seen)
    if spec is LSTM or spec is MOGRIFIER:
        assert c is not None
        return lstm_step(a, c, ops, seen)
    return rnn_step(a, ops, relu=spec is RNN_RELU), None
