"""The hand-written cells against PyTorch's fused modules, and every cell through the CLI."""

import json

import pytest
import torch
from torch import nn

from charnn.cells import RecurrentStack
from charnn.config import ModelConfig
from charnn.model import CharRNN

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
    return (h, torch.randn(LAYERS, B, H)) if cell in ("lstm", "peephole", "cifg") else h


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


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_written_out_backward_matches_autograd_through_the_steps(cell):
    """Training runs the LSTM family through charnn.sequence's hand-written backward pass;
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


def test_a_checkpoint_moves_between_fused_and_hand_written():
    torch.manual_seed(3)
    config = ModelConfig(vocab_size=11, cell="lstm", layers=2, hidden_size=8, embed_size=4)
    fast, slow = CharRNN(config), CharRNN(config, hand_written=True)
    slow.load_state_dict(fast.state_dict())
    ids = torch.randint(0, 11, (2, 13))
    assert torch.allclose(fast(ids)[0], slow(ids)[0], atol=1e-5)
    fast.load_state_dict(slow.state_dict())  # and back


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_forget_bias_starts_the_forget_gate_open(cell):
    model = CharRNN(ModelConfig(vocab_size=5, cell=cell, hidden_size=6, forget_bias=1.0))
    block = 0 if cell == "cifg" else 1
    total = model.rnn.bias_ih_l1 + model.rnn.bias_hh_l1
    assert torch.equal(total[block * 6 : (block + 1) * 6], torch.ones(6))


@pytest.mark.parametrize("cell", ["rnn", "rnn-relu", "lstm", "gru", "peephole", "cifg"])
def test_every_cell_trains_samples_and_evaluates(tmp_path, corpus, cell):
    ck = tmp_path / "ck"
    trained = run_charnn(
        "train", str(corpus), "--cell", cell, "--max-steps", "3", "--checkpoint-dir", str(ck), *TINY
    )
    assert trained.returncode == 0, trained.stderr
    sample = run_charnn("sample", "--cell", cell, "--checkpoint-dir", str(ck), "-n", "25")
    assert sample.returncode == 0 and len(sample.stdout) == 25, sample.stderr
    evaluated = run_charnn(
        "eval", "--cell", cell, "--checkpoint-dir", str(ck), "--json", str(corpus)
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["bits_per_char"] > 0
