"""Where a model runs: the native-bf16 check and its fallback; the optimizer kernel."""

import pytest
import torch

from charnn.config.model import ModelSpec
from charnn.errors import CharnnError
from charnn.nn import devices
from charnn.nn.devices import (
    NATIVE_BF16_CHECKS,
    autocast,
    cpu_has_native_bf16,
    cpu_runs_lstm_in_bf16,
)
from charnn.nn.model import CharRNN
from charnn.training.optim import BETA2, adamw


def test_this_torch_still_has_the_private_bf16_checks():
    """PyTorch's AVX512-BF16 and AMX checks are private; if an upgrade renames both, every CPU
    would silently read as having no native bf16 and budgets would train in fp32."""
    present = [name for name in NATIVE_BF16_CHECKS if callable(getattr(torch.cpu, name, None))]
    assert present, (
        f"torch {torch.__version__} has none of torch.cpu.{', '.join(NATIVE_BF16_CHECKS)}: "
        "find their new names and update charnn.nn.devices.NATIVE_BF16_CHECKS"
    )


@pytest.mark.parametrize(
    ("answers", "expected"),
    [({}, False), ({0: False, 1: False}, False), ({0: True}, True), ({1: True}, True)],
)
def test_native_bf16_is_any_check_that_exists_and_says_yes(monkeypatch, answers, expected):
    for index, name in enumerate(NATIVE_BF16_CHECKS):
        if index in answers:
            monkeypatch.setattr(torch.cpu, name, lambda a=answers[index]: a, raising=False)
        else:  # this torch lacks it: read as no, never an error
            monkeypatch.delattr(torch.cpu, name, raising=False)
    assert cpu_has_native_bf16() is expected


def test_the_fused_adamw_on_cpu_steps_as_pytorchs_adamw_with_the_same_betas_does():
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(3)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(4)]
    reference = [torch.nn.Parameter(p.clone()) for p in start]
    ours = [torch.nn.Parameter(p.clone()) for p in start]
    optimizers = [
        torch.optim.AdamW(reference, lr=1e-2, betas=(0.5, BETA2), weight_decay=0.1),
        adamw(ours, 1e-2, 0.1, torch.device("cpu"), beta1=0.5),
    ]
    assert optimizers[1].param_groups[0]["fused"] is True
    for step_grads in grads:
        for params, optimizer in zip((reference, ours), optimizers, strict=True):
            for param, grad in zip(params, step_grads, strict=True):
                param.grad = grad.clone()
            optimizer.step()
    for expected, got in zip(reference, ours, strict=True):
        torch.testing.assert_close(got, expected)
    assert not torch.equal(ours[0], start[0])  # the steps moved it


def test_the_bf16_lstm_probe_agrees_with_a_training_step_of_a_real_model():
    """The probe (one unit, forward only) says what a charnn LSTM's training step under bf16
    autocast does on this CPU; where the plan picks bf16 (native bf16), it must run."""
    model = CharRNN(ModelSpec(vocab_size=7, hidden_size=16, embed_size=8, layers=2))
    ids = torch.randint(7, (3, 5))
    try:
        with autocast(torch.device("cpu"), "bf16"):
            logits, _ = model(ids)
        logits.float().sum().backward()
        ran = True
    except RuntimeError:
        ran = False
    assert cpu_runs_lstm_in_bf16() is ran
    assert ran or not cpu_has_native_bf16()


def test_a_model_is_refused_only_where_its_training_would_not_fit(monkeypatch):
    monkeypatch.setattr(devices, "memory_of", lambda device: 16 * 1000)
    devices.check_fits(1000, "2x8 lstm", torch.device("cpu"))  # exactly fits
    with pytest.raises(CharnnError, match=r"a 2x8 lstm model has 1,001 parameters"):
        devices.check_fits(1001, "2x8 lstm", torch.device("cpu"))
