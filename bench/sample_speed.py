"""Sampling speed: charnn's sampler against a naive loop that calls the fused module per character.

    python bench/sample_speed.py [--chars 3000]

For a 2x512 LSTM and for the default model (random weights: speed does not depend on them), it
prints characters per second of
  naive      nn.LSTM (via CharRNN.forward) called once per character, softmax, multinomial
  batch 1    charnn's sampler, one sample
  batch 32   charnn's sampler, --num-samples 32 (total characters of all samples)
and the ratios batch 1 / naive (target >= 5) and batch 32 / batch 1 (target >= 8), plus the
GFLOP/s of NumPy's matrix multiply at the batch-32 recurrent shape, and the most that 32 samples
could gain over one from the matrix products alone: a step's products (the model's own weight
matrices, as the stepper holds them) timed at 1 row and at 32 rows, 32 x t(1) / t(32). Every
other part of a step costs more per character at 32 rows than at 1, so the sampler's own
batch 32 / batch 1 stays below that ceiling.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from charnn.checkpoints.loading import LoadedModel
from charnn.config.model import ModelSpec
from charnn.config.sample import SampleConfig
from charnn.config.train import RunConfig
from charnn.generation.sampler import generate
from charnn.nn.model import CharRNN
from charnn.nn.stepper import Stepper
from charnn.text.vocab import Vocab

VOCAB = Vocab("".join(chr(c) for c in range(32, 97)))  # 65 characters, like tinyshakespeare


@torch.no_grad()
def naive_chars_per_sec(model: CharRNN, chars: int) -> float:
    generator = torch.Generator().manual_seed(0)
    ids, state = torch.tensor([[0]]), None
    start = time.perf_counter()
    for _ in range(chars):
        logits, state = model(ids, state)
        probs = torch.softmax(logits[0, -1], dim=-1)
        ids = torch.multinomial(probs, 1, generator=generator).view(1, 1)
        VOCAB.chars[int(ids)]
    return chars / (time.perf_counter() - start)


def charnn_chars_per_sec(loaded: LoadedModel, chars: int, num_samples: int) -> float:
    config = SampleConfig(length=chars, num_samples=num_samples, seed=0)
    start = time.perf_counter()
    total = sum(len(piece) for _, piece in generate(loaded, config))
    return total / (time.perf_counter() - start)


def gemm_gflops(rows: int, hidden: int, repeats: int = 500) -> float:
    """Throughput of (rows, H) @ (H, 4H) in float32, as one LSTM layer's recurrent step does."""
    a = np.random.default_rng(0).random((rows, hidden), dtype=np.float32)
    w = np.random.default_rng(1).random((hidden, 4 * hidden), dtype=np.float32)
    for _ in range(20):
        a @ w
    start = time.perf_counter()
    for _ in range(repeats):
        a @ w
    return 2 * rows * hidden * 4 * hidden * repeats / (time.perf_counter() - start) / 1e9


def matmul_ceiling(model: CharRNN, repeats: int = 300) -> float:
    """32 x (time of one step's matrix products at 1 row) / (the same at 32 rows)."""
    stepper = Stepper(model)
    weights = [stepper.layers[0][2]]  # layer 0: W_hh (its input projection is a table lookup)
    weights += [layer[4] for layer in stepper.layers[1:]]  # above it: [W_ih; W_hh]
    weights.append(stepper.decoder[0])
    rng = np.random.default_rng(0)
    seconds = {}
    for rows in (1, 32):
        products = [(rng.random((rows, w.shape[0]), dtype=np.float32), w) for w in weights]
        for _ in range(20):
            for x, w in products:
                x @ w
        start = time.perf_counter()
        for _ in range(repeats):
            for x, w in products:
                x @ w
        seconds[rows] = time.perf_counter() - start
    return 32 * seconds[1] / seconds[32]


def best_of(rounds: int, measure, *args) -> float:
    """The fastest of several rounds: on a shared machine, slower rounds measure the neighbours."""
    return max(measure(*args) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=3000, help="characters per sample")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.rounds}")
    print(
        f"{'model':12} {'naive':>8} {'batch 1':>9} {'batch 32':>9} {'b1/naive':>9} "
        f"{'b32/b1':>7} {'GEMM GFLOP/s, 32 rows':>22} {'matmul ceiling b32/b1':>22}"
    )
    for name, hidden in (("2x512 LSTM", 512), ("default", ModelSpec.hidden_size)):
        torch.manual_seed(0)
        model = CharRNN(ModelSpec(vocab_size=len(VOCAB), hidden_size=hidden)).eval()
        loaded = LoadedModel(model, VOCAB, Path("bench"), RunConfig(), 0)
        naive = best_of(args.rounds, naive_chars_per_sec, model, max(300, args.chars // 10))
        one = best_of(args.rounds, charnn_chars_per_sec, loaded, args.chars, 1)
        batch = best_of(args.rounds, charnn_chars_per_sec, loaded, args.chars // 4, 32)
        gflops = best_of(args.rounds, gemm_gflops, 32, hidden)
        ceiling = best_of(args.rounds, matmul_ceiling, model)
        print(
            f"{name:12} {naive:8,.0f} {one:9,.0f} {batch:9,.0f} {one / naive:9.1f} "
            f"{batch / one:7.1f} {gflops:22.0f} {ceiling:22.1f}"
        )


if __name__ == "__main__":
    main()
