"""Bits/char on each corpus's validation split after each time budget: the defaults, and any
sweep of flags beside them.

    python bench/quality.py CORPUS... --budget 1m [--budget 2m ...] [--sweep "FLAGS" ...]
    python bench/quality.py data/tinyshakespeare.txt --budget 5m --sweep "--dropout 0.3"

Each run is `charnn train CORPUS --time-budget BUDGET [FLAGS]` in a temporary folder; the table
gives the corpus, its size, the budget, the flags (defaults: none), the steps taken, the passes
over the training split they made, what the plan chose and the final validation bits/char (the
whole validation split). Runs are made one after another: run nothing else on the machine
meanwhile. `charnn data get tinyshakespeare` fetches the classic corpus.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from charnn.cache import load_corpus
from charnn.checkpoint import read_payload

HEADER = "| corpus | size | budget | flags | steps | passes | plan | val bits/char |"


def run(corpus: str, budget: str, flags: str) -> str:
    with tempfile.TemporaryDirectory() as root:
        command = [sys.executable, "-m", "charnn", "train", corpus, "--time-budget", budget,
                   "--checkpoint-dir", root, "--name", "run", "--quiet",
                   *shlex.split(flags)]  # fmt: skip
        subprocess.run(command, check=True)
        last = json.loads((Path(root) / "run" / "metrics.jsonl").read_text().splitlines()[-1])
        payload = read_payload(Path(root) / "run" / "last.pt")
    config, plan = payload["train_config"], payload.get("plan") or {}
    model = config["model"]
    ids = load_corpus(corpus).ids
    train_chars = len(ids) - int(len(ids) * config["val_frac"])
    passes = last["step"] * config["batch_size"] * config["seq_len"] / train_chars
    shape = (f"{model['layers']}x{model['hidden_size']}, dropout {model['dropout']}, wd "
             f"{config['weight_decay']}, {config['precision']}")  # fmt: skip
    size = f"{len(ids) / 1e6:.2f}M"
    chosen = "planned" if plan.get("chosen") else "fallbacks"
    cells = [Path(corpus).name, size, budget, flags or "(defaults)", f"{last['step']:,}",
             f"{passes:.1f}", f"{shape} ({chosen})", f"{last['val_bpc']:.4f}"]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="+", help="text files to train on")
    parser.add_argument("--budget", action="append", required=True, help="70s, 2m, 10m, ...")
    parser.add_argument("--sweep", action="append", default=[], help="flags to try beside the "
                        "defaults, one quoted string per run")  # fmt: skip
    args = parser.parse_args()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for corpus in args.corpora:
        for budget in args.budget:
            for flags in ["", *args.sweep]:
                print(run(corpus, budget, flags), flush=True)


if __name__ == "__main__":
    main()
