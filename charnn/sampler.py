"""Generating text: read the prime in one pass, then one character per step from the state."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from charnn.checkpoint import LoadedModel
from charnn.errors import CharnnError
from charnn.vocab import describe_chars


@torch.no_grad()
def sample(
    loaded: LoadedModel,
    length: int = 500,
    *,
    temperature: float = 1.0,
    prime: str = "",
    seed: int | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[str]:
    """Yield `length` generated characters one at a time (the prime itself is not yielded).

    temperature 0 always takes the most likely character; higher values flatten the
    distribution, lower ones sharpen it. Without a prime the model starts as if after a newline.
    """
    if temperature < 0:
        raise CharnnError("--temperature must be 0 (greedy) or positive")
    model, vocab = loaded.model, loaded.vocab
    missing = vocab.unknown(prime)
    if missing:
        raise CharnnError(
            f"the prime has characters the model never saw: {describe_chars(missing)}"
        )
    model.to(device).eval()
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())

    start = prime or ("\n" if "\n" in vocab else vocab.chars[0])
    ids = torch.as_tensor(vocab.encode(start), device=device)[None]  # (1, len(prime))
    logits, state = model(ids)  # the whole prime in one pass
    for _ in range(length):
        last = logits[0, -1].float()  # (vocab,)
        if temperature == 0:
            next_id = last.argmax()
        else:
            probs = torch.softmax(last / temperature, dim=-1)
            next_id = torch.multinomial(probs, 1, generator=generator)[0]
        yield vocab.chars[int(next_id)]
        logits, state = model(next_id.view(1, 1), state)
