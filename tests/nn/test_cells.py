"""The hand-written cells against PyTorch's fused modules, and every cell through the CLI."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from charnn.checkpoints.loading import load_checkpoint
from charnn.config.model import CELLS, ModelSpec
from charnn.nn.cells import NUMPY, SPECS, TORCH, mogrify, step
from charnn.nn.model import CharRNN
from charnn.nn.sequence import lstm_family_window
from charnn.nn.stack import RecurrentStack

from conftest import TINY, run_charnn

LAYERS, B, T, E, H = 3, 4, 9, 5, 7


def fused(cell: str) -> nn.Module:
    if cell == "lstm":
        return nn.LSTM(E, H, LAYERS, batch_first=True)
    if cell == "gru":
        return nn.GRU(E, H, LAYERS, batch_first=True)
    nonlinearity = "relu" if cell == "rnn-relu" else "tanh"
    return nn.RNN(E, H, LAYERS, nonlinearity=nonlinearity, batch_first=True)


def random_state(cell: str):
    h = torch.randn(LAYERS, B, H)
    return (h, torch.randn(LAYERS, B, H)) if SPECS[cell].has_cell_state else h


def run(module: nn.Module, x: torch.Tensor, state):
    """Outputs, final state and parameter gradients of a loss that uses all of them."""
    module.zero_grad()
    out, final = module(x, state)
    finals = final if isinstance(final, tuple) else (final,)
    loss = (out**2).sum() + sum((f**3).sum() for f in finals)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return out, finals, grads


@pytest.mark.parametrize("cell", ["rnn", "rnn-relu", "lstm", "gru"])
def test_hand_written_cell_matches_pytorch(cell):
    torch.manual_seed(0)
    reference = fused(cell)
    ours = RecurrentStack(cell, E, H, LAYERS)
    ours.load_state_dict(reference.state_dict())  # the same names and layout
    x, state = torch.randn(B, T, E), random_state(cell)
    out_ref, finals_ref, grads_ref = run(reference, x, state)
    out, finals, grads = run(ours, x, state)
    assert torch.allclose(out, out_ref, atol=1e-5)
    for a, b in zip(finals, finals_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert torch.allclose(grads[name], grads_ref[name], atol=1e-5), name


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg", "mogrifier"])
def test_written_out_backward_matches_autograd_through_the_steps(cell):
    """Training runs the LSTM family through charnn.nn.sequence's hand-written backward pass;
    autograd through the step functions (the path taken when gates are recorded) is the
    oracle, for the weights, the peepholes, the inputs and the initial state."""
    torch.manual_seed(1)
    stack = RecurrentStack(cell, E, H, LAYERS)
    x = torch.randn(B, T, E, requires_grad=True)
    h0, c0 = (torch.randn(LAYERS, B, H, requires_grad=True) for _ in range(2))

    def gradients(record):
        stack.zero_grad()
        x.grad = h0.grad = c0.grad = None
        out, (h, c) = stack(x, (h0, c0), record=record)
        ((out**2).sum() + (h**3).sum() + (c**3).sum()).backward()
        found = {name: p.grad.clone() for name, p in stack.named_parameters()}
        return out, {**found, "x": x.grad.clone(), "h0": h0.grad.clone(), "c0": c0.grad.clone()}

    out, written_out = gradients(record=None)
    out_ref, autograd = gradients(record=[{} for _ in range(LAYERS)])
    assert torch.allclose(out, out_ref, atol=1e-6)
    assert written_out.keys() == autograd.keys()
    for name in autograd:
        assert torch.allclose(written_out[name], autograd[name], atol=1e-5), name


def relative_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    found, expected = found.detach().float(), expected.detach().float()
    return float((found - expected).norm() / expected.norm())


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg", "mogrifier"])
def test_written_out_backward_under_bf16_autocast(cell):
    """bf16 training (autocast on a CPU) takes the written-out backward too. Autograd through
    the steps under the same autocast is the oracle, to bf16's precision (8 bits of mantissa,
    a relative error of 0.4% per rounding): every gradient within 2% of it, in norm."""
    torch.manual_seed(1)
    stack = RecurrentStack(cell, E, H, LAYERS)
    x = torch.randn(B, T, E, requires_grad=True)
    h0, c0 = (torch.randn(LAYERS, B, H, requires_grad=True) for _ in range(2))

    def gradients(record):
        stack.zero_grad()
        x.grad = h0.grad = c0.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, (h, c) = stack(x, (h0, c0), record=record)
            loss = (out.float() ** 2).sum() + (h.float() ** 3).sum() + (c.float() ** 3).sum()
        loss.backward()
        found = {name: p.grad.clone() for name, p in stack.named_parameters()}
        return out, {**found, "x": x.grad.clone(), "h0": h0.grad.clone(), "c0": c0.grad.clone()}

    out, written_out = gradients(record=None)
    out_ref, autograd = gradients(record=[{} for _ in range(LAYERS)])
    assert relative_error(out, out_ref) < 2e-2
    assert written_out.keys() == autograd.keys()
    for name in autograd:
        assert written_out[name].dtype == torch.float32, name  # as the weights and inputs
        assert relative_error(written_out[name], autograd[name]) < 2e-2, name


@pytest.mark.parametrize("cell", ["peephole", "cifg"])
def test_under_autocast_the_window_multiplies_in_bf16_and_keeps_its_state_in_fp32(cell):
    """Under bf16 autocast the window's products run in bf16 (its results are not the fp32
    window's, but within bf16's precision of them), its state comes out in fp32 whatever dtype
    it came in, and each gradient comes back in its input's dtype (bf16 here for the input
    projection and the start state)."""
    torch.manual_seed(4)
    spec = SPECS[cell]
    bf16 = {"dtype": torch.bfloat16}
    inputs = {
        "xw": torch.randn(B, T, spec.blocks * H, **bf16),
        "h": torch.randn(B, H, **bf16),
        "c": torch.randn(B, H, **bf16),
        "w_hh": torch.randn(spec.blocks * H, H),
        "b_hh": torch.randn(spec.blocks * H),
        "peep": torch.randn(len(spec.peepholes) * H) if spec.peepholes else None,
    }

    def run(autocast: bool, dtype_of=lambda t: t.dtype):
        leaves = {
            name: None if t is None else t.to(dtype_of(t), copy=True).requires_grad_()
            for name, t in inputs.items()
        }
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out, h_t, c_t = lstm_family_window(spec, *leaves.values())
        ((out**2).sum() + (h_t**3).sum() + (c_t**3).sum()).backward()
        return (out, h_t, c_t), {name: t for name, t in leaves.items() if t is not None}

    outputs, leaves = run(autocast=True)
    outputs_fp32, leaves_fp32 = run(autocast=False, dtype_of=lambda t: torch.float32)
    for found, expected in zip(outputs, outputs_fp32, strict=True):
        assert found.dtype == torch.float32
        assert not torch.equal(found, expected)  # U·h was rounded to bf16
        assert relative_error(found, expected) < 2e-2
    for name, leaf in leaves.items():
        assert leaf.grad is not None and leaf.grad.dtype == inputs[name].dtype, name
        assert torch.isfinite(leaf.grad).all(), name
        assert relative_error(leaf.grad, leaves_fp32[name].grad) < 2e-2, name


@pytest.mark.parametrize("cell", ["peephole", "cifg", "mogrifier"])
def test_a_few_bf16_training_steps_stay_finite(cell):
    torch.manual_seed(5)
    vocab, config = 11, ModelSpec(vocab_size=11, cell=cell, hidden_size=16, embed_size=8)
    model = CharRNN(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, vocab, (4, 17))
    state, losses = None, []
    for _ in range(8):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, state = model(ids[:, :-1], state)
            loss = F.cross_entropy(logits.reshape(-1, vocab).float(), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state = tuple(s.detach() for s in state)
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.parameters())


def test_every_spec_matches_its_parameters():
    """One spec per cell, laid out as PyTorch's fused modules lay out theirs."""
    assert tuple(SPECS) == CELLS
    for cell, fused_module in (("rnn", nn.RNN), ("lstm", nn.LSTM), ("gru", nn.GRU)):
        rows = fused_module(E, H).weight_ih_l0.shape[0]
        assert SPECS[cell].blocks * H == rows, cell
    for cell, spec in SPECS.items():
        stack = RecurrentStack(cell, E, H, 1)
        assert stack.weight_hh_l0.shape == (spec.blocks * H, H)
        peep = getattr(stack, "peephole_l0", None)
        assert (0 if peep is None else peep.numel()) == len(spec.peepholes) * H
        assert "candidate" in spec.gates or spec.gates == ("hidden",)
        assert ("cell" in spec.shows) == spec.has_cell_state


@pytest.mark.parametrize("cell", CELLS)
def test_a_step_is_the_same_on_numpy_arrays_and_torch_tensors(cell):
    """Sampling runs the very step functions that training runs, on NumPy arrays."""
    torch.manual_seed(6)
    spec = SPECS[cell]
    xw, hw = torch.randn(B, spec.blocks * H), torch.randn(B, spec.blocks * H)
    h, c = torch.randn(B, H), torch.randn(B, H) if spec.has_cell_state else None
    peep = torch.randn(len(spec.peepholes) * H) if spec.peepholes else None
    on_torch = step(spec, xw, hw, h, c, TORCH, peep)

    def numpy(t):
        return None if t is None else t.numpy()

    on_numpy = step(spec, numpy(xw), numpy(hw), numpy(h), numpy(c), NUMPY, numpy(peep))
    if spec.mogrifies:  # and its rounds before the step: Q¹ (E × H), R² (H × E), Q³
        x, rounds = torch.randn(B, E), [torch.randn(E, H), torch.randn(H, E), torch.randn(E, H)]
        on_torch += mogrify(x, h, rounds, TORCH)
        on_numpy += mogrify(x.numpy(), h.numpy(), [r.numpy() for r in rounds], NUMPY)
    for found, expected in zip(on_numpy, on_torch, strict=True):
        if expected is None:
            assert found is None
        else:
            assert np.allclose(found, expected.numpy(), atol=1e-6)


def test_peephole_with_zero_peepholes_is_the_lstm():
    torch.manual_seed(1)
    lstm = RecurrentStack("lstm", E, H, LAYERS)
    peephole = RecurrentStack("peephole", E, H, LAYERS)
    peephole.load_state_dict(
        {**lstm.state_dict(), **{f"peephole_l{k}": torch.zeros(3 * H) for k in range(LAYERS)}}
    )
    x, state = torch.randn(B, T, E), random_state("lstm")
    assert torch.allclose(peephole(x, state)[0], lstm(x, state)[0], atol=1e-6)
    # and the peepholes matter once they are not zero
    with torch.no_grad():
        peephole.peephole_l0.fill_(0.5)
    assert not torch.allclose(peephole(x, state)[0], lstm(x, state)[0], atol=1e-3)


def test_cifg_is_an_lstm_whose_input_gate_is_one_minus_forget():
    """σ(−a) = 1 − σ(a): an LSTM whose input-gate rows are the negated forget-gate rows."""
    torch.manual_seed(2)
    cifg = RecurrentStack("cifg", E, H, LAYERS)
    lstm = RecurrentStack("lstm", E, H, LAYERS)
    weights = {}
    for name, value in cifg.state_dict().items():
        f, c, o = value.chunk(3)
        weights[name] = torch.cat([-f, f, c, o])  # rows i, f, C̃, o
    lstm.load_state_dict(weights)
    x, state = torch.randn(B, T, E), random_state("cifg")
    assert torch.allclose(cifg(x, state)[0], lstm(x, state)[0], atol=1e-6)


def mogrifier_reference(x, state, weights, rounds):
    """The Mogrifier LSTM as the paper writes it, in plain torch ops, step by step: for
    i = 1..r, x ← 2σ(Q^i h) ⊙ x (odd i), h ← 2σ(R^i x) ⊙ h (even i); then the LSTM on them."""
    hs, cs = [], []
    for k in range(LAYERS):
        w = {
            name.removesuffix(f"_l{k}"): p for name, p in weights.items() if name.endswith(f"_l{k}")
        }
        h, c = state[0][k], state[1][k]
        outputs = []
        for t in range(x.shape[1]):
            x_t, h_t = x[:, t], h
            for i in range(1, rounds + 1):
                if i % 2:
                    x_t = 2 * torch.sigmoid(h_t @ w[f"mogrifier_q{i}"].T) * x_t
                else:
                    h_t = 2 * torch.sigmoid(x_t @ w[f"mogrifier_r{i}"].T) * h_t
            a = x_t @ w["weight_ih"].T + w["bias_ih"] + h_t @ w["weight_hh"].T + w["bias_hh"]
            i_, f, g, o = a.chunk(4, dim=1)  # PyTorch's order
            c = torch.sigmoid(f) * c + torch.sigmoid(i_) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        x = torch.stack(outputs, dim=1)
        hs.append(h)
        cs.append(c)
    return x, (torch.stack(hs), torch.stack(cs))


@pytest.mark.parametrize("rounds", [1, 4, 5])
def test_mogrifier_matches_its_equations_written_in_torch(rounds):
    """Outputs, final states and the gradients of every parameter, the input and the start
    state, against the reference; E ≠ H, so a Q or R used the wrong way round cannot pass."""
    torch.manual_seed(7)
    stack = RecurrentStack("mogrifier", E, H, LAYERS, mogrifier_rounds=rounds)
    x = torch.randn(B, T, E, requires_grad=True)
    h0, c0 = (torch.randn(LAYERS, B, H, requires_grad=True) for _ in range(2))
    weights = dict(stack.named_parameters())
    assert weights["mogrifier_q1_l0"].shape == (E, H) and len(weights) == LAYERS * (4 + rounds)
    leaves = [x, h0, c0, *weights.values()]

    def run(forward):
        out, (h, c) = forward(x, (h0, c0))
        loss = (out**2).sum() + (h**3).sum() + (c**3).sum()
        return out, h, c, torch.autograd.grad(loss, leaves)

    found = run(stack)
    expected = run(lambda x, state: mogrifier_reference(x, state, weights, rounds))
    for a, b in zip(found[:3], expected[:3], strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    names = ["x", "h0", "c0", *weights]
    for name, a, b in zip(names, found[3], expected[3], strict=True):
        assert torch.allclose(a, b, atol=1e-5), name


def test_mogrifier_with_0_rounds_is_the_lstm():
    """No rounds: PyTorch's LSTM, weights copied; and the rounds change what it computes."""
    torch.manual_seed(8)
    lstm = fused("lstm")
    plain = RecurrentStack("mogrifier", E, H, LAYERS, mogrifier_rounds=0)
    plain.load_state_dict(lstm.state_dict())  # strict: no parameter besides the LSTM's
    x, state = torch.randn(B, T, E), random_state("lstm")
    out_ref, finals_ref, grads_ref = run(lstm, x, state)
    out, finals, grads = run(plain, x, state)
    assert torch.allclose(out, out_ref, atol=1e-5)
    for a, b in zip(finals, finals_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    for name in grads_ref:
        assert torch.allclose(grads[name], grads_ref[name], atol=1e-5), name
    mogrified = RecurrentStack("mogrifier", E, H, LAYERS, mogrifier_rounds=2)
    mogrified.load_state_dict(lstm.state_dict(), strict=False)
    assert not torch.allclose(mogrified(x, state)[0], out_ref, atol=1e-3)


def test_the_mogrifier_under_bf16_autocast():
    """bf16 training autocasts the rounds' products as well as the LSTM's: the outputs and every
    gradient stay finite and within 3% of fp32's, in norm (five rounds round five times more)."""
    torch.manual_seed(9)
    stack = RecurrentStack("mogrifier", E, H, LAYERS)
    x = torch.randn(B, T, E, requires_grad=True)
    state = random_state("mogrifier")

    def run(bf16):
        stack.zero_grad()
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out, (h, c) = stack(x, state)
            loss = (out.float() ** 2).sum() + (h.float() ** 3).sum() + (c.float() ** 3).sum()
        loss.backward()
        return out, {
            "x": x.grad.clone(),
            **{n: p.grad.clone() for n, p in stack.named_parameters()},
        }

    out, grads = run(bf16=True)
    out_ref, grads_ref = run(bf16=False)
    assert not torch.equal(out, out_ref)  # the products ran in bf16
    assert torch.isfinite(out).all() and relative_error(out, out_ref) < 3e-2
    for name, grad in grads.items():
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
        assert relative_error(grad, grads_ref[name]) < 3e-2, name


def test_a_checkpoint_moves_between_fused_and_hand_written():
    torch.manual_seed(3)
    config = ModelSpec(vocab_size=11, cell="lstm", layers=2, hidden_size=8, embed_size=4)
    fast, slow = CharRNN(config), CharRNN(config, hand_written=True)
    slow.load_state_dict(fast.state_dict())
    ids = torch.randint(0, 11, (2, 13))
    assert torch.allclose(fast(ids)[0], slow(ids)[0], atol=1e-5)
    fast.load_state_dict(slow.state_dict())  # and back


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg", "mogrifier"])
def test_forget_bias_starts_the_forget_gate_open(cell):
    model = CharRNN(ModelSpec(vocab_size=5, cell=cell, hidden_size=6, forget_bias=1.0))
    block = 0 if cell == "cifg" else 1
    total = model.rnn.bias_ih_l1 + model.rnn.bias_hh_l1
    assert torch.equal(total[block * 6 : (block + 1) * 6], torch.ones(6))


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_trains_samples_and_evaluates(tmp_path, corpus, cell):
    ck = tmp_path / "ck"
    rounds = ["--mogrifier-rounds", "3"] if cell == "mogrifier" else []
    trained = run_charnn(
        "train", str(corpus), "--cell", cell, "--max-steps", "3", "--checkpoint-dir", str(ck),
        *rounds, *TINY,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    if rounds:  # the flag reached the model: Q¹, R², Q³ and no more
        (checkpoint,) = ck.glob("*/last.pt")
        model = load_checkpoint(checkpoint).model
        assert model.config.mogrifier_rounds == 3
        assert [n for n, _ in model.named_parameters() if "mogrifier" in n] == [
            "rnn.mogrifier_q1_l0", "rnn.mogrifier_r2_l0", "rnn.mogrifier_q3_l0"
        ]  # fmt: skip
    sample = run_charnn("sample", "--cell", cell, "--checkpoint-dir", str(ck), "-n", "25")
    assert sample.returncode == 0 and len(sample.stdout) == 25, sample.stderr
    evaluated = run_charnn(
        "eval", "--cell", cell, "--checkpoint-dir", str(ck), "--json", str(corpus)
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["bits_per_char"] > 0
    if rounds:  # what one round of R (R²) multiplied h by, in (0, 2)
        shown = run_charnn("viz", "--cell", cell, "--checkpoint-dir", str(ck), "--text", "the cell",
                           "--what", "mogrify", "--json")  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert len(values := json.loads(shown.stdout)["values"]) == 8
        assert all(0 < v < 2 for v in values) and len(set(values)) > 1


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("hand_written", [False, True])
def test_parameters_are_counted_without_building_the_model(cell, layers, hand_written):
    from charnn.nn.model import count_parameters, num_parameters

    config = ModelSpec(vocab_size=11, cell=cell, layers=layers, hidden_size=7, embed_size=5)
    assert count_parameters(config) == num_parameters(CharRNN(config, hand_written=hand_written))
