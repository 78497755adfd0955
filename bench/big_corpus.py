"""A 100 MB corpus: how long encoding takes, and how much memory training on it needs.

    python bench/big_corpus.py [--megabytes 100] [--keep]

Writes a pseudo-English file of that size (words, punctuation, newlines; 60-odd distinct
characters) in a temporary folder, then:
1. times the first `load_corpus` (chunked encoding into a fresh cache) and the second (a memory
   map of the cache); target: the first within 5 s for 100 MB;
2. runs `charnn train` on it for a few steps (the cache already filled) and on a 100 KB file with
   the same flags, and prints both peak RSS figures and the difference against the encoded size;
   target: the big run's peak within 1.5 x the encoded size plus what the small run needs (the
   interpreter, torch and the model).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = (
    "the of and to in that is was he for it with as his on be at by had not are but from or "
    "have an they which one you were her all she there would their we him been has when who will "
    "more no if out so said what up its about into than them can only other new some could time"
).split()
TRAIN_FLAGS = ["--max-steps", "30", "--eval-every", "1000000", "--val-frac", "0.001", "--quiet"]


def write_corpus(path: Path, megabytes: int) -> None:
    rng = np.random.default_rng(0)
    pieces = np.array([w + " " for w in WORDS] + [w + ", " for w in WORDS[:20]] + [".\n", "!\n"])
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        while written < megabytes * 1_000_000:
            block = "".join(rng.choice(pieces, size=200_000)).capitalize()
            out.write(block)
            written += len(block)


def peak_rss_mb(args: list[str], env: dict[str, str]) -> float:
    """Peak resident memory of a child process (ru_maxrss of the one child run here)."""
    code = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root_name:
        root = Path(root_name)
        os.environ["CHARNN_CACHE_DIR"] = str(root / "cache")
        from charnn.text.corpus import load_corpus

        big, small = root / "big.txt", root / "small.txt"
        write_corpus(big, args.megabytes)
        small.write_text(big.read_text(encoding="utf-8")[:100_000], encoding="utf-8")
        size_mb = big.stat().st_size / 1e6

        start = time.perf_counter()
        corpus = load_corpus(big)
        first = time.perf_counter() - start
        start = time.perf_counter()
        load_corpus(big)
        second = time.perf_counter() - start
        encoded_mb = corpus.ids.nbytes / 2**20
        print(f"corpus {size_mb:.1f} MB, {len(corpus.vocab)} characters, ids {corpus.ids.dtype}")
        print(f"encoding (first load): {first:.2f} s   (target <= 5 s)")
        print(f"cached (second load):  {second:.2f} s")

        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        command = [sys.executable, "-m", "charnn", "train"]
        ck = ["--checkpoint-dir", str(root / "ck")]
        baseline = peak_rss_mb([*command, str(small), *TRAIN_FLAGS, *ck, "--name", "s"], env)
        peak = peak_rss_mb([*command, str(big), *TRAIN_FLAGS, *ck, "--name", "b"], env)
        extra = peak - baseline
        print(f"peak RSS training, 100 KB corpus: {baseline:.0f} MiB (interpreter, torch, model)")
        print(f"peak RSS training, big corpus:    {peak:.0f} MiB")
        print(
            f"the big corpus's share: {extra:.0f} MiB = {extra / encoded_mb:.2f} x the encoded "
            f"size ({encoded_mb:.0f} MiB)   (target <= 1.5)"
        )


if __name__ == "__main__":
    main()
