"""Evaluation's peak memory on a wide vocabulary, with its bound and without it.

    python bench/eval_memory.py [--chars 3400000] [--vocab 1058] [--hidden-size 256]

Writes a CJK-like text in a temporary folder (`--vocab` distinct characters from U+4E00 on,
Zipf-distributed, with punctuation and line ends: as wide as a Japanese novel's), then:
1. in two fresh processes, scores the validation split the way training evaluates it (the last
   10%, 250,000 characters in 256 pieces) with a random 2x`--hidden-size` LSTM: once in passes
   bounded by evaluation.scoring.PASS_BYTES (charnn's), once in unbounded passes (all rows by
   up to 2,048 characters, as before the bound); prints each one's peak RSS, time and bits/char,
   and the ratio of the peaks. The bits/char must agree to 1e-9.
2. runs `charnn train TEXT --max-steps 3 --hidden-size N`, whose one evaluation is the same
   reading, and prints its peak RSS.
Target: the bounded peak well under the unbounded one, and the same bits/char.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MEASURE = """
import json, math, resource, sys, time
import torch
from charnn.config.model import ModelSpec
from charnn.evaluation.scoring import PASS_BYTES, stream_nats
from charnn.nn.model import CharRNN
from charnn.text.corpus import load_corpus, split_train_val
path, hidden, bounded = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "bounded"
corpus = load_corpus(path)
_, val = split_train_val(corpus.ids, 0.1)
torch.manual_seed(0)
model = CharRNN(ModelSpec(vocab_size=len(corpus.vocab), hidden_size=hidden)).eval()
started = time.perf_counter()
nats = stream_nats(model, val, sample=250_000, budget=PASS_BYTES if bounded else 1 << 60)
seconds = time.perf_counter() - started
scored = 250_000 // 256 * 256
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": seconds, "bpc": float(nats.sum()) / scored / math.log(2)}))
"""


def write_corpus(path: Path, chars: int, vocab: int) -> None:
    rng = np.random.default_rng(0)
    points = np.arange(0x4E00, 0x4E00 + vocab - 3)
    weights = 1.0 / np.arange(1, len(points) + 1)  # Zipf: a few common, many rare
    text = rng.choice(points, size=chars, p=weights / weights.sum())
    text[rng.random(chars) < 0.05] = ord("、")
    text[rng.random(chars) < 0.03] = ord("。")
    text[rng.random(chars) < 0.02] = ord("\n")
    text[: len(points)] = points  # every character at least once
    path.write_text(text.astype("<u4").tobytes().decode("utf-32-le"), encoding="utf-8")


def measure(path: Path, hidden: int, mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(hidden), mode],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(proc.stdout)


def train_peak(path: Path, hidden: int, folder: Path) -> float:
    """The peak RSS of `charnn train`, measured by a parent of its own (a process's children's
    peak is the largest of all of them)."""
    command = [sys.executable, "-m", "charnn", "train", str(path), "--max-steps", "3", "--quiet",
               "--hidden-size", str(hidden), "--checkpoint-dir", str(folder)]  # fmt: skip
    parent = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", parent, *command], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return float(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=3_400_000)
    parser.add_argument("--vocab", type=int, default=1058)
    parser.add_argument("--hidden-size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wide.txt"
        write_corpus(path, args.chars, args.vocab)
        print(f"corpus: {args.chars:,} characters, {args.vocab:,} distinct")
        modes = ("unbounded", "bounded")
        results = {mode: measure(path, args.hidden_size, mode) for mode in modes}
        for mode, found in results.items():
            print(f"{mode:9}  peak {found['peak_mb']:7,.0f} MB  {found['seconds']:6.1f} s  "
                  f"{found['bpc']:.9f} bits/char")  # fmt: skip
        ratio = results["bounded"]["peak_mb"] / results["unbounded"]["peak_mb"]
        same = abs(results["bounded"]["bpc"] - results["unbounded"]["bpc"]) < 1e-9
        print(f"peak ratio bounded/unbounded: {ratio:.3f}; same bits/char: {same}")
        started = time.perf_counter()
        peak = train_peak(path, args.hidden_size, Path(tmp) / "ck")
        print(f"charnn train --max-steps 3 --hidden-size {args.hidden_size}: peak {peak:,.0f} MB, "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
