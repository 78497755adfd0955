"""The LSTM family over a whole window, with backpropagation through time written out.

Autograd would record each step of charnn.nn.cells as a dozen small operations and replay them
backwards one by one, with a weight-gradient product per step. Here the forward pass runs the
same step functions without recording, keeps the gates, and the backward pass walks the window
from its end with the derivatives below, leaving the weight gradient to one large product over
all T steps at the end: far fewer, larger operations, which is what a small CPU needs.

For one step (a_*: pre-activations, blocks as the cell's spec lays them out; x' is dLoss/dx):

    h = o ⊙ tanh(C)          C' += h' ⊙ o ⊙ (1 − tanh²C)      a_o' = h' ⊙ tanh(C) ⊙ o(1 − o)
                             (peephole: C' += a_o' ⊙ p_o)
    C = f ⊙ C₋ + i ⊙ C̃      a_f' = C' ⊙ C₋ ⊙ f(1 − f)        a_i' = C' ⊙ C̃ ⊙ i(1 − i)
                             a_C̃' = C' ⊙ i ⊙ (1 − C̃²)
    cifg (i = 1 − f)         a_f' = C' ⊙ (C₋ − C̃) ⊙ f(1 − f)  a_C̃' = C' ⊙ (1 − f) ⊙ (1 − C̃²)
    C₋' = C' ⊙ f  (peephole: + a_i' ⊙ p_i + a_f' ⊙ p_f)       h₋' = a' · U

and over the window: U' = Σ_t a_t'ᵀ h_{t−1},  b_hh' = Σ_t a_t',  (W·x_t + b_ih)' = a_t'.
Tested against autograd through the step functions (tests/test_cells.py).

Under autocast (bf16 training on a CPU) the window does what autograd through the steps would:
its matrix products (U·h forward, a'·U and the weight gradient backward) run in bf16, and the
gates and the cell state in fp32, so C never accumulates in bf16. custom_fwd and custom_bwd run
the backward under the forward's autocast, and each gradient comes back in its input's dtype.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from charnn.nn.cells import CIFG, TORCH, CellSpec, step


def _forward(
    ctx: Any, spec: CellSpec, xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor,
    peep: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    ctx.spec = spec
    device_type = xw.device.type
    xwb, u = (xw + b_hh).float(), w_hh.T  # both biases added to all T steps at once
    if torch.is_autocast_enabled(device_type):  # cast U once, not at every step
        u = u.to(torch.get_autocast_dtype(device_type))
    h, c = h.float(), c.float()  # the state in fp32, whatever its dtype was
    hs, cs, gates = [h], [c], []
    for t in range(xw.shape[1]):
        seen: dict[str, Tensor] = {}
        a = xwb[:, t] + h @ u  # W·x_t + b_ih + U·h_{t−1} + b_hh, (B, G·H), in fp32
        h, c = step(spec, a, None, h, c, TORCH, peep, seen)  # type: ignore[assignment]
        hs.append(h)
        cs.append(c)
        gates.append([seen[name] for name in ("input", "forget", "candidate", "output")])
    hs_all, cs_all = torch.stack(hs), torch.stack(cs)  # (T + 1, B, H), from the start state
    i, f, candidate, o = (torch.stack(column) for column in zip(*gates, strict=True))  # (T, B, H)
    ctx.save_for_backward(hs_all, cs_all, i, f, candidate, o, w_hh, peep)
    return hs_all[1:].transpose(0, 1), h, c


def _backward(ctx: Any, d_out: Tensor, d_h: Tensor, d_c: Tensor) -> tuple[Tensor | None, ...]:
    hs_all, cs_all, i, f, candidate, o, w_hh, peep = ctx.saved_tensors
    spec: CellSpec = ctx.spec
    T, B, H = i.shape
    d_out = d_out.transpose(0, 1)  # (T, B, H)
    if peep is not None:
        p_i, p_f, p_o = (spec.peephole(peep, gate) for gate in ("input", "forget", "output"))
    d_pre = d_out.new_empty(T, B, spec.blocks * H)  # (T, B, G·H)
    dh, dc = d_h, d_c
    for t in reversed(range(T)):
        dh = dh + d_out[t]
        c_prev, tanh_c = cs_all[t], torch.tanh(cs_all[t + 1])
        i_t, f_t, candidate_t, o_t = i[t], f[t], candidate[t], o[t]
        d = {"output": dh * tanh_c * o_t * (1 - o_t)}
        dc = dc + dh * o_t * (1 - tanh_c * tanh_c)
        if peep is not None:
            dc = dc + d["output"] * p_o
        if spec is CIFG:
            d["forget"] = dc * (c_prev - candidate_t) * f_t * (1 - f_t)
            d["candidate"] = dc * (1 - f_t) * (1 - candidate_t * candidate_t)
        else:
            d["input"] = dc * candidate_t * i_t * (1 - i_t)
            d["forget"] = dc * c_prev * f_t * (1 - f_t)
            d["candidate"] = dc * i_t * (1 - candidate_t * candidate_t)
        torch.cat([d[gate] for gate in spec.gates], dim=1, out=d_pre[t])
        dc = dc * f_t
        if peep is not None:
            dc = dc + d["input"] * p_i + d["forget"] * p_f
        dh = d_pre[t] @ w_hh  # (B, G·H) @ (G·H, H)
    flat = d_pre.reshape(-1, d_pre.shape[-1])  # (T·B, G·H)
    d_w_hh = flat.T @ hs_all[:-1].reshape(-1, H)  # one product for the whole window
    d_peep = None
    if peep is not None:
        sees = {"input": cs_all[:-1], "forget": cs_all[:-1], "output": cs_all[1:]}  # C₋, C₋, C
        d_peep = torch.cat(
            [(spec.block(d_pre, gate) * sees[gate]).sum((0, 1)) for gate in spec.peepholes]
        )
    # in whatever dtype the products left them: autograd casts each to its input's dtype
    return None, d_pre.transpose(0, 1), dh, dc, d_w_hh, flat.sum(0), d_peep


def _window_function(device_type: str) -> type[torch.autograd.Function]:
    """The window as an autograd Function whose backward runs under its forward's autocast."""

    class LSTMFamilyWindow(torch.autograd.Function):
        forward = staticmethod(torch.amp.custom_fwd(_forward, device_type=device_type))
        backward = staticmethod(torch.amp.custom_bwd(_backward, device_type=device_type))

    return LSTMFamilyWindow


WINDOWS = {device_type: _window_function(device_type) for device_type in ("cpu", "cuda")}


def lstm_family_window(
    spec: CellSpec, xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor,
    peep: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """One layer of an LSTM-family cell over a window, differentiable.

    xw (B, T, G·H): W·x_t + b_ih for every step; h, c (B, H): the start state; w_hh (G·H, H),
    b_hh (G·H,), peep (len(spec.peepholes)·H,) or None -> outputs (B, T, H), h_T, c_T.
    """
    window = WINDOWS.get(xw.device.type, WINDOWS["cpu"])
    return window.apply(spec, xw, h, c, w_hh, b_hh, peep)  # type: ignore[no-any-return]
