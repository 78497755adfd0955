"""One character at a time, fast: the recurrent equations in NumPy, for sampling.

Calling PyTorch's fused modules once per character costs more in per-call overhead than in
arithmetic (a 2x512 nn.LSTM step runs a few hundred characters per second on a small CPU). Here
each step is a handful of small NumPy operations on the model's own weights, and the first
layer's input projection is looked up from a table precomputed for every character.

PyTorch's gate layout and equations (x: input, h: previous hidden state, σ: logistic):

    LSTM  i, f, g, o = σ, σ, tanh, σ  of  (W_ih·x + b_ih + W_hh·h + b_hh)
          c' = f ⊙ c + i ⊙ g            h' = o ⊙ tanh(c')
    GRU   r, z = σ(W_ir·x + b_ir + W_hr·h + b_hr), σ(W_iz·x + b_iz + W_hz·h + b_hz)
          n = tanh(W_in·x + b_in + r ⊙ (W_hn·h + b_hn))      h' = (1 − z) ⊙ n + z ⊙ h
    RNN   h' = tanh(W_ih·x + b_ih + W_hh·h + b_hh)
"""

from __future__ import annotations

import numpy as np
import torch

from charnn.cells import GATES, HAS_CELL_STATE
from charnn.model import CharRNN, State


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function, without overflow


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().float().contiguous().numpy()


class Stepper:
    """Runs a CharRNN forward one character per call, for a batch of B independent streams.

    The state is a list with one entry per layer: (h, c) for LSTM-family cells, h otherwise,
    each (B, H).
    Weights are rearranged once, so that each layer's step is as few NumPy calls as possible:
    - layer 0's input projection W_ih·embed(x) + b_ih is a table lookup, one row per character;
    - LSTM and RNN layers above it compute W_ih·x + W_hh·h as one product, [x, h]·[W_ih; W_hh],
      with the two biases added together beforehand;
    - the LSTM's (and cifg's) candidate rows are doubled, because tanh(a) = 2σ(2a) − 1 lets one
      logistic call cover all the gates.
    """

    def __init__(self, model: CharRNN) -> None:
        config = model.config
        self.cell = config.cell
        self.hidden = H = model.hidden_size
        rnn = model.rnn
        # scale the candidate rows by 2 for the single-logistic trick above
        scale = torch.ones(GATES[self.cell] * H)
        candidate_block = {"lstm": 2, "cifg": 1}.get(self.cell)
        if candidate_block is not None:
            scale[candidate_block * H : (candidate_block + 1) * H] = 2.0
        self.peepholes = [
            _numpy(getattr(rnn, f"peephole_l{k}")).reshape(3, H)
            for k in range(config.layers)
            if self.cell == "peephole"
        ]
        fold_biases = self.cell != "gru"  # the GRU keeps b_hn inside r ⊙ (W_hn·h + b_hn)
        with torch.no_grad():
            self.layers = []
            for k in range(config.layers):
                w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
                b_ih, b_hh = getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")
                if fold_biases:
                    b_ih, b_hh = b_ih + b_hh, torch.zeros_like(b_hh)
                # stored transposed so that a step is x @ W: (B, in) @ (in, gates)
                w_ih, w_hh = (w_ih * scale[:, None]).T, (w_hh * scale[:, None]).T
                w_both = torch.cat([w_ih, w_hh]) if fold_biases and k > 0 else None
                self.layers.append(
                    (
                        _numpy(w_ih),
                        _numpy(b_ih * scale),
                        _numpy(w_hh),
                        _numpy(b_hh * scale),
                        None if w_both is None else _numpy(w_both),
                    )
                )
            first = self.layers[0]
            # W_ih·embed(c) + b_ih (+ b_hh when folded) for every character c: (vocab, gates)
            self.input_table = _numpy(model.embed.weight) @ first[0] + first[1]
            self.decoder = (_numpy(model.decoder.weight.T), _numpy(model.decoder.bias))

    def state_from_torch(self, state: State, repeat: int = 1) -> list:
        """Convert a fused module's state (layers, B, H), each row repeated `repeat` times."""

        def rows(t: torch.Tensor, k: int) -> np.ndarray:
            return np.repeat(_numpy(t[k]), repeat, axis=0)

        layers = range(len(self.layers))
        if isinstance(state, tuple):
            return [(rows(state[0], k), rows(state[1], k)) for k in layers]
        return [rows(state, k) for k in layers]

    def step(self, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """ids (B,) -> logits (B, vocab) and the new state."""
        new_state: list = []
        h: np.ndarray = np.empty(0)  # the output of the layer below; layer 0 reads the table
        for k, (w_ih, b_ih, w_hh, b_hh, w_both) in enumerate(self.layers):
            previous = state[k]
            h_prev = previous[0] if self.cell in HAS_CELL_STATE else previous
            if self.cell == "gru":
                x_proj = self.input_table[ids] if k == 0 else h @ w_ih + b_ih
                h = self._gru(x_proj, h_prev @ w_hh + b_hh, h_prev)
                new_state.append(h)
                continue
            if k == 0:
                pre = self.input_table[ids] + h_prev @ w_hh  # W_ih·x + W_hh·h + b
            else:
                pre = np.concatenate([h, h_prev], axis=1) @ w_both + b_ih
            if self.cell in HAS_CELL_STATE:
                h, c = self._cell_state_step(k, pre, previous[1])
                new_state.append((h, c))
            else:
                h = np.maximum(pre, 0.0) if self.cell == "rnn-relu" else np.tanh(pre)
                new_state.append(h)
        w_out, b_out = self.decoder
        return h @ w_out + b_out, new_state

    def _cell_state_step(
        self, k: int, pre: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The LSTM family (equations in charnn.cells), from the summed pre-activations."""
        H = self.hidden
        if self.cell == "peephole":
            p_i, p_f, p_o = self.peepholes[k]
            i = _sigmoid(pre[:, :H] + p_i * c)
            f = _sigmoid(pre[:, H : 2 * H] + p_f * c)
            c = f * c + i * np.tanh(pre[:, 2 * H : 3 * H])
            o = _sigmoid(pre[:, 3 * H :] + p_o * c)
            return o * np.tanh(c), c
        gates = _sigmoid(pre)  # the candidate's rows were doubled: 2σ(2a) − 1 = tanh(a)
        if self.cell == "cifg":
            f, g, o = gates[:, :H], 2.0 * gates[:, H : 2 * H] - 1.0, gates[:, 2 * H :]
            c = f * c + (1.0 - f) * g
        else:
            i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
            g = 2.0 * gates[:, 2 * H : 3 * H] - 1.0
            c = f * c + i * g
        return o * np.tanh(c), c

    def _gru(self, x_proj: np.ndarray, h_proj: np.ndarray, h: np.ndarray) -> np.ndarray:
        H = self.hidden
        r_z = _sigmoid(x_proj[:, : 2 * H] + h_proj[:, : 2 * H])
        r, z = r_z[:, :H], r_z[:, H:]
        n = np.tanh(x_proj[:, 2 * H :] + r * h_proj[:, 2 * H :])
        return (1.0 - z) * n + z * h
