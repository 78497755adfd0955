"""Generating text from a loaded model: `generate` yields pieces as they come, `sample` one
sample's text, `sample_batch` several samples' texts.

The prime is read in one pass of the model; then the NumPy stepper (nn.stepper) writes one
character per step, several times faster per character than calling PyTorch's fused modules
step by step. Several samples are generated together as one batch (generation.rows).
"""

from __future__ import annotations

from collections.abc import Iterator

from charnn.checkpoints.loading import LoadedModel, label_weights_for
from charnn.config.sample import SampleConfig
from charnn.generation.beam import beam_search
from charnn.generation.prime import check_prime, read_prime
from charnn.generation.rows import Generation, Rows
from charnn.nn.stepper import Stepper


def generate(loaded: LoadedModel, config: SampleConfig) -> Iterator[tuple[int, str]]:
    """Yield (sample index, text) pieces as they are generated, for all samples of the batch.

    Text that could be the start of a stop string is held back until it is known not to be;
    each sample ends after `config.length` generated characters or at a stop string. The prime
    is read on the model's own device, in eval mode; the model is left where and as it was.
    With `config.beam`, the one text beam search finds comes whole, at the end.
    """
    if config.beam is not None:
        text = beam_search(loaded, config)  # known only at the end
        if text:
            yield 0, text
        return
    prime = check_prime(config.prime, loaded.vocab, config.unknown)
    weights = label_weights_for(loaded.labels, config.label)
    stepper = Stepper(loaded.model)
    rows = Rows(stepper, loaded.vocab)
    primed = read_prime(loaded.model, loaded.vocab, prime, stepper, weights)
    rows.admit(Generation(config), primed)
    while rows.generations:
        for _, pieces in rows.tick():
            yield from pieces


def sample(loaded: LoadedModel, length: int = 500, **options: object) -> Iterator[str]:
    """Yield the text of one sample piece by piece (the prime is not included).

    Options are those of `SampleConfig`: temperature, top_k, top_p, prime, stop, include_stop,
    seed, unknown, repetition_penalty, beam, label.
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
