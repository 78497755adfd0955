"""One model in three voices: a labelled model against an unconditioned one, trained alike.

    python bench/labels.py [--budget 2m] [--chars 300000] [--samples 6]

Builds a corpus of three labels at equal share from text this machine holds (bench's
make_corpora sources): Python code (the standard library), English prose (pydoc's reference
topics) and Russian (the system's gettext catalogs); each label has --chars characters to train
on and a tenth of that held out, in files of its own. Then, with the same --budget:
1. trains `charnn train train/ --label-from folder` (conditioned) and `charnn train train/`
   (unconditioned), both with every other setting at its default;
2. reads each label's held-out text with the unconditioned model, and with the conditioned one in
   its own label, in "any" and in each other label (bits/char; overall: by characters);
3. samples --samples texts of 500 characters in each label, and reads each in every label: the
   label that reads a sample in the fewest bits is the one it sounds like (a confusion table).
Targets: conditioned overall no worse than unconditioned; own label < wrong labels; the
confusion table's diagonal dominant.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="2m")
    parser.add_argument("--chars", type=int, default=300_000)
    parser.add_argument("--samples", type=int, default=6)
    args = parser.parse_args()
    budget = parse_duration(args.budget)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_corpus(root, args.chars)
        models = {}
        for name, labelled in (("conditioned", "folder"), ("unconditioned", None)):
            started = time.perf_counter()
            result = charnn.train(charnn.TrainConfig(
                corpus=str(root / "train"), label_from=labelled, time_budget=budget,
                checkpoint_dir=str(root / "ck"), name=name))  # fmt: skip
            models[name] = charnn.load(result.run_dir)
            print(
                f"{name}: {result.steps:,} steps in {time.perf_counter() - started:.0f} s, "
                f"{models[name].model.config.layers}x{models[name].model.config.hidden_size}"
            )
        conditioned, plain = models["conditioned"], models["unconditioned"]
        names = conditioned.labels
        held = {label: (root / "held" / f"{label}.txt").read_text("utf-8") for label in names}
        print("\nheld-out bits/char | unconditioned | own label | any | each other label")
        totals = {"unconditioned": 0.0, "own": 0.0, "chars": 0}
        for k, label in enumerate(names, start=1):
            text = held[label]
            own, anyone = bits(conditioned, text, k), bits(conditioned, text, 0)
            others = {o: bits(conditioned, text, j) for j, o in enumerate(names, 1) if j != k}
            unconditioned = bits(plain, text)
            shown = ", ".join(f"{o} {b:.4f}" for o, b in others.items())
            print(f"{label:8} {len(text):>8,} | {unconditioned:.4f} | {own:.4f} | {anyone:.4f} | "
                  f"{shown}")  # fmt: skip
            totals["unconditioned"] += unconditioned * len(text)
            totals["own"] += own * len(text)
            totals["chars"] += len(text)
        chars = totals["chars"]
        print(
            f"overall            | {totals['unconditioned'] / chars:.4f} | "
            f"{totals['own'] / chars:.4f} | (ratio {totals['own'] / totals['unconditioned']:.4f})"
        )
        print(
            f"\nconfusion: {args.samples} samples of 500 characters in each label; the label "
            "that reads each in the fewest bits"
        )
        print("written in \\ sounds like | " + " | ".join(names))
        for k, label in enumerate(names, start=1):
            config = charnn.SampleConfig(length=500, label=label, seed=k,
                                         num_samples=args.samples)  # fmt: skip
            counts = dict.fromkeys(names, 0)
            for text in sample_batch(conditioned, config):
                scores = [bits(conditioned, text, j) for j in range(1, len(names) + 1)]
                counts[names[int(np.argmin(scores))]] += 1
            print(f"{label:8} | " + " | ".join(str(counts[n]) for n in names))


if __name__ == "__main__":
    main()
