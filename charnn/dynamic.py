"""Dynamic evaluation (Krause et al. 2018): a model that keeps learning the text it reads.

The text is read once, as one stream, in windows. Each window is first scored with the weights
as they are, and only then does one gradient step on it move them:

    θ ← θ − lr·∇L(window) + decay·(θ_trained − θ)

so that the model adapts to the text's recent style (a play's names, a program's identifiers)
while the decay pulls it back toward what it learned in training. No character is ever scored by
weights that have seen it. The step size and decay are chosen on a slice of the training split,
never on the text reported.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from charnn.checkpoint import LoadedModel
from charnn.evaluator import ids_to_score, model_corpus
from charnn.model import CharRNN, detach_state
from charnn.vocab import read_corpus

WINDOW = 64  # characters scored between two updates
TUNE_CHARS = 10_000  # the end of the training split, where the step size and decay are chosen
# 1.0 read a code model's validation split in 6.3% fewer bits than 0.3 (its tuning slice chose
# it), and prose models' tuning slices chose 0.3 over it, as their splits did (bench/RESULTS.md)
LEARNING_RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
# 0.01 read all three of those validation splits in 1.6-2.6% more bits than 0, yet a 10,000-
# character tuning slice, too short to see what a steady pull back forgets, once chose it
DECAYS = (0.0, 0.001)
TUNING_READS = len(LEARNING_RATES) + len(DECAYS) - 1  # of the tuning slice, one memoised
MAX_GRAD_NORM = 1.0  # one unusual window must not throw the weights far


@dataclass(frozen=True)
class DynamicSettings:
    lr: float
    decay: float


@dataclass(frozen=True)
class DynamicResult:
    bits_per_char: float
    settings: DynamicSettings
    seconds: float  # reading the text
    tune_seconds: float  # choosing the settings

    def to_dict(self) -> dict[str, float]:
        return {"bits_per_char": self.bits_per_char, "lr": self.settings.lr,
                "decay": self.settings.decay, "seconds": self.seconds,
                "tune_seconds": self.tune_seconds}  # fmt: skip


def window_nats(
    model: CharRNN,
    ids: np.ndarray,
    settings: DynamicSettings,
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Summed nats of each window's targets (target j is ids[j + 1]), scored before the update
    on that window. `model` is left as it was: a copy adapts. `on_progress` hears the fraction
    read after each window."""
    device = torch.device(device)
    adapting = copy.deepcopy(model).to(device)
    adapting.eval()  # dropout off; the gradient still flows
    params: list[torch.Tensor] = list(adapting.parameters())
    trained = [p.detach().clone() for p in params]
    tokens = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)
    nats, state = [], None
    no_cudnn = torch.backends.cudnn.flags(enabled=False)  # cuDNN's backward needs train mode
    with no_cudnn:
        for start in range(0, len(ids) - 1, WINDOW):
            inputs = tokens[start : start + WINDOW][None]  # (1, T)
            targets = tokens[start + 1 : start + WINDOW + 1]
            inputs = inputs[:, : len(targets)]
            logits, new_state = adapting(inputs, state)
            loss = F.cross_entropy(logits[0].float(), targets, reduction="sum")
            nats.append(loss.item())  # scored: only now may this window teach the model
            adapting.zero_grad(set_to_none=True)
            (loss / len(targets)).backward()
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            with torch.no_grad():
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                torch._foreach_add_(params, grads, alpha=-settings.lr)
                if settings.decay:
                    torch._foreach_lerp_(params, trained, settings.decay)  # toward θ_trained
            state = detach_state(new_state)
            if on_progress is not None:
                on_progress(min(start + WINDOW, len(ids) - 1) / (len(ids) - 1))
    return np.asarray(nats, dtype=np.float64)


def choose_settings(
    model: CharRNN,
    tune_ids: np.ndarray,
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
) -> DynamicSettings:
    """The step size (with a small decay), then the decay at that step size, that read
    `tune_ids` in the fewest bits. `on_progress` hears the fraction of the TUNING_READS done."""
    costs: dict[DynamicSettings, float] = {}

    def cost(settings: DynamicSettings) -> float:
        if settings not in costs:  # the step size's winner is not read again for its decay
            done = len(costs) / TUNING_READS
            heard = _part(on_progress, done, done + 1 / TUNING_READS)
            costs[settings] = float(window_nats(model, tune_ids, settings, device, heard).sum())
        return costs[settings]

    lr = min(LEARNING_RATES, key=lambda lr: cost(DynamicSettings(lr, DECAYS[1])))
    decay = min(DECAYS, key=lambda decay: cost(DynamicSettings(lr, decay)))
    return DynamicSettings(lr, decay)


def dynamic_bits_per_char(
    model: CharRNN,
    ids: np.ndarray,
    tune_ids: np.ndarray,
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
) -> DynamicResult:
    """Choose the settings on `tune_ids` (training text), then read `ids` adapting.
    `on_progress` hears the fraction of both done, counted in characters read."""
    tune_ids = tune_ids[-TUNE_CHARS:]
    tuning = TUNING_READS * len(tune_ids) / (TUNING_READS * len(tune_ids) + len(ids))
    started = time.perf_counter()
    settings = choose_settings(model, tune_ids, device, _part(on_progress, 0.0, tuning))
    tuned = time.perf_counter()
    nats = window_nats(model, ids, settings, device, _part(on_progress, tuning, 1.0)).sum()
    bits = float(nats) / (len(ids) - 1) / math.log(2)
    return DynamicResult(bits, settings, time.perf_counter() - tuned, tuned - started)


def _part(
    on_progress: Callable[[float], None] | None, start: float, end: float
) -> Callable[[float], None] | None:
    """A callback for one part of the work, from `start` to `end` of the whole."""
    if on_progress is None:
        return None
    return lambda fraction: on_progress(start + (end - start) * fraction)


def evaluate_dynamic(
    loaded: LoadedModel,
    file: str | Path | None = None,
    *,
    tune_on: str | Path | None = None,
    encoding: str = "utf-8",
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
) -> DynamicResult:
    """Dynamic evaluation of a loaded model on a text file, or with no file on its own validation
    split. The settings are chosen on the end of the training split of `tune_on` (default: the
    corpus the model was trained on)."""
    ids, _, _ = ids_to_score(loaded, file, encoding)
    if tune_on is not None:
        tune_ids, _ = loaded.vocab.encode_known(read_corpus(tune_on, encoding))
    else:
        tune_ids = _training_tail(loaded)
    return dynamic_bits_per_char(loaded.model, ids, tune_ids, device, on_progress)


def _training_tail(loaded: LoadedModel) -> np.ndarray:
    """The last TUNE_CHARS of the model's training split (never its validation text)."""
    corpus = model_corpus(
        loaded, "dynamic evaluation chooses its step size on training text", "pass --tune-on FILE"
    )
    train_end = corpus.train_end(loaded.train_config.val_frac)
    tail = corpus.vocab.decode(corpus.ids[max(0, train_end - TUNE_CHARS) : train_end])
    return loaded.vocab.encode_known(tail)[0]
