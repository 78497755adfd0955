"""`charnn eval --novelty` on a 100 MB corpus: seconds and peak memory.

    python bench/novelty_speed.py [--megabytes 100] [--sample-chars 2000 100000]

Writes a pseudo-English corpus of that size in a temporary folder (bench/big_corpus.py's text),
encodes it into a fresh cache once (timed apart), then for each sample size builds a sample,
half copied from the middle of the corpus and half random characters of its vocabulary, and
runs `charnn eval --novelty SAMPLE --corpus BIG --json` (default n: 5, 10, 20, 30, 40, 50) in a
child process, printing its wall time, peak RSS and the novel fractions. The peak RSS counts
the interpreter, its imports and the pages of the memory-mapped ids it has read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from big_corpus import write_corpus

from charnn.text.corpus import load_corpus


def run_measured(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of a child process."""
    code = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "out = subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True).stdout\n"
        "sys.stderr.write(f'{time.perf_counter() - start} '\n"
        "                 f'{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}')\n"
        "sys.stdout.write(out)"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    seconds, rss = done.stderr.split()[-2:]
    return float(seconds), int(rss) / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--sample-chars", type=int, nargs="+", default=[2000, 100_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "CHARNN_CACHE_DIR": str(Path(folder) / "cache")}
        os.environ.update(env)
        big = Path(folder) / "big.txt"
        write_corpus(big, args.megabytes)
        start = time.perf_counter()
        corpus = load_corpus(big)
        print(f"corpus: {len(corpus.ids):,} characters, encoded into the cache in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        rng = np.random.default_rng(1)
        for chars in args.sample_chars:
            middle = len(corpus.ids) // 2
            copied = corpus.vocab.decode(corpus.ids[middle : middle + chars // 2])
            noise = "".join(rng.choice(list(corpus.vocab.chars), size=chars - chars // 2))
            sample = Path(folder) / f"sample-{chars}.txt"
            sample.write_text(copied + noise, encoding="utf-8")
            command = [sys.executable, "-m", "charnn", "eval", "--novelty", str(sample),
                       "--corpus", str(big), "--json"]  # fmt: skip
            seconds, rss, out = run_measured(command, env)
            rows = [json.loads(line) for line in out.splitlines()]
            fractions = {r["n"]: round(r["novel_fraction"], 4) for r in rows}
            print(f"sample of {chars:,} characters: {seconds:.1f} s, peak RSS {rss:.0f} MiB; "
                  f"novel fraction by n: {fractions}")  # fmt: skip


if __name__ == "__main__":
    main()
