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

The mogrifier's x_t depends on h_{t−1}, so its window takes x itself and projects step by step,
[x̃, h̃]·[W U]ᵀ in one product. Its rounds (gates g = 2σ(z), z = Q^i·h or R^i·x) are walked back
after the LSTM's step, from x̃' = a'·W and h̃' = a'·U:

    x ← g ⊙ x (odd i)        z' = x' ⊙ x₋ ⊙ g(1 − g/2)   x₋' = x' ⊙ g    h' += z'·Q^i
    h ← g ⊙ h (even i)       z' = h' ⊙ h₋ ⊙ g(1 − g/2)   h₋' = h' ⊙ g    x' += z'·R^i

and over the window [W U]' = Σ_t a_t'ᵀ [x̃_t, h̃_t], Q^i' = Σ_t z_t'ᵀ h (the h that round read),
R^i' = Σ_t z_t'ᵀ x, each one product; h_{t−1}' is what reaches h⁰, the h before the rounds.
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

from charnn.nn.cells import CIFG, MOGRIFIER, TORCH, CellSpec, mogrify, step

LSTM_GATES = ("input", "forget", "candidate", "output")


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
        gates.append([seen[name] for name in LSTM_GATES])
    hs_all, cs_all = torch.stack(hs), torch.stack(cs)  # (T + 1, B, H), from the start state
    i, f, candidate, o = (torch.stack(column) for column in zip(*gates, strict=True))  # (T, B, H)
    ctx.save_for_backward(hs_all, cs_all, i, f, candidate, o, w_hh, peep)
    return hs_all[1:].transpose(0, 1), h, c


def _backward(ctx: Any, d_out: Tensor, d_h: Tensor, d_c: Tensor) -> tuple[Tensor | None, ...]:
    hs_all, cs_all, i, f, candidate, o, w_hh, peep = ctx.saved_tensors
    spec: CellSpec = ctx.spec
    T, B, H = i.shape
    d_out = d_out.transpose(0, 1)  # (T, B, H)
    d_pre = d_out.new_empty(T, B, spec.blocks * H)  # (T, B, G·H)
    dh, dc = d_h, d_c
    for t in reversed(range(T)):
        dc = _step_back(spec, dh + d_out[t], dc, t, cs_all, (i, f, candidate, o), peep, d_pre[t])
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


def _step_back(
    spec: CellSpec, dh: Tensor, dc: Tensor, t: int, cs_all: Tensor, gates: tuple[Tensor, ...],
    peep: Tensor | None, d_pre: Tensor,
) -> Tensor:  # fmt: skip
    """Step t's derivatives: h' and C' (B, H) after it -> a' into d_pre (B, G·H), and C₋'."""
    i, f, candidate, o = (gate[t] for gate in gates)
    c_prev, tanh_c = cs_all[t], torch.tanh(cs_all[t + 1])
    d = {"output": dh * tanh_c * o * (1 - o)}
    dc = dc + dh * o * (1 - tanh_c * tanh_c)
    if peep is not None:
        p_i, p_f, p_o = (spec.peephole(peep, gate) for gate in ("input", "forget", "output"))
        dc = dc + d["output"] * p_o
    if spec is CIFG:
        d["forget"] = dc * (c_prev - candidate) * f * (1 - f)
        d["candidate"] = dc * (1 - f) * (1 - candidate * candidate)
    else:
        d["input"] = dc * candidate * i * (1 - i)
        d["forget"] = dc * c_prev * f * (1 - f)
        d["candidate"] = dc * i * (1 - candidate * candidate)
    torch.cat([d[gate] for gate in spec.gates], dim=1, out=d_pre)
    dc = dc * f
    if peep is not None:
        dc = dc + d["input"] * p_i + d["forget"] * p_f
    return dc


def _mogrifier_forward(
    ctx: Any, x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
    b_hh: Tensor, *rounds: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    device_type = x.device.type
    w, b = torch.cat([w_ih, w_hh], dim=1).T, (b_ih + b_hh).float()  # [W U]ᵀ (in + H, G·H)
    weights = list(rounds)
    if torch.is_autocast_enabled(device_type):  # cast the weights once, not at every step
        dtype = torch.get_autocast_dtype(device_type)
        w, weights = w.to(dtype), [weight.to(dtype) for weight in weights]
    x, h, c = x.float(), h.float(), c.float()  # the state in fp32, whatever its dtype was
    xh = x.new_empty(x.shape[0], w.shape[0])  # [x̃_t, h̃_{t−1}], step after step
    hs, cs, gates, round_gates = [h], [c], [], []
    for t in range(x.shape[1]):
        seen: dict[str, Any] = {}
        torch.cat(mogrify(x[:, t], h, weights, TORCH, seen), dim=1, out=xh)
        a = xh @ w + b  # W·x̃_t + U·h̃_{t−1} + both biases, (B, G·H), in fp32
        h, c = step(MOGRIFIER, a, None, h, c, TORCH, None, seen)  # type: ignore[assignment]
        hs.append(h)
        cs.append(c)
        gates.append([seen[name] for name in LSTM_GATES])
        round_gates.append(seen["rounds"])
    hs_all, cs_all = torch.stack(hs), torch.stack(cs)  # (T + 1, B, H), from the start state
    i, f, candidate, o = (torch.stack(column) for column in zip(*gates, strict=True))  # (T, B, H)
    by_round = [torch.stack(column) for column in zip(*round_gates, strict=True)]  # (T, B, ·)
    ctx.save_for_backward(x, hs_all, cs_all, i, f, candidate, o, w_ih, w_hh, *rounds, *by_round)
    ctx.rounds = len(rounds)
    return hs_all[1:].transpose(0, 1), h, c


def _mogrifier_backward(
    ctx: Any, d_out: Tensor, d_h: Tensor, d_c: Tensor
) -> tuple[Tensor | None, ...]:
    x, hs_all, cs_all, i, f, candidate, o, w_ih, w_hh, *rest = ctx.saved_tensors
    rounds, by_round = rest[: ctx.rounds], rest[ctx.rounds :]
    T, B, H = i.shape
    E = x.shape[-1]
    w = torch.cat([w_ih, w_hh], dim=1)  # (G·H, in + H)
    if torch.is_autocast_enabled(x.device.type):  # cast the weights once, not at every step
        dtype = torch.get_autocast_dtype(x.device.type)
        w, rounds = w.to(dtype), [weight.to(dtype) for weight in rounds]
    # x and h as each round found them, all T steps at once: xs[j], hs[j] after j rounds on
    # them, (T, B, ·); xs[-1] and hs[-1] are x̃ and h̃, what W and U read
    xs, hs = [x.transpose(0, 1)], [hs_all[:-1]]
    for r, g in enumerate(by_round):  # round r + 1
        if r % 2 == 0:
            xs.append(g * xs[-1])
        else:
            hs.append(g * hs[-1])
    d_out = d_out.transpose(0, 1)  # (T, B, H)
    d_pre = d_out.new_empty(T, B, w.shape[0])  # (T, B, G·H)
    d_z = [torch.empty_like(g) for g in by_round]  # each round's z', (T, B, ·)
    d_x = torch.empty_like(x)  # (B, T, in)
    dh, dc = d_h, d_c
    for t in reversed(range(T)):
        gates = (i, f, candidate, o)
        dc = _step_back(MOGRIFIER, dh + d_out[t], dc, t, cs_all, gates, None, d_pre[t])
        d_xh = d_pre[t] @ w  # (B, in + H): x̃' and h̃'
        dx, dh = d_xh[:, :E], d_xh[:, E:]
        for r in reversed(range(ctx.rounds)):  # round r + 1, from the last
            g, j = by_round[r][t], r // 2
            if r % 2 == 0:  # x ← g ⊙ x,  g = 2σ(Q·h)
                d_z[r][t] = dx * xs[j][t] * g * (1 - g / 2)
                dx = dx * g
                dh = dh + d_z[r][t] @ rounds[r]
            else:  # h ← g ⊙ h,  g = 2σ(R·x)
                d_z[r][t] = dh * hs[j][t] * g * (1 - g / 2)
                dh = dh * g
                dx = dx + d_z[r][t] @ rounds[r]
        d_x[:, t] = dx
    flat = d_pre.reshape(-1, d_pre.shape[-1])  # (T·B, G·H)
    reads = [hs[r // 2] if r % 2 == 0 else xs[r // 2 + 1] for r in range(ctx.rounds)]  # z's

    def product(d: Tensor, read: Tensor) -> Tensor:  # Σ_t d_tᵀ read_t: one for the window
        return d.reshape(T * B, -1).T @ read.reshape(T * B, -1)

    d_rounds = [product(d, read) for d, read in zip(d_z, reads, strict=True)]
    d_b = flat.sum(0)
    return (d_x, dh, dc, product(flat, xs[-1]), product(flat, hs[-1]), d_b, d_b.clone(),
            *d_rounds)  # fmt: skip


def _window_function(device_type: str) -> type[torch.autograd.Function]:
    """The window as an autograd Function whose backward runs under its forward's autocast."""

    class LSTMFamilyWindow(torch.autograd.Function):
        forward = staticmethod(torch.amp.custom_fwd(_forward, device_type=device_type))
        backward = staticmethod(torch.amp.custom_bwd(_backward, device_type=device_type))

    return LSTMFamilyWindow


def _mogrifier_window_function(device_type: str) -> type[torch.autograd.Function]:
    class MogrifierWindow(torch.autograd.Function):
        forward = staticmethod(torch.amp.custom_fwd(_mogrifier_forward, device_type=device_type))
        backward = staticmethod(torch.amp.custom_bwd(_mogrifier_backward, device_type=device_type))

    return MogrifierWindow


WINDOWS = {device_type: _window_function(device_type) for device_type in ("cpu", "cuda")}
MOGRIFIER_WINDOWS = {device: _mogrifier_window_function(device) for device in ("cpu", "cuda")}


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


def mogrifier_window(
    x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
    rounds: list[Tensor],
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """One layer of the mogrifier over a window, differentiable.

    x (B, T, in): the layer's input; h, c (B, H): the start state; w_ih (G·H, in), w_hh (G·H, H),
    b_ih, b_hh (G·H,); rounds: Q¹, R², ... -> outputs (B, T, H), h_T, c_T.
    """
    window = MOGRIFIER_WINDOWS.get(x.device.type, MOGRIFIER_WINDOWS["cpu"])
    return window.apply(x, h, c, w_ih, w_hh, b_ih, b_hh, *rounds)  # type: ignore[no-any-return]
