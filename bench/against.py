"""Today's defaults against another commit's, side by side: validation bits/char after the same
time budget, with no flags.

    git worktree add /tmp/base 3270cec
    python bench/against.py /tmp/base CORPUS... --budget 2m [--rounds 2]

For each corpus and budget, each round trains `charnn train CORPUS --time-budget BUDGET` once
with this checkout and once with the other (run from its source folder, on this environment's
packages), the order swapped from round to round so a machine that slows down over time hurts
neither side. Both sides' best.pt are then scored by this checkout's `evaluate` on the whole
validation split, the same characters for both (the script checks that both versions split the
corpus at the same place). Prints one markdown row per corpus and budget: the mean of each side,
their ratio (below 1: today's defaults are better), and every run's figure, width and steps.
Run nothing else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from charnn.checkpoints.format import read_payload
from charnn.checkpoints.loading import load_checkpoint
from charnn.evaluation.evaluator import evaluate
from charnn.text.corpus import load_corpus

HEADER = "| corpus | budget | base | now | ratio | runs: bits/char (width, steps), base; now |"
# where a checkout's own code ends the training split, for either layout of the package
TRAIN_END = """
import sys
try:
    from charnn.text.corpus import load_corpus
except ImportError:  # before the packages
    from charnn.cache import load_corpus
print(load_corpus(sys.argv[1]).train_end(0.1))
"""


def bits_per_char(corpus: str, budget: str, source: Path | None) -> tuple[float, str]:
    """One run's best.pt, scored on the whole validation split by this checkout, and what the
    run was: its width and steps."""
    env = dict(os.environ)
    if source is not None:  # its own code, and its own corpus cache (its format may differ)
        env["PYTHONPATH"] = str(source)
        env["XDG_CACHE_HOME"] = str(source / ".bench-cache")
    with tempfile.TemporaryDirectory() as root:
        command = [sys.executable, "-m", "charnn", "train", corpus, "--time-budget", budget,
                   "--checkpoint-dir", root, "--name", "run", "--quiet"]  # fmt: skip
        subprocess.run(command, check=True, env=env, cwd=root)
        best = load_checkpoint(Path(root) / "run" / "best.pt")
        last = read_payload(Path(root) / "run" / "last.pt", mmap=True)
        model = best.train_config.model
        shape = f"{model.layers}×{model.hidden_size}, {last['step']:,} steps"
        return evaluate(best).bits_per_char, shape


def train_end(corpus: str, source: Path | None) -> int:
    env = dict(os.environ)
    if source is not None:
        env.update(PYTHONPATH=str(source), XDG_CACHE_HOME=str(source / ".bench-cache"))
    command = [sys.executable, "-c", TRAIN_END, corpus]
    return int(subprocess.run(command, check=True, env=env, capture_output=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="a checkout of the commit to compare against")
    parser.add_argument("corpora", nargs="+")
    parser.add_argument("--budget", action="append", required=True, help="2m, 10m, ...")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for corpus in args.corpora:
        load_corpus(corpus)  # encoded once, before any run is timed
        if train_end(corpus, args.base) != train_end(corpus, None):
            sys.exit(f"{corpus}: the two versions split it at different places")
        for budget in args.budget:
            runs: dict[str, list[tuple[float, str]]] = {"base": [], "now": []}
            for round_ in range(args.rounds):
                sides = ["base", "now"] if round_ % 2 == 0 else ["now", "base"]
                for side in sides:
                    source = args.base if side == "base" else None
                    runs[side].append(bits_per_char(corpus, budget, source))
            base, now = (
                statistics.mean(bits for bits, _ in runs[side]) for side in ("base", "now")
            )
            figures = "; ".join(
                ", ".join(f"{bits:.4f} ({shape})" for bits, shape in runs[side])
                for side in ("base", "now")
            )
            cells = [Path(corpus).name, budget, f"{base:.4f}", f"{now:.4f}", f"{now / base:.4f}",
                     figures]  # fmt: skip
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
