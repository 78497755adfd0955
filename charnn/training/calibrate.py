"""How fast each candidate width trains on this machine: the measurement a time budget's plan
rests on (charnn.training.plan). A few real training steps per width, at the run's batch shape and
precision, on random characters; widths are tried narrowest first, and the wider ones stop being
tried as soon as one no longer fits the budget. A width given explicitly is the only one timed:
its speed still tells how many passes the run will make (and so its dropout).

A step's time on a shared machine jumps now and then (a step of 2x384 took 39 to 55 ms in one
second here), and the plan's passes follow the speed measured: each width's speed comes from the
median of TIMED_STEPS steps, after WARMUP_STEPS steps that allocate and are not timed. A width
that does not fit is timed once more before it is given up, and keeps the faster median: a slow
stretch longer than a few steps must not narrow the model (the README's quickstart, run straight
after its installs, once timed 2x256 at half its usual speed and trained 2x128)."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch
from torch.nn import functional as F

from charnn.config.train import RunConfig, TrainConfig
from charnn.nn.devices import autocast, check_precision
from charnn.nn.model import CharRNN, check_model_fits, fits_in_memory, num_parameters
from charnn.training.optim import adamw
from charnn.training.plan import WIDTHS, Facts, Width, affordable, planned_model

WARMUP_STEPS = 2
TIMED_STEPS = 5


def calibrate(config: TrainConfig, facts: Facts, vocab_size: int, device: torch.device) -> Facts:
    """`facts` with the training speed of each width worth trying (a second or a few)."""
    precision = config.precision or ("bf16" if facts.native_bf16 else "fp32")
    check_precision(device, precision, config.model.cell)  # before timing anything in it
    batch, seq_len = config.batch_size, config.seq_len
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(vocab_size, (batch, seq_len + 1), generator=generator).to(device)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    widths = dict(facts.widths)
    rng_state = torch.get_rng_state()  # building models must not move the run's generator

    def fits(width: int) -> bool:
        return affordable(config, replace(facts, widths=widths), width)

    try:
        given = config.model.hidden_size
        for width in (given,) if given is not None else WIDTHS:
            shape = planned_model(config, vocab_size, hidden_size=width, dropout=0.0)
            if given is not None:
                check_model_fits(shape, device)  # a width given explicitly can be any
            elif not fits_in_memory(shape, device):
                break  # wider ones need more: the plan chooses among those measured
            model = CharRNN(shape).to(device)
            optimizer = adamw(model.parameters(), 1e-4, 0.0, device, RunConfig.beta1)
            seconds = _step_seconds(model, optimizer, inputs, targets, device, precision)
            widths[width] = Width(batch * seq_len / seconds, num_parameters(model))
            if given is None and not fits(width):  # once more, in case the machine was busy
                seconds = min(seconds, _step_seconds(model, optimizer, inputs, targets, device,
                                                     precision, warmup=0))  # fmt: skip
                widths[width] = Width(batch * seq_len / seconds, num_parameters(model))
                if not fits(width):
                    break  # wider ones train slower and have more parameters: none fits either
    finally:
        torch.set_rng_state(rng_state)
    return replace(facts, widths=widths)


def _step_seconds(
    model: CharRNN,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    device: torch.device,
    precision: str,
    warmup: int = WARMUP_STEPS,
) -> float:
    """The median time of TIMED_STEPS training steps, after `warmup` untimed ones."""
    seconds = []
    for _ in range(warmup + TIMED_STEPS):
        started = time.perf_counter()
        with autocast(device, precision):
            logits, _ = model(inputs)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # wait for the device
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[warmup:])
