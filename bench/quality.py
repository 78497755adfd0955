"""Bits/char on each corpus's validation split after each time budget: the defaults, and any
sweep of flags beside them.

    python bench/quality.py CORPUS... --budget 1m [--budget 2m ...] [--sweep "FLAGS" ...]
    python bench/quality.py data/tinyshakespeare.txt --budget 5m --sweep "--dropout 0.3"
    python bench/quality.py CORPUS --budget 2m --neighbours [--weight-drop 0.2]

Each run is `charnn train CORPUS --time-budget BUDGET [FLAGS]` in a temporary folder; the table
gives the corpus, its size, the budget, the flags (defaults: none), the steps taken, the passes
over the training split they made, what the plan chose (and, where the run's own speed changed
its regularisation, the passes it re-planned for), the last evaluation's validation
bits/char and best.pt's, which `charnn sample` and `charnn eval` load (a run planned with
patience stops a few evaluations after its best). Both are on the whole validation split,
except where it holds more than the run's --eval-chars: the run's evaluations scored that
sample of it, and this script scores best.pt on the whole split itself. With
--neighbours, each defaults run is followed by runs of the settings next to what its plan
chose: the next dropout up (DROPOUTS), the next width down and up (WIDTHS), the other β1
(0.5 and 0.9, the two the plan picks from), and with --weight-drop P, DropConnect P on the
planned model. Runs are made one after another: run
nothing else on the machine meanwhile. `charnn data get tinyshakespeare` fetches the classic
corpus.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from charnn.checkpoints.format import read_payload
from charnn.checkpoints.loading import load_checkpoint
from charnn.config.train import RunConfig
from charnn.evaluation.evaluator import evaluate
from charnn.text.corpus import load_corpus
from charnn.training.plan import BETA1_MANY_PASSES, WIDTHS

DROPOUTS = (0.0, 0.1, 0.2, 0.3, 0.5)
HEADER = "| corpus | size | budget | flags | steps | passes | plan | val bits/char | best |"


def run(corpus: str, budget: str, flags: str) -> tuple[str, dict]:
    """One training run: its table row, and the settings it trained with."""
    with tempfile.TemporaryDirectory() as root:
        command = [sys.executable, "-m", "charnn", "train", corpus, "--time-budget", budget,
                   "--checkpoint-dir", root, "--name", "run", "--quiet",
                   *shlex.split(flags)]  # fmt: skip
        subprocess.run(command, check=True)
        last = json.loads((Path(root) / "run" / "metrics.jsonl").read_text().splitlines()[-1])
        payload = read_payload(Path(root) / "run" / "last.pt")
        config, plan = payload["train_config"], payload.get("plan") or {}
        encoded = load_corpus(corpus)
        ids, train_chars = encoded.ids, encoded.train_end(config["val_frac"])
        best = last["best_val_bpc"]
        if 0 < config.get("eval_chars", 0) < len(ids) - train_chars - 1:  # scored a sample
            best = evaluate(load_checkpoint(Path(root) / "run" / "best.pt")).bits_per_char
    model = config["model"]
    passes = last["step"] * config["batch_size"] * config["seq_len"] / train_chars
    dropconnect = f"weight drop {model['weight_drop']}, " if model.get("weight_drop") else ""
    shape = (f"{model['layers']}x{model['hidden_size']}, dropout {model['dropout']}, "
             f"{dropconnect}wd {config['weight_decay']}, {config['precision']}")  # fmt: skip
    size = f"{len(ids) / 1e6:.2f}M"
    patience = f", patience {config['patience']}" if config.get("patience") else ""
    patience += f", β1 {config['beta1']}" if "beta1" in config else ""  # saved since --beta1
    chosen = "planned" if plan.get("chosen") else "fallbacks"
    again = plan.get("replanned") or {}
    if again.get("changed"):  # the run's own speed moved the plan's regularisation
        chosen += f"; re-planned for {again['passes']:.1f} passes"
    cells = [Path(corpus).name, size, budget, flags or "(defaults)", f"{last['step']:,}",
             f"{passes:.1f}", f"{shape}{patience} ({chosen})", f"{last['val_bpc']:.4f}",
             f"{best:.4f}"]  # fmt: skip
    return "| " + " | ".join(cells) + " |", config


def neighbours(config: dict, weight_drop: float | None) -> list[str]:
    """Flags for the settings next to a planned run's."""
    dropout, width = config["model"]["dropout"], config["model"]["hidden_size"]
    sweeps = [f"--dropout {d}" for d in DROPOUTS if d > dropout][:1]
    if width in WIDTHS:
        at = WIDTHS.index(width)
        sweeps += [f"--hidden-size {w}" for w in WIDTHS[max(at - 1, 0) : at + 2] if w != width]
    other_beta1 = {RunConfig.beta1: BETA1_MANY_PASSES, BETA1_MANY_PASSES: RunConfig.beta1}
    if config.get("beta1") in other_beta1:
        sweeps.append(f"--beta1 {other_beta1[config['beta1']]}")
    if weight_drop is not None:
        sweeps.append(f"--weight-drop {weight_drop}")
    return sweeps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="+", help="text files to train on")
    parser.add_argument("--budget", action="append", required=True, help="70s, 2m, 10m, ...")
    parser.add_argument("--sweep", action="append", default=[], help="flags to try beside the "
                        "defaults, one quoted string per run")  # fmt: skip
    parser.add_argument("--neighbours", action="store_true", help="after each defaults run, "
                        "the settings next to its plan")  # fmt: skip
    parser.add_argument("--weight-drop", type=float, help="with --neighbours: also DropConnect")
    args = parser.parse_args()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for corpus in args.corpora:
        for budget in args.budget:
            row, config = run(corpus, budget, "")
            print(row, flush=True)
            extra = neighbours(config, args.weight_drop) if args.neighbours else []
            for flags in [*args.sweep, *extra]:
                print(run(corpus, budget, flags)[0], flush=True)


if __name__ == "__main__":
    main()
