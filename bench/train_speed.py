"""charnn's training loop against a bare PyTorch loop at the same shapes: what the loop costs.

    python bench/train_speed.py [--rounds 3] [--precision bf16]

For the default model (2x256 LSTM) and a 2x512 LSTM, at the default batch (32 x 32), it times
1. bare: forward + cross-entropy + backward + AdamW step (same rate) on the same text cut into
   the same streams, the state carried and detached (the least a truncated-BPTT loop does), and
2. charnn: `charnn.train` on a corpus file, with everything it does around that (windows from
   the memory-mapped corpus, clipping, NaN checks, progress events to the log display, a
   checkpoint every 100 steps); evaluation is left out (--eval-every beyond the run).
Rounds alternate between the two (the machine's speed drifts); each prints its best round in
chars/s, and the ratio charnn / bare (target >= 0.95). Both use charnn's AdamW (fused where the
device has the kernel); a third loop, bare with PyTorch's default AdamW, shows what fusing buys.
--precision bf16 runs all three under bf16 autocast, as a time budget plans on a CPU that
multiplies bf16 in hardware. Run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import charnn
from charnn.cli.display import TrainDisplay
from charnn.config.train import RunConfig
from charnn.nn.devices import autocast
from charnn.nn.model import CharRNN
from charnn.training.events import Progress
from charnn.training.optim import adamw

SHAPES = {"default 2x256": 256, "2x512": 512}
BATCH, SEQ = charnn.TrainConfig.batch_size, charnn.TrainConfig.seq_len
VOCAB = 62  # the corpus below: letters, space, punctuation, newline


def bare(hidden: int, steps: int, ids: np.ndarray, precision: str, fused: bool = True) -> float:
    """The least a truncated-BPTT loop can do, on the same text, rate and optimizer (with
    fused=False: PyTorch's default AdamW)."""
    torch.manual_seed(0)
    model = CharRNN(charnn.ModelSpec(vocab_size=VOCAB, hidden_size=hidden))
    lr, cpu = charnn.TrainConfig.lr, torch.device("cpu")
    optimizer = (
        adamw(model.parameters(), lr, 0.0, cpu, RunConfig.beta1)
        if fused
        else torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    )
    length = (len(ids) - 1) // BATCH
    inputs = torch.from_numpy(ids[: BATCH * length].astype(np.int64)).view(BATCH, length)
    targets = torch.from_numpy(ids[1 : BATCH * length + 1].astype(np.int64)).view(BATCH, length)
    state = None
    for step in range(steps + 2):  # two warm-up steps, not timed
        if step == 2:
            start = time.perf_counter()
        window = slice(step * SEQ, (step + 1) * SEQ)
        with autocast(cpu, precision):
            logits, state = model(inputs[:, window], state)
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets[:, window].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state = tuple(s.detach() for s in state)
    return steps * BATCH * SEQ / (time.perf_counter() - start)


def with_charnn(hidden: int, steps: int, corpus: Path, root: Path, precision: str) -> float:
    progress: list[Progress] = []
    display = TrainDisplay(quiet=True)  # the display's work, without its final log line

    def on_event(event: object) -> None:
        display.on_event(event)  # type: ignore[arg-type]
        if isinstance(event, Progress):
            progress.append(event)

    config = charnn.TrainConfig(
        corpus=str(corpus),
        model=charnn.ModelConfig(hidden_size=hidden),
        max_steps=steps + 2,
        eval_every=10**9,  # evaluation is not loop overhead: leave it out
        checkpoint_dir=str(root),
        device="cpu",
        precision=precision,
    )
    charnn.train(config, on_event)
    first, last = progress[0], progress[-1]  # from the first report on: startup left out
    return (last.step - first.step) * BATCH * SEQ / (last.elapsed - first.elapsed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH} x {SEQ}, "
        f"{args.precision}"
    )
    with tempfile.TemporaryDirectory() as root_name:
        root = Path(root_name)
        corpus = root / "corpus.txt"
        letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\n-"))
        corpus.write_text("".join(np.random.default_rng(0).choice(letters, 3_000_000)))
        text = corpus.read_text()
        ids = charnn.Vocab.from_text(text).encode(text)
        for name, hidden in SHAPES.items():
            steps = 200 if hidden == 256 else 120
            bare_best = charnn_best = unfused_best = 0.0
            for _ in range(args.rounds):
                bare_best = max(bare_best, bare(hidden, steps, ids, args.precision))
                charnn_best = max(
                    charnn_best, with_charnn(hidden, steps, corpus, root, args.precision)
                )
                unfused_best = max(
                    unfused_best, bare(hidden, steps, ids, args.precision, fused=False)
                )
            print(
                f"{name}: bare {bare_best:,.0f} chars/s, charnn {charnn_best:,.0f} chars/s, "
                f"ratio {charnn_best / bare_best:.3f} (target >= 0.95); bare with PyTorch's "
                f"default AdamW {unfused_best:,.0f} chars/s (fused / default "
                f"{bare_best / unfused_best:.3f})"
            )


if __name__ == "__main__":
    main()
