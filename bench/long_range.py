"""Can a cell carry one character across a gap? Recall accuracy per cell and gap length.

    python bench/long_range.py [--budget 15] [--gaps 2 10 30 60]

Each synthetic corpus is a run of records "K<G random letters>|K\\n": a key K (one of 8 capital
letters), G filler letters, a bar, then the same key again. Predicting the character after the
bar means remembering K across G characters; chance is 1 in 8. Every cell (1 layer of 64 units)
trains for the same wall-clock budget on each corpus, then the benchmark prints the fraction of
held-out records whose key the model predicts (greedy) right after the bar.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from charnn.config.model import CELLS, ModelConfig
from charnn.config.train import RunConfig, TrainConfig
from charnn.text.vocab import Vocab
from charnn.training.trainer import Trainer

KEYS = "ABCDEFGH"
FILLER = "abcdefghijklmnopqrstuvwxyz"


def corpus(gap: int, records: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(records):
        key = rng.choice(KEYS)
        lines.append(key + "".join(rng.choice(FILLER) for _ in range(gap)) + "|" + key + "\n")
    return "".join(lines)


@torch.no_grad()
def recall_accuracy(trainer: Trainer, text: str) -> float:
    model = trainer.model.eval()
    ids = torch.as_tensor(trainer.vocab.encode(text))[None]
    logits, _ = model(ids)
    predicted = logits[0].argmax(-1)  # predicted[t] is the guess for character t + 1
    positions = [t for t, char in enumerate(text[:-1]) if char == "|"]
    hits = sum(int(predicted[t]) == int(ids[0, t + 1]) for t in positions)
    return hits / len(positions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=15.0, help="seconds of training per run")
    parser.add_argument("--gaps", type=int, nargs="+", default=[2, 10, 30, 60])
    args = parser.parse_args()
    print(
        f"recall accuracy after {args.budget:g} s of training (1x64, batch 32 x 128); "
        f"chance {1 / len(KEYS):.3f}"
    )
    print(f"{'cell':10}" + "".join(f"{'G=' + str(g):>8}" for g in args.gaps))
    vocab = Vocab("".join(sorted(set(KEYS + FILLER + "|\n"))))
    for cell in CELLS:
        row = []
        for gap in args.gaps:
            train_text = corpus(gap, records=max(2000, 200_000 // (gap + 4)), seed=gap)
            held_out = corpus(gap, records=300, seed=1000 + gap)
            config = TrainConfig(
                model=ModelConfig(cell=cell, layers=1, hidden_size=64, embed_size=16),
                batch_size=32,
                seq_len=128,
                lr=1e-2,
                time_budget=args.budget,
                eval_every=10**9,
                device="cpu",
                seed=0,
            )
            ids = vocab.encode(train_text)
            trainer = Trainer(RunConfig.of(config), vocab, ids, np.asarray(ids[:2000]))
            trainer.run()
            row.append(recall_accuracy(trainer, held_out))
        print(f"{cell:10}" + "".join(f"{accuracy:8.3f}" for accuracy in row), flush=True)


if __name__ == "__main__":
    main()
