"""The LSTM family over a whole window, with backpropagation through time written out.

Autograd would record each step of charnn.cells as a dozen small operations and replay them
backwards one by one, with a weight-gradient product per step. Here the forward pass runs the
same step functions without recording, keeps the gates, and the backward pass walks the window
from its end with the derivatives below, leaving the weight gradient to one large product over
all T steps at the end: far fewer, larger operations, which is what a small CPU needs.

For one step (a_*: pre-activations, rows stacked as in charnn.cells; x' is dLoss/dx):

    h = o ⊙ tanh(C)          C' += h' ⊙ o ⊙ (1 − tanh²C)      a_o' = h' ⊙ tanh(C) ⊙ o(1 − o)
                             (peephole: C' += a_o' ⊙ p_o)
    C = f ⊙ C₋ + i ⊙ C̃      a_f' = C' ⊙ C₋ ⊙ f(1 − f)        a_i' = C' ⊙ C̃ ⊙ i(1 − i)
                             a_C̃' = C' ⊙ i ⊙ (1 − C̃²)
    cifg (i = 1 − f)         a_f' = C' ⊙ (C₋ − C̃) ⊙ f(1 − f)  a_C̃' = C' ⊙ (1 − f) ⊙ (1 − C̃²)
    C₋' = C' ⊙ f  (peephole: + a_i' ⊙ p_i + a_f' ⊙ p_f)       h₋' = a' · U

and over the window: U' = Σ_t a_t'ᵀ h_{t−1},  b_hh' = Σ_t a_t',  (W·x_t + b_ih)' = a_t'.
Tested against autograd through the step functions (tests/test_cells.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from charnn.cells import cifg_step, lstm_step, peephole_step


class LSTMFamilyWindow(torch.autograd.Function):
    """(cell, xw (B, T, G·H), h0, c0 (B, H), w_hh, b_hh, peep) -> outputs (B, T, H), h_T, c_T."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, cell: str, xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor,
        peep: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        hs, cs, gates = [h], [c], []
        for t in range(xw.shape[1]):
            seen: dict[str, Tensor] = {}
            if cell == "peephole":
                h, c = peephole_step(xw[:, t], h, c, w_hh, b_hh, peep, seen)
            elif cell == "cifg":
                h, c = cifg_step(xw[:, t], h, c, w_hh, b_hh, seen)
            else:
                h, c = lstm_step(xw[:, t], h, c, w_hh, b_hh, seen)
            hs.append(h)
            cs.append(c)
            gates.append([seen[name] for name in ("input", "forget", "candidate", "output")])
        hs_all, cs_all = torch.stack(hs), torch.stack(cs)  # (T + 1, B, H), from the start state
        i, f, g, o = (torch.stack(column) for column in zip(*gates, strict=True))  # (T, B, H)
        ctx.cell = cell
        ctx.save_for_backward(hs_all, cs_all, i, f, g, o, w_hh, peep)
        return hs_all[1:].transpose(0, 1), h, c

    @staticmethod
    def backward(ctx: Any, d_out: Tensor, d_h: Tensor, d_c: Tensor):  # type: ignore[override]
        hs_all, cs_all, i, f, g, o, w_hh, peep = ctx.saved_tensors
        cell = ctx.cell
        T = i.shape[0]
        d_out = d_out.transpose(0, 1)  # (T, B, H)
        p_i, p_f, p_o = peep.chunk(3) if cell == "peephole" else (None, None, None)
        blocks = 3 if cell == "cifg" else 4
        d_pre = d_out.new_empty(T, *i.shape[1:-1], blocks * i.shape[-1])  # (T, B, G·H)
        dh, dc = d_h, d_c
        for t in reversed(range(T)):
            dh = dh + d_out[t]
            c_prev, tanh_c = cs_all[t], torch.tanh(cs_all[t + 1])
            i_t, f_t, g_t, o_t = i[t], f[t], g[t], o[t]
            d_o = dh * tanh_c * o_t * (1 - o_t)
            dc = dc + dh * o_t * (1 - tanh_c * tanh_c)
            if p_o is not None:
                dc = dc + d_o * p_o
            if cell == "cifg":
                d_f = dc * (c_prev - g_t) * f_t * (1 - f_t)
                d_g = dc * (1 - f_t) * (1 - g_t * g_t)
                torch.cat((d_f, d_g, d_o), dim=1, out=d_pre[t])
            else:
                d_i = dc * g_t * i_t * (1 - i_t)
                d_f = dc * c_prev * f_t * (1 - f_t)
                d_g = dc * i_t * (1 - g_t * g_t)
                torch.cat((d_i, d_f, d_g, d_o), dim=1, out=d_pre[t])
            dc = dc * f_t
            if p_i is not None:
                dc = dc + d_i * p_i + d_f * p_f
            dh = d_pre[t] @ w_hh  # (B, G·H) @ (G·H, H)
        H = i.shape[-1]
        flat = d_pre.reshape(-1, d_pre.shape[-1])  # (T·B, G·H)
        d_w_hh = flat.T @ hs_all[:-1].reshape(-1, H)  # one product for the whole window
        d_peep = None
        if cell == "peephole":
            d_peep = torch.cat([
                (d_pre[..., :H] * cs_all[:-1]).sum((0, 1)),  # p_i sees C_{t−1}
                (d_pre[..., H : 2 * H] * cs_all[:-1]).sum((0, 1)),  # p_f sees C_{t−1}
                (d_pre[..., 3 * H :] * cs_all[1:]).sum((0, 1)),  # p_o sees C_t
            ])  # fmt: skip
        return None, d_pre.transpose(0, 1), dh, dc, d_w_hh, flat.sum(0), d_peep
