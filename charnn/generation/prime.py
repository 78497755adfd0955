"""The prime: the text a model reads before it writes, checked against its vocabulary and read
in one forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charnn.errors import SettingError, literal
from charnn.nn.model import CharRNN
from charnn.nn.stepper import Stepper, StepperState, repeat_rows
from charnn.text.vocab import Vocab, describe_chars


def check_prime(prime: str, vocab: Vocab, unknown: str) -> str:
    """The prime, refused if it has characters the model never saw (`unknown` "error"), or
    without them ("skip")."""
    missing = vocab.unknown(prime)
    if missing and unknown == "error":
        raise SettingError(
            f"the prime has characters the model never saw: "
            f"{literal(describe_chars(missing))}; remove them or "
            "pass {unknown} skip"
        )
    return "".join(c for c in prime if c in vocab) if missing else prime


@dataclass(frozen=True)
class Primed:
    """What reading a prime leaves: the next character's logits (1, vocab), the state, and,
    for a conditioned model, what its label adds to each step (1, G·H)."""

    logits: np.ndarray
    state: StepperState
    bias: np.ndarray | None = None

    def rows(self, times: int) -> tuple[np.ndarray, StepperState, np.ndarray | None]:
        """Logits, state and label for `times` rows that start from this prime."""
        bias = None if self.bias is None else np.repeat(self.bias, times, axis=0)
        return np.repeat(self.logits, times, axis=0), repeat_rows(self.state, times), bias


def read_prime(
    model: CharRNN,
    vocab: Vocab,
    prime: str,
    stepper: Stepper,
    weights: np.ndarray | None = None,
) -> Primed:
    """Read `prime` in one pass, on the model's own device, in eval mode (the model is left
    where and as it was), in the label these `weights` mix (label_weights_for; None: "any").
    No prime reads as if after a newline (or the first character of a vocabulary without one):
    where a text would start."""
    start = prime or ("\n" if "\n" in vocab else vocab.chars[0])
    device = next(model.parameters()).device
    was_training = model.training
    try:
        with torch.no_grad():  # only here: the steps that follow are NumPy
            ids = torch.as_tensor(vocab.encode(start), device=device)[None]
            labels = None
            if weights is not None:
                labels = model.mixed(torch.as_tensor(weights[None], device=device))
            logits, state = model.eval()(ids, labels=labels)
    finally:
        model.train(was_training)
    bias = None if weights is None else stepper.label_bias(weights[None])
    return Primed(logits[0, -1:].float().cpu().numpy(), stepper.state_from_torch(state), bias)
