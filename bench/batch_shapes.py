"""Training speed by batch shape: what a step of B rows x T characters costs here.

    python bench/batch_shapes.py [--hidden-size 256] [--rounds 3]

For each shape it times forward + cross-entropy + backward + AdamW steps of the default model
on random characters (bf16 autocast where the CPU multiplies bf16 in hardware, as a time budget
plans; else fp32), best of the rounds, and prints chars/s and the ratio against the default
shape (TrainConfig's batch_size x seq_len), measured in the same run. On a CPU where the ratio
stays near 1, shorter steps buy more updates at no cost in characters. Run nothing else
meanwhile.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from charnn.config import ModelConfig, TrainConfig
from charnn.devices import autocast
from charnn.model import CharRNN
from charnn.trainer import native_bf16_on

SHAPES = ((32, 64), (32, 32), (32, 16), (16, 64), (16, 32), (64, 32), (64, 16), (128, 32))
VOCAB = 65
STEPS = 8  # timed, after two warm-up steps


def chars_per_sec(hidden: int, batch: int, seq_len: int, precision: str) -> float:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=VOCAB, hidden_size=hidden))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(VOCAB, (batch, seq_len + 1))
    for step in range(2 + STEPS):
        if step == 2:
            start = time.perf_counter()
        with autocast(torch.device("cpu"), precision):
            logits, _ = model(ids[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return STEPS * batch * seq_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    precision = "bf16" if native_bf16_on(torch.device("cpu")) else "fp32"
    default = (TrainConfig.batch_size, TrainConfig.seq_len)
    shapes = [default, *(s for s in SHAPES if s != default)]
    best = dict.fromkeys(shapes, 0.0)
    for _ in range(args.rounds):  # rounds alternate over the shapes: the machine's speed drifts
        for batch, seq_len in shapes:
            speed = chars_per_sec(args.hidden_size, batch, seq_len, precision)
            best[batch, seq_len] = max(best[batch, seq_len], speed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 2x{args.hidden_size}, "
          f"{precision}")  # fmt: skip
    for (batch, seq_len), speed in best.items():
        mark = " (default)" if (batch, seq_len) == default else ""
        print(f"{batch:>4} x {seq_len:<3} {speed:>9,.0f} chars/s  ratio {speed / best[default]:.2f}"
              f"{mark}")  # fmt: skip


if __name__ == "__main__":
    main()
