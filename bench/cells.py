"""Training speed of every cell at one width (the default model's), against PyTorch's fused LSTM.

    python bench/cells.py [--steps 6] [--rounds 3] [--precision fp32|bf16] [--hidden-size 256]

For each cell it times forward + backward + clipping + AdamW on batches of the default shape
(B x T characters) and prints training chars/s (best of the rounds) and the ratio to the fused
`lstm` measured in the same run. The issue's target: peephole and cifg at least 0.5. With
--precision bf16 the forward pass and loss run under bf16 autocast, as training does then;
--hidden-size times another width (the default: the fallback model's).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from charnn.config.model import CELLS, ModelConfig, ModelSpec
from charnn.config.train import TrainConfig
from charnn.nn.model import CharRNN

VOCAB = 65


def chars_per_sec(model: CharRNN, batch: int, seq: int, steps: int, bf16: bool) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs = torch.randint(0, VOCAB, (batch, seq))
    targets = torch.randint(0, VOCAB, (batch, seq))
    state = None

    def step(state):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, state = model(inputs, state)
            loss = F.cross_entropy(logits.reshape(-1, VOCAB).float(), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()

    state = step(state)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        state = step(state)
    return batch * seq * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--hidden-size", type=int, default=ModelSpec.hidden_size)
    args = parser.parse_args()
    batch, seq = TrainConfig.batch_size, TrainConfig.seq_len
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, model "
        f"{ModelConfig.layers}x{args.hidden_size}, batch {batch} x {seq}, "
        f"{args.precision}, best of {args.rounds}"
    )
    results = {}
    for cell in CELLS:
        torch.manual_seed(0)
        model = CharRNN(ModelSpec(vocab_size=VOCAB, cell=cell, hidden_size=args.hidden_size))
        path = "fused" if cell in ("rnn", "rnn-relu", "lstm", "gru") else "hand-written"
        results[cell] = (
            path,
            max(
                chars_per_sec(model, batch, seq, args.steps, args.precision == "bf16")
                for _ in range(args.rounds)
            ),
        )
    reference = results["lstm"][1]
    print(f"{'cell':10} {'path':13} {'chars/s':>9} {'vs fused lstm':>14}")
    for cell, (path, speed) in results.items():
        print(f"{cell:10} {path:13} {speed:9,.0f} {speed / reference:14.2f}")


if __name__ == "__main__":
    main()
