"""One model in three voices: a labelled model against an unconditioned one, trained alike.

    python bench/labels.py [--budget 2m] [--chars 300000] [--samples 6] [--rounds 1]

Builds a corpus of three labels at equal share from text this machine holds (bench's
make_corpora sources): Python code (the standard library), English prose (pydoc's reference
topics) and Russian (the system's gettext catalogs); each label has --chars characters to train
on and a tenth of that held out, in files of its own. Then, with the same --budget:
1. trains `charnn train train/ --label-from folder` (conditioned) and `charnn train train/`
   (unconditioned), both with every other setting at its default, on the same characters, in an
   order swapped from round to round;
2. reads each label's held-out text with the unconditioned model, and with the conditioned one in
   its own label, in "any" and in each other label (bits/char; overall: by characters);
3. samples --samples texts of 500 characters in each label, and reads each in every label: the
   label that reads a sample in the fewest bits is the one it sounds like (a confusion table).
With --rounds N, it does all three N times and prints the mean of the overall ratios. Targets:
conditioned overall no worse than unconditioned; own label < wrong labels; the confusion
table's diagonal dominant. Run nothing else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_corpora import russian_messages, stdlib_code  # noqa: E402

import charnn  # noqa: E402
from charnn.config.files import parse_duration  # noqa: E402
from charnn.evaluation.scoring import total_nats  # noqa: E402
from charnn.generation.sampler import sample_batch  # noqa: E402
from charnn.text.builtin import pydoc_text  # noqa: E402

LABELS = {"code": stdlib_code, "prose": pydoc_text, "russian": russian_messages}
# Both runs hold out every tenth file of train/ for their own evaluations, the conditioned one
# counting each label's files: with 30 parts a label (300,000 characters) the same files, so both
# train on the same characters, in the same order
PART_CHARS = 10_000


def write_corpus(root: Path, chars: int) -> None:
    """train/LABEL/part-N.txt (PART_CHARS each) and held/LABEL.txt."""
    for label, source in LABELS.items():
        text = source()
        if len(text) < chars * 1.1:
            raise SystemExit(f"only {len(text):,} characters of {label} here; lower --chars")
        (root / "train" / label).mkdir(parents=True)
        for i, start in enumerate(range(0, chars, PART_CHARS)):
            piece = text[start : min(start + PART_CHARS, chars)]
            (root / "train" / label / f"part-{i:03d}.txt").write_text(piece, encoding="utf-8")
        (root / "held").mkdir(exist_ok=True)
        (root / "held" / f"{label}.txt").write_text(text[chars : chars + chars // 10], "utf-8")


def bits(model, text: str, label: int | None = None) -> float:
    ids, _ = model.vocab.encode_known(text)
    labels = None if label is None else np.full(len(ids), label)
    return total_nats(model.model, ids, labels=labels) / (len(ids) - 1) / np.log(2)


def train_both(root: Path, budget: float, round_: int) -> dict:
    """The conditioned and the unconditioned model, trained alike in the order of this round
    (swapped from round to round, so a machine that slows down hurts neither)."""
    models = {}
    order = (("conditioned", "folder"), ("unconditioned", None))
    for name, labelled in order if round_ % 2 == 0 else order[::-1]:
        started = time.perf_counter()
        result = charnn.train(charnn.TrainConfig(
            corpus=str(root / "train"), label_from=labelled, time_budget=budget,
            checkpoint_dir=str(root / "ck"), name=f"{name}-{round_}"))  # fmt: skip
        models[name] = charnn.load(result.run_dir)
        spec = models[name].model.config
        print(f"{name}: {result.steps:,} steps in {time.perf_counter() - started:.0f} s, "
              f"{spec.layers}x{spec.hidden_size}")  # fmt: skip
    return models


def held_out(root: Path, conditioned, plain) -> float:
    """Prints each label's held-out bits/char; returns conditioned / unconditioned overall."""
    names = conditioned.labels
    print("\nheld-out bits/char | unconditioned | own label | any | each other label")
    totals = {"unconditioned": 0.0, "own": 0.0, "chars": 0}
    for k, label in enumerate(names, start=1):
        text = (root / "held" / f"{label}.txt").read_text("utf-8")
        own, anyone = bits(conditioned, text, k), bits(conditioned, text, 0)
        others = {o: bits(conditioned, text, j) for j, o in enumerate(names, 1) if j != k}
        unconditioned = bits(plain, text)
        shown = ", ".join(f"{o} {b:.4f}" for o, b in others.items())
        print(f"{label:8} {len(text):>8,} | {unconditioned:.4f} | {own:.4f} | {anyone:.4f} | "
              f"{shown}")  # fmt: skip
        totals["unconditioned"] += unconditioned * len(text)
        totals["own"] += own * len(text)
        totals["chars"] += len(text)
    overall = {side: totals[side] / totals["chars"] for side in ("unconditioned", "own")}
    ratio = overall["own"] / overall["unconditioned"]
    print(f"overall            | {overall['unconditioned']:.4f} | {overall['own']:.4f} | "
          f"(ratio {ratio:.4f})")  # fmt: skip
    return ratio


def confusion(conditioned, samples: int) -> None:
    """Samples in each label, each read in every label: the label that reads it in the fewest
    bits is the one it sounds like."""
    names = conditioned.labels
    print(f"\nconfusion: {samples} samples of 500 characters in each label; the label "
          "that reads each in the fewest bits")  # fmt: skip
    print("written in \\ sounds like | " + " | ".join(names))
    for k, label in enumerate(names, start=1):
        config = charnn.SampleConfig(length=500, label=label, seed=k, num_samples=samples)
        counts = dict.fromkeys(names, 0)
        for text in sample_batch(conditioned, config):
            scores = [bits(conditioned, text, j) for j in range(1, len(names) + 1)]
            counts[names[int(np.argmin(scores))]] += 1
        print(f"{label:8} | " + " | ".join(str(counts[n]) for n in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="2m")
    parser.add_argument("--chars", type=int, default=300_000)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    budget = parse_duration(args.budget)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_corpus(root, args.chars)
        ratios = []
        for round_ in range(args.rounds):
            print(f"\n## round {round_ + 1}")
            models = train_both(root, budget, round_)
            ratios.append(held_out(root, models["conditioned"], models["unconditioned"]))
            confusion(models["conditioned"], args.samples)
        if len(ratios) > 1:
            shown = ", ".join(f"{r:.4f}" for r in ratios)
            print(f"\nconditioned / unconditioned overall: {shown}; mean {np.mean(ratios):.4f}")


if __name__ == "__main__":
    main()
