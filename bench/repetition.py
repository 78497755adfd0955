"""Does the repetition penalty stop greedy loops? And what does beam search write?

    python bench/repetition.py CHECKPOINT [--length 2000] [--penalties 1 1.1 1.2 1.5]

For each penalty, CHECKPOINT writes `--length` characters greedily (no prime: as after a
newline); then beam search of width 4, without and with the largest penalty. For each text it
prints, as a Markdown table row: the longest substring that occurs twice in it, its bits per
character under the model (how much likelier than the model's own average the text is), the
share of its 20- and 50-character substrings found nowhere in the model's training split, and
the seconds generation took.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from charnn.checkpoints.loading import LoadedModel, load_checkpoint
from charnn.evaluation.novelty import novelty, training_ids
from charnn.generation.sampler import sample


def longest_repeat(text: str) -> int:
    """The length of the longest substring occurring twice (overlaps allowed)."""
    low, high = 0, len(text) - 1
    while low < high:
        n = (low + high + 1) // 2
        grams = [text[i : i + n] for i in range(len(text) - n + 1)]
        low, high = (n, high) if len(set(grams)) < len(grams) else (low, n - 1)
    return low


def bits_per_char(loaded: LoadedModel, text: str) -> float:
    """The text's bits per character under the model, read after a newline."""
    ids = torch.as_tensor(loaded.vocab.encode("\n" + text))[None]
    with torch.no_grad():
        logits, _ = loaded.model.eval()(ids)
    logp = torch.log_softmax(logits[0, :-1].double(), dim=-1)
    return -float(logp.gather(1, ids[0, 1:, None]).mean()) / math.log(2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--penalties", type=float, nargs="+", default=[1.0, 1.1, 1.2, 1.5])
    args = parser.parse_args()
    loaded = load_checkpoint(args.checkpoint)
    corpus_ids, corpus_vocab = training_ids(loaded)
    runs: list[tuple[str, dict]] = [
        (f"greedy, penalty {p:g}", {"temperature": 0, "repetition_penalty": p})
        for p in args.penalties
    ]
    top = max(args.penalties)
    runs += [("beam 4", {"beam": 4}), (f"beam 4, penalty {top:g}",
                                       {"beam": 4, "repetition_penalty": top})]  # fmt: skip
    print(f"{loaded.path}: step {loaded.step}, {len(corpus_ids):,} training characters")
    print("| generation | longest repeat | bits/char | novel 20-grams | novel 50-grams | s |")
    print("|---|---|---|---|---|---|")
    for name, options in runs:
        start = time.perf_counter()
        text = "".join(sample(loaded, args.length, **options))
        seconds = time.perf_counter() - start
        found = {r.n: r.fraction for r in novelty(text, corpus_ids, corpus_vocab, (20, 50))}
        print(f"| {name} | {longest_repeat(text)} | {bits_per_char(loaded, text):.3f} | "
              f"{found[20]:.3f} | {found[50]:.3f} | {seconds:.1f} |")  # fmt: skip
        print(f"<!-- {name}: {text[:160]!r} -->")


if __name__ == "__main__":
    main()
