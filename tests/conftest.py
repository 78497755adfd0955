"""Shared helpers: small generated corpora and a way to run the real `charnn` command."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from charnn.checkpoints.loading import LoadedModel
from charnn.config.model import ModelConfig
from charnn.config.train import RunConfig, TrainConfig
from charnn.text.vocab import Vocab
from charnn.training.trainer import Trainer

# Under pytest-xdist each worker, and every `charnn` it starts, computes on one thread: with
# OpenMP's default two threads each, two workers on a 2-core machine took 557 s, not 417 s.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

WORDS = (
    "the cell state runs like a conveyor belt through the whole chain with only minor linear "
    "interactions gates let information through optionally forget input output hello world "
    "said Romeo to Juliet what light through yonder window breaks"
).split()


def make_text(n_chars: int, seed: int = 0) -> str:
    """Pseudo-English lines of words, quotes and punctuation, deterministic for a seed."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < n_chars:
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
        if rng.random() < 0.3:
            words[0] = f'"{words[0]}'
            words[-1] = f'{words[-1]}"'
        line = " ".join(words).capitalize() + rng.choice(".,;!?")
        lines.append(line)
        size += len(line) + 1
    return ("\n".join(lines) + "\n")[:n_chars]


@pytest.fixture(scope="session", autouse=True)
def corpus_cache(tmp_path_factory):
    """Encoded corpora go to a fresh folder, not the developer's ~/.cache (subprocesses too)."""
    folder = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder / "charnn"
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


CHARNN = [sys.executable, "-m", "charnn"]  # the real command, in this interpreter
TINY = ["--hidden-size", "32", "--embed-size", "8", "--layers", "1", "--quiet"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One small trained run (root, corpus, run folder), shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("run")
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(20_000), encoding="utf-8")
    proc = run_charnn(
        "train",
        str(corpus),
        "--max-steps",
        "30",
        "--eval-every",
        "15",
        "--checkpoint-dir",
        str(root / "ck"),
        *TINY,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # training prints nothing on stdout
    return root, corpus, root / "ck" / "corpus-lstm"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(20_000), encoding="utf-8")
    return path


def run_charnn(*args: str, cwd=None, input=None, timeout: float = 300, env=None, columns=120):
    """Run `python -m charnn ARGS` as a real subprocess; returns the CompletedProcess."""
    if env is None:  # a developer's own CHARNN_* settings must not change the tests
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
    env = {**env, "PYTHONUNBUFFERED": "1", "COLUMNS": str(columns)}
    return subprocess.run(
        [*CHARNN, *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def make_trainer(text: str, run_dir: Path | None = None, **overrides) -> Trainer:
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    model = overrides.pop("model", ModelConfig(hidden_size=32, embed_size=8, layers=1))
    settings = {"lr": 1e-2, "max_steps": 300, "eval_every": 10_000, "device": "cpu", "seed": 0}
    config = RunConfig.of(TrainConfig(model=model, **{**settings, **overrides}))
    return Trainer(config, vocab, ids, ids, run_dir=run_dir)


def as_loaded(trainer: Trainer) -> LoadedModel:
    return LoadedModel(trainer.model, trainer.vocab, Path("memory"), trainer.config, trainer.step)


def needs(program: str) -> str:
    """The program's path; skips the test without it, except in CI, where it must be there."""
    path = shutil.which(program)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is missing, and CI must run this test")
        pytest.skip(f"{program} is not installed")
    return path


def page_dom(page: Path, profile: Path) -> str:
    """The DOM of an exported page once it has generated (#autogenerate), from headless Chromium."""
    dom = subprocess.run(
        [
            needs("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}",
            "--virtual-time-budget=60000", "--dump-dom", page.as_uri() + "#autogenerate",
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout
