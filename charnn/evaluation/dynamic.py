"""Dynamic evaluation (Krause et al. 2018): a model that keeps learning the text it reads.

The text is read once, as one stream, in windows. Each window is first scored with the weights
as they are, and only then does one gradient step on it move them, each weight by its own scale
(Krause et al.'s RMS normalisation with a global prior):

    θ ← θ − lr·∇L(window) / (rms + mean(rms)) + min(1, decay·rms / mean(rms))·(θ_trained − θ)

where rms is each weight's root mean square gradient over a slice of training text, at the
trained weights (unclipped: the gradients' own scale; each step's gradient is clipped to a norm
of MAX_GRAD_NORM). A weight whose gradient is usually small (a rare character's embedding, say)
takes larger steps than plain SGD would give it, and one that moves much is pulled back harder;
mean(rms) beside it caps the steps of weights the slice barely moved. So the model adapts to the
text's recent style (a play's names, a program's identifiers) while the decay pulls it back
toward what it learned in training. No character is ever scored by weights that have seen it.
The scales, step size and decay come from a slice of the training split, never from the text
reported.
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

from charnn.checkpoints.loading import LoadedModel
from charnn.errors import SettingError
from charnn.evaluation.evaluator import ids_to_score, label_id, model_corpus, score_labels
from charnn.nn.model import CharRNN, detach_state
from charnn.text.reading import read_text

WINDOW = 64  # characters scored between two updates
# The end of the training split, where the scales and settings are set: 30,000 characters read
# the splits of six models in fewer bits than 10,000 did (docs/experiments.md#dynamic-evaluation)
TUNE_CHARS = 30_000
MIN_TUNE_CHARS = 1_000  # fewer leave the scales and the choice to a handful of windows
# Steps in units of each weight's own gradient scale: plain SGD steps read the validation splits
# of six models in more bits than these, and a 0.01 decay lost on every split where tried
# (docs/experiments.md#dynamic-evaluation)
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DECAYS = (0.0, 0.001)
# of the tuning slice: one for the gradient scales, then each setting once
TUNING_READS = 1 + len(LEARNING_RATES) + len(DECAYS) - 1
MAX_GRAD_NORM = 1.0  # one unusual window must not throw the weights far


@dataclass(frozen=True)
class DynamicSettings:
    lr: float
    decay: float


@dataclass(frozen=True)
class StepScale:
    """Per weight: what its gradient is divided by before a step, and how hard it is pulled back
    (times the decay)."""

    divisors: list[torch.Tensor]  # rms + mean(rms), one per parameter
    pulls: list[torch.Tensor]  # rms / mean(rms)


@dataclass(frozen=True)
class DynamicResult:
    bits_per_char: float
    settings: DynamicSettings
    seconds: float  # reading the text
    tune_seconds: float  # measuring the scales and choosing the settings

    def to_dict(self) -> dict[str, float]:
        return {"bits_per_char": self.bits_per_char, "lr": self.settings.lr,
                "decay": self.settings.decay, "seconds": self.seconds,
                "tune_seconds": self.tune_seconds}  # fmt: skip


def window_nats(
    model: CharRNN,
    ids: np.ndarray,
    settings: DynamicSettings,
    scale: StepScale,
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Summed nats of each window's targets (target j is ids[j + 1]), scored before the update
    on that window. `model` is left as it was: a copy adapts. `on_progress` hears the fraction
    read after each window. A conditioned model reads each character in its label (`labels`,
    aligned with `ids`; None: "any")."""
    device = torch.device(device)
    trained = [p.detach().to(device, copy=True) for p in model.parameters()]
    dtypes = [p.dtype for p in model.parameters()]
    divisors = [d.to(device, dtype) for d, dtype in zip(scale.divisors, dtypes, strict=True)]
    pulls = [(settings.decay * w).clamp(max=1.0).to(device, dtype)
             for w, dtype in zip(scale.pulls, dtypes, strict=True)]  # fmt: skip

    def step(params: list[torch.Tensor]) -> None:
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        torch._foreach_addcdiv_(params, _grads(params), divisors, value=-settings.lr)
        if settings.decay:  # toward θ_trained, each weight by its own pull
            torch._foreach_lerp_(params, trained, pulls)

    return _read(model, ids, device, step, on_progress, labels)


def step_scale(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
    labels: np.ndarray | None = None,
) -> StepScale:
    """The step scales from each weight's root mean square gradient over the windows of `ids`
    (training text, each character in its label), read at the trained weights: nothing is
    updated."""
    squares = [torch.zeros_like(p, device=device, dtype=torch.float32) for p in model.parameters()]

    def add_squares(params: list[torch.Tensor]) -> None:
        grads = [g.float() for g in _grads(params)]
        torch._foreach_addcmul_(squares, grads, grads)

    windows = len(_read(model, ids, torch.device(device), add_squares, on_progress, labels))
    rms = torch._foreach_sqrt(torch._foreach_div(squares, windows))
    mean = torch.cat([r.flatten() for r in rms]).mean().clamp_min(torch.finfo(torch.float32).tiny)
    return StepScale(list(torch._foreach_add(rms, mean)), list(torch._foreach_div(rms, mean)))


def _read(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device,
    after_window: Callable[[list[torch.Tensor]], None],
    on_progress: Callable[[float], None] | None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Read `ids` (each character in its label of `labels`; None: "any") as one stream of
    WINDOW-character windows with a copy of `model`: score each window, backpropagate its mean
    loss, then hand the copy's parameters (their gradients set) to `after_window`. Returns each
    window's summed nats."""
    reading = copy.deepcopy(model).to(device)
    reading.eval()  # dropout off; the gradient still flows
    params: list[torch.Tensor] = list(reading.parameters())
    tokens = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)
    tags = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64)).to(device)
    nats, state = [], None
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's backward needs train mode
        for start in range(0, len(ids) - 1, WINDOW):
            targets = tokens[start + 1 : start + WINDOW + 1]
            inputs = tokens[start : start + len(targets)][None]  # (1, T)
            read_as = None if tags is None else tags[start : start + len(targets)][None]
            logits, new_state = reading(inputs, state, read_as)
            loss = F.cross_entropy(logits[0].float(), targets, reduction="sum")
            nats.append(loss.item())  # scored: only now may this window teach the model
            reading.zero_grad(set_to_none=True)
            (loss / len(targets)).backward()
            with torch.no_grad():
                after_window(params)
            state = detach_state(new_state)
            if on_progress is not None:
                on_progress(min(start + WINDOW, len(ids) - 1) / (len(ids) - 1))
    return np.asarray(nats, dtype=np.float64)


def _grads(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]


def choose_settings(
    model: CharRNN,
    tune_ids: np.ndarray,
    scale: StepScale,
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
    labels: np.ndarray | None = None,
) -> DynamicSettings:
    """The step size (with a small decay), then the decay at that step size, that read
    `tune_ids` in the fewest bits. `on_progress` hears the fraction of the settings read."""
    costs: dict[DynamicSettings, float] = {}
    reads = TUNING_READS - 1  # the scales took the first

    def cost(settings: DynamicSettings) -> float:
        if settings not in costs:  # the step size's winner is not read again for its decay
            done = len(costs) / reads
            heard = _part(on_progress, done, done + 1 / reads)
            nats = window_nats(model, tune_ids, settings, scale, device, heard, labels)
            costs[settings] = float(nats.sum())
        return costs[settings]

    lr = min(LEARNING_RATES, key=lambda lr: cost(DynamicSettings(lr, DECAYS[1])))
    decay = min(DECAYS, key=lambda decay: cost(DynamicSettings(lr, decay)))
    assert len(costs) == reads, "TUNING_READS counts one setting the two sweeps share"
    return DynamicSettings(lr, decay)


def dynamic_bits_per_char(
    model: CharRNN,
    ids: np.ndarray,
    tune_ids: np.ndarray,
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
    labels: np.ndarray | None = None,
    tune_labels: np.ndarray | None = None,
) -> DynamicResult:
    """Measure the step scales and choose the settings on `tune_ids` (training text), then read
    `ids` adapting. `on_progress` hears the fraction of all three done, counted in characters.
    A conditioned model reads each character in its label (`labels` and `tune_labels`, aligned
    with `ids` and `tune_ids`; None: "any")."""
    tune_ids = tune_ids[-TUNE_CHARS:]
    tune_labels = None if tune_labels is None else tune_labels[-TUNE_CHARS:]
    if len(tune_ids) < MIN_TUNE_CHARS:
        raise SettingError(
            f"dynamic evaluation sets its steps on at least {MIN_TUNE_CHARS:,} characters of "
            f"training text, and has {len(tune_ids):,} that the model knows: pass a longer "
            "{tune_on} FILE"
        )
    total = TUNING_READS * len(tune_ids) + len(ids)
    scaled, tuned_share = len(tune_ids) / total, TUNING_READS * len(tune_ids) / total
    started = time.perf_counter()
    scale = step_scale(model, tune_ids, device, _part(on_progress, 0.0, scaled), tune_labels)
    settings = choose_settings(
        model, tune_ids, scale, device, _part(on_progress, scaled, tuned_share), tune_labels
    )
    tuned = time.perf_counter()
    nats = window_nats(model, ids, settings, scale, device, _part(on_progress, tuned_share, 1.0),
                       labels)  # fmt: skip
    bits = float(nats.sum()) / (len(ids) - 1) / math.log(2)
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
    label: str | None = None,
) -> DynamicResult:
    """Dynamic evaluation of a loaded model on a text file, or with no file on its own validation
    split. The settings are chosen on the end of the training split of `tune_on` (default: the
    corpus the model was trained on). A conditioned model reads as `evaluate` does: in `label`
    (default: a file and `tune_on` in "any", the model's own corpus each character in its own)."""
    ids, _, _ = ids_to_score(loaded, file, encoding)
    labels = score_labels(loaded, file, label, len(ids))
    if tune_on is not None:
        tune_ids, _ = loaded.vocab.encode_known(read_text(tune_on, encoding))
        tune_labels = None if label is None else np.full(len(tune_ids), label_id(loaded, label))
    else:
        tune_ids, tune_labels = _training_tail(loaded, label)
    return dynamic_bits_per_char(loaded.model, ids, tune_ids, device, on_progress, labels,
                                 tune_labels)  # fmt: skip


def _training_tail(loaded: LoadedModel, label: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The last TUNE_CHARS of the model's training split (never its validation text), and a
    labelled corpus's label of each character (or `label`'s id for every one)."""
    corpus = model_corpus(
        loaded, "dynamic evaluation sets its steps on training text", "pass {tune_on} FILE"
    )
    train_end = corpus.train_end(loaded.train_config.val_frac)
    piece = np.asarray(corpus.ids[max(0, train_end - TUNE_CHARS) : train_end])
    known = np.array([char in loaded.vocab for char in corpus.vocab.chars])[piece]
    ids = loaded.vocab.encode(corpus.vocab.decode(piece[known]))  # the characters it knows
    if label is not None and loaded.labels:
        return ids, np.full(len(ids), label_id(loaded, label))
    if corpus.label_ids is None or not loaded.labels:
        return ids, None
    tags = np.asarray(corpus.label_ids[max(0, train_end - TUNE_CHARS) : train_end])
    return ids, tags[known].astype(np.int64)
