"""Generating text: read the prime in one pass, then one character per step from the state.

Sampling runs on the CPU with the NumPy stepper (`charnn.nn.stepper`), which is several times
faster per character than calling PyTorch's fused modules step by step. Several samples are
generated together as one batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from charnn.checkpoints.format import LoadedModel
from charnn.errors import CharnnError
from charnn.nn.stepper import Stepper
from charnn.text.vocab import describe_chars


@dataclass(frozen=True)
class SampleConfig:
    """How to sample. `length` 0 means no limit (until a stop string, or forever)."""

    length: int = 500
    temperature: float = 1.0  # 0: always the most likely character
    top_k: int | None = None  # keep only the k most likely characters
    top_p: float | None = None  # keep the smallest set whose probability reaches p (nucleus)
    prime: str = ""
    stop: tuple[str, ...] = ()  # a sample ends when one of these appears
    include_stop: bool = False  # keep the stop string at the end of the sample
    num_samples: int = 1
    seed: int | None = None
    unknown: str = "error"  # prime characters outside the vocabulary: "error" or "skip"
    repetition_penalty: float = (
        1.0  # above 1 discounts copying recent text (charnn.generation.penalty)
    )
    beam: int | None = (
        None  # beam search of this width for the likeliest text (charnn.generation.beam)
    )

    def __post_init__(self) -> None:
        if self.length < 0:
            raise CharnnError("--length must be 0 (no limit) or positive")
        if self.temperature < 0:
            raise CharnnError("--temperature must be 0 (greedy) or positive")
        if self.top_k is not None and self.top_k < 1:
            raise CharnnError("--top-k must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharnnError("--top-p must be in (0, 1]")
        if self.num_samples < 1:
            raise CharnnError("--num-samples must be at least 1")
        if any(not s for s in self.stop):
            raise CharnnError("--stop strings must not be empty")
        if self.unknown not in ("error", "skip"):
            raise CharnnError("--unknown must be 'error' or 'skip'")
        if self.repetition_penalty < 1:
            raise CharnnError("--repetition-penalty must be at least 1 (1: no penalty)")
        if self.beam is not None:
            self._check_beam(self.beam)

    def _check_beam(self, beam: int) -> None:
        if beam < 1:
            raise CharnnError("--beam must be at least 1")
        if self.temperature != 1 or self.top_k is not None or self.top_p is not None:
            raise CharnnError("--beam searches for the likeliest text and draws nothing: "
                              "leave out --temperature, --greedy, --top-k and --top-p")  # fmt: skip
        if self.num_samples > 1:
            raise CharnnError("--beam finds one text: leave out --num-samples")
        if self.length == 0:
            raise CharnnError("--beam needs a --length above 0")


def choose(logits: np.ndarray, config: SampleConfig, rng: np.random.Generator) -> np.ndarray:
    """Next character ids (B,) from logits (B, vocab) by temperature, top-k and top-p."""
    if config.temperature == 0:
        return logits.argmax(axis=1)
    scores = logits.astype(np.float64)
    if config.temperature != 1:
        scores /= config.temperature
    if config.top_k is not None and config.top_k < scores.shape[1]:
        kth = np.partition(scores, -config.top_k, axis=1)[:, -config.top_k, None]
        scores[scores < kth] = -np.inf
    if config.top_p is not None and config.top_p < 1:
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        order = np.argsort(-probs, axis=1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=1)
        before = np.cumsum(sorted_probs, axis=1) - sorted_probs  # mass of the likelier ones
        drop = np.zeros_like(probs, dtype=bool)
        np.put_along_axis(drop, order, before >= config.top_p, axis=1)  # the first always stays
        scores[drop] = -np.inf
    # the Gumbel-max trick: argmax(scores + G), G ~ Gumbel(0, 1) independent per character, is
    # a draw from softmax(scores), with no normalising (a few NumPy calls per step)
    return (scores + rng.gumbel(size=scores.shape)).argmax(axis=1)


class StopFilter:
    """Holds back text that might be the start of a stop string, and notices a complete one."""

    def __init__(self, stops: tuple[str, ...], include_stop: bool) -> None:
        self.stops = stops
        self.include_stop = include_stop
        self.pending = ""
        self.stopped: str | None = None

    def feed(self, char: str) -> str:
        """Take one generated character; return the text that is now safe to print."""
        if not self.stops:
            return char
        self.pending += char
        for stop in self.stops:
            if self.pending.endswith(stop):
                self.stopped = stop
                out = self.pending if self.include_stop else self.pending[: -len(stop)]
                self.pending = ""
                return out
        held = max(
            (n for s in self.stops for n in range(1, len(s)) if self.pending.endswith(s[:n])),
            default=0,
        )
        safe = len(self.pending) - held
        out, self.pending = self.pending[:safe], self.pending[safe:]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def prepare_prime(prime: str, loaded: LoadedModel, unknown: str) -> str:
    missing = loaded.vocab.unknown(prime)
    if missing and unknown == "error":
        raise CharnnError(
            f"the prime has characters the model never saw: {describe_chars(missing)}; "
            "remove them or pass --unknown skip"
        )
    return "".join(c for c in prime if c in loaded.vocab) if missing else prime


def read_prime(
    loaded: LoadedModel, config: SampleConfig, rows: int
) -> tuple[Stepper, list, np.ndarray]:
    """Read the prime in one pass: a stepper, its state for `rows` copies and their next
    logits (rows, vocab). The prime is read on the model's own device, in eval mode; the model
    is left where and as it was."""
    model, vocab = loaded.model, loaded.vocab
    prime = prepare_prime(config.prime, loaded, config.unknown)
    start = prime or ("\n" if "\n" in vocab else vocab.chars[0])  # no prime: as after a newline
    device = next(model.parameters()).device
    was_training = model.training
    try:
        with torch.no_grad():  # only here: the steps that follow are NumPy
            prime_ids = torch.as_tensor(vocab.encode(start), device=device)[None]
            logits, torch_state = model.eval()(prime_ids)  # one pass
    finally:
        model.train(was_training)
    stepper = Stepper(model)
    state = stepper.state_from_torch(torch_state, rows)
    return stepper, state, np.repeat(logits[0, -1:].float().cpu().numpy(), rows, axis=0)


def generate(loaded: LoadedModel, config: SampleConfig) -> Iterator[tuple[int, str]]:
    """Yield (sample index, text) pieces as they are generated, for all samples of the batch.

    Text that could be the start of a stop string is held back until it is known not to be;
    each sample ends after `config.length` generated characters or at a stop string. The prime
    is read on the model's own device, in eval mode; the model is left where and as it was.
    With `config.beam`, the one text beam search finds comes whole, at the end.
    """
    if config.beam is not None:
        from charnn.generation.beam import beam_search

        text = beam_search(loaded, config)  # known only at the end
        if text:
            yield 0, text
        return
    vocab = loaded.vocab
    rng = np.random.default_rng(config.seed)
    n = config.num_samples
    stepper, state, logits = read_prime(loaded, config, n)
    penalty = None
    if config.repetition_penalty != 1:  # 1 is no penalty: not even its arithmetic
        from charnn.generation.penalty import RepetitionPenalty

        penalty = RepetitionPenalty(config.repetition_penalty, n)

    filters = [StopFilter(config.stop, config.include_stop) for _ in range(n)]
    active = list(range(n))
    produced = 0
    while active:
        if penalty is not None:
            logits = penalty.adjust(logits)
        ids = choose(logits, config, rng)
        if penalty is not None:
            penalty.append(ids)
        chars = [vocab.chars[i] for i in ids.tolist()]
        produced += 1
        still_active = []
        for i in active:
            stop_filter = filters[i]
            piece = stop_filter.feed(chars[i])
            if stop_filter.stopped is None:
                if produced == config.length:
                    piece += stop_filter.flush()
                else:
                    still_active.append(i)
            if piece:
                yield i, piece
        active = still_active
        if active:
            logits, state = stepper.step(ids, state)


def sample(loaded: LoadedModel, length: int = 500, **options: object) -> Iterator[str]:
    """Yield the text of one sample piece by piece (the prime is not included).

    Options are those of `SampleConfig`: temperature, top_k, top_p, prime, stop, include_stop,
    seed, unknown, repetition_penalty, beam.
    """
    config = SampleConfig(length=length, num_samples=1, **options)  # type: ignore[arg-type]
    for _, piece in generate(loaded, config):
        yield piece


def sample_batch(loaded: LoadedModel, config: SampleConfig) -> list[str]:
    """Generate `config.num_samples` samples together and return their texts (without prime)."""
    pieces: list[list[str]] = [[] for _ in range(config.num_samples)]
    for i, piece in generate(loaded, config):
        pieces[i].append(piece)
    return ["".join(p) for p in pieces]
