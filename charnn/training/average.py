"""An exponential moving average of the weights, its horizon a share of the run.

The live weights wander around the minimum the optimiser is circling, by as much as the learning
rate's step and the batches' noise make them; their running average sits nearer its middle
(Polyak averaging; AWD-LSTM's NT-ASGD and SWA average too). Each training step moves the average
towards the live weights by the share of the run the step took, divided by `horizon`:

    w̄ ← w̄ + r · (w − w̄),   r = min(1, Δfraction / horizon)

so a horizon of 0.1 remembers about the last tenth of a run whatever its length, in steps or
seconds, and a resumed run carries on the same average. The trainer scores the average beside
the live weights at each evaluation and keeps whichever is better as best.pt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The running average of `model`'s parameters (in fp32, on the model's device)."""

    def __init__(self, model: nn.Module, horizon: float) -> None:
        if horizon <= 0:
            raise ValueError("an average's horizon is a positive share of the run")
        self.model, self.horizon = model, horizon
        self.weights = [p.detach().float().clone() for p in model.parameters()]
        self.fraction: float | None = None  # of the run, at the last update; None: none yet

    @torch.no_grad()
    def update(self, fraction: float) -> None:
        """Move the average towards the live weights, `fraction` of the run now done."""
        live = [p.detach().float() for p in self.model.parameters()]
        if self.fraction is None:  # the first step starts the average at the live weights
            torch._foreach_copy_(self.weights, live)
        else:
            rate = min(1.0, max(0.0, fraction - self.fraction) / self.horizon)
            torch._foreach_lerp_(self.weights, live, rate)
        self.fraction = fraction

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it."""
        params = list(self.model.parameters())
        with torch.no_grad():
            live = [p.detach().clone() for p in params]
            for p, average in zip(params, self.weights, strict=True):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, own in zip(params, live, strict=True):
                    p.copy_(own)

    def model_state(self) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged weights in place of its own (on the CPU)."""
        state = {name: value.detach().cpu() for name, value in self.model.state_dict().items()}
        for (name, _), average in zip(self.model.named_parameters(), self.weights, strict=True):
            state[name] = average.detach().to("cpu", state[name].dtype, copy=True)
        return state

    def state_dict(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "fraction": self.fraction,
            "weights": [w.detach().cpu().clone() for w in self.weights],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weights = state["weights"]
        if len(weights) != len(self.weights):
            raise ValueError(
                f"the average holds {len(weights)} tensors, the model {len(self.weights)}"
            )
        shapes = [tuple(w.shape) for w in weights]
        if shapes != [tuple(w.shape) for w in self.weights]:
            raise ValueError("the saved average's shapes are not the model's")
        with torch.no_grad():
            for own, saved in zip(self.weights, weights, strict=True):
                own.copy_(saved)  # onto the model's device
        self.fraction = state["fraction"]
