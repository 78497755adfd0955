"""Training speed by batch shape: what a step of B rows x T characters costs here.

    python bench/batch_shapes.py [--hidden-size 256] [--rounds 3]

For each shape it times the default model's training steps on random characters as a time
budget's plan does (training.calibrate: forward, cross-entropy, backward and AdamW, in bf16 where
the CPU multiplies it in hardware, else fp32), best of the rounds, and prints chars/s and the
ratio against the default
shape (TrainConfig's batch_size x seq_len), measured in the same run. On a CPU where the ratio
stays near 1, shorter steps buy more updates at no cost in characters. Run nothing else
meanwhile.
"""

from __future__ import annotations

import argparse

import torch

from charnn.config.model import ModelConfig
from charnn.config.train import TrainConfig
from charnn.training.calibrate import calibrate
from charnn.training.plan import Facts
from charnn.training.trainer import native_bf16_on

SHAPES = ((32, 64), (32, 32), (32, 16), (16, 64), (16, 32), (64, 32), (64, 16), (128, 32))
VOCAB = 65


def chars_per_sec(hidden: int, batch: int, seq_len: int, facts: Facts) -> float:
    config = TrainConfig(model=ModelConfig(hidden_size=hidden), batch_size=batch, seq_len=seq_len)
    return calibrate(config, facts, VOCAB, torch.device("cpu")).widths[hidden].chars_per_sec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    facts = Facts(native_bf16=native_bf16_on(torch.device("cpu"), "lstm"))
    default = (TrainConfig.batch_size, TrainConfig.seq_len)
    shapes = [default, *(s for s in SHAPES if s != default)]
    best = dict.fromkeys(shapes, 0.0)
    for _ in range(args.rounds):  # rounds alternate over the shapes: the machine's speed drifts
        for batch, seq_len in shapes:
            speed = chars_per_sec(args.hidden_size, batch, seq_len, facts)
            best[batch, seq_len] = max(best[batch, seq_len], speed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 2x{args.hidden_size}, "
          f"{'bf16' if facts.native_bf16 else 'fp32'}")  # fmt: skip
    for (batch, seq_len), speed in best.items():
        mark = " (default)" if (batch, seq_len) == default else ""
        print(f"{batch:>4} x {seq_len:<3} {speed:>9,.0f} chars/s  ratio {speed / best[default]:.2f}"
              f"{mark}")  # fmt: skip


if __name__ == "__main__":
    main()
