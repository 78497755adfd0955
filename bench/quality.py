"""Bits/char on a corpus's validation split after a time budget, with default flags.

    python bench/quality.py CORPUS BUDGET [-- extra flags]
    python bench/quality.py data/tinyshakespeare.txt 5m -- --hidden-size 512

Runs `charnn train CORPUS --time-budget BUDGET` (every other flag at its default unless given
after --) in a temporary folder and prints the final validation bits/char (the whole last 10%
of the text), the steps taken and the wall time. Run nothing else on the machine meanwhile.
`charnn data get tinyshakespeare` fetches the corpus bench/RESULTS.md measures on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", help="the text to train on, e.g. data/tinyshakespeare.txt")
    parser.add_argument("budget", help="e.g. 70s, 5m, 10m")
    parser.add_argument("extra", nargs="*", help="more charnn train flags, after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        command = [sys.executable, "-m", "charnn", "train", args.corpus, "--time-budget",
                   args.budget, "--checkpoint-dir", root, "--name", "run", "--quiet",
                   *args.extra]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        lines = (Path(root) / "run" / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1])
    flags = " ".join(args.extra) or "(defaults)"
    print(
        f"budget {args.budget} {flags}: val {last['val_bpc']:.4f} bits/char, "
        f"{last['step']} steps, {wall:.0f} s wall"
    )


if __name__ == "__main__":
    main()
