"""Sampling: selection rules, stop strings, batches, determinism, and the CLI in pipes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from charnn.checkpoints.loading import LoadedModel
from charnn.config.model import CELLS, ModelSpec
from charnn.config.sample import SampleConfig
from charnn.config.train import RunConfig
from charnn.generation.choose import choose
from charnn.generation.rows import StopFilter
from charnn.generation.sampler import sample, sample_batch
from charnn.nn.model import CharRNN
from charnn.nn.stepper import Stepper
from charnn.text.vocab import Vocab

from conftest import CHARNN, run_charnn

VOCAB = Vocab("\n .abcdefghijklmnopqrstuvwxyz")


def random_model(cell: str = "lstm", seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    config = ModelSpec(vocab_size=len(VOCAB), cell=cell, hidden_size=24, embed_size=8)
    return LoadedModel(CharRNN(config).eval(), VOCAB, Path("memory"), RunConfig(), 0)


def text(loaded, length=200, **options) -> str:
    return "".join(sample(loaded, length, **options))


@pytest.mark.parametrize("cell", CELLS)
def test_stepper_matches_the_model(cell):
    """Stepping one character at a time gives the model's own logits (fused or hand-written)."""
    loaded = random_model(cell)
    model = loaded.model
    ids = torch.randint(0, len(VOCAB), (3, 12))
    with torch.no_grad():
        expected, _ = model(ids)
        _, state = model(ids[:, :1])
    stepper = Stepper(model)
    state_np = stepper.state_from_torch(state)
    for t in range(1, 12):
        logits, state_np = stepper.step(ids[:, t].numpy(), state_np)
        assert np.allclose(logits, expected[:, t].numpy(), atol=1e-5)


def test_same_seed_same_text_and_different_seeds_differ():
    loaded = random_model()
    first, other = text(loaded, seed=3), text(loaded, seed=4)
    assert first != other
    assert text(loaded, seed=3) == first  # from the seed alone, whatever ran in between


def test_top_k_1_and_tiny_top_p_equal_greedy():
    loaded = random_model()
    greedy = text(loaded, temperature=0, prime="ab")
    assert text(loaded, top_k=1, seed=1, prime="ab") == greedy
    assert text(loaded, top_p=1e-6, seed=2, prime="ab") == greedy


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    rng = np.random.default_rng(0)

    def noise() -> np.ndarray:
        return rng.gumbel(size=logits.shape)

    picks = {int(choose(logits, SampleConfig(top_p=0.6), noise)[0]) for _ in range(500)}
    assert picks == {0, 1}  # 0.5 alone is short of 0.6; 0.5 + 0.3 reaches it
    picks = {int(choose(logits, SampleConfig(top_k=3), noise)[0]) for _ in range(500)}
    assert picks == {0, 1, 2}


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_draws_follow_the_softmax_at_the_temperature(temperature):
    """Frequencies over many draws match softmax(logits / temperature) within sampling error."""
    logits = np.array([[2.0, 1.0, 0.0, -1.0, -3.0]] * 4000)
    rng = np.random.default_rng(5)
    config = SampleConfig(temperature=temperature)
    draws = np.concatenate([choose(logits, config, lambda: rng.gumbel(size=logits.shape))
                            for _ in range(10)])  # fmt: skip
    counts = np.bincount(draws, minlength=5)
    expected = np.exp(logits[0] / temperature)
    expected *= len(draws) / expected.sum()
    chi_square = ((counts - expected) ** 2 / expected).sum()
    assert chi_square < 18.5  # the 0.1% critical value for 4 degrees of freedom


def test_stop_strings_end_the_sample():
    loaded = random_model()
    full = text(loaded, 300, temperature=0)
    stop = full[100:103]
    cut = full.index(stop)
    assert text(loaded, 300, temperature=0, stop=(stop,)) == full[:cut]
    assert text(loaded, 300, temperature=0, stop=(stop,), include_stop=True) == full[: cut + 3]


def test_stop_filter_holds_back_only_possible_prefixes():
    stop_filter = StopFilter(("END",), include_stop=False)
    assert [stop_filter.feed(c) for c in "aEbE"] == ["a", "", "Eb", ""]
    assert stop_filter.feed("N") == "" and stop_filter.feed("D") == ""
    assert stop_filter.stopped == "END"


def test_batch_samples_are_independent_and_reproducible():
    loaded = random_model()
    config = SampleConfig(length=80, num_samples=4, seed=9)
    texts = sample_batch(loaded, config)
    assert len(texts) == 4 and all(len(t) == 80 for t in texts)
    assert len(set(texts)) == 4
    assert sample_batch(loaded, config) == texts


# ---------------------------------------------------------------- the CLI


def test_jsonl_shape(trained):
    _, _, run = trained
    proc = run_charnn(
        "sample",
        str(run),
        "-n",
        "40",
        "-N",
        "3",
        "--seed",
        "5",
        "--format",
        "jsonl",
        "--prime",
        "Th",
        "--top-k",
        "5",
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2]
    for r in records:
        assert set(r) == {
            "index",
            "text",
            "prime",
            "checkpoint",
            "temperature",
            "top_k",
            "top_p",
            "seed",
        }
        assert len(r["text"]) == 40 and r["prime"] == "Th" and r["seed"] == 5
        assert r["top_k"] == 5 and r["top_p"] is None


def test_text_batches_use_the_separator(trained):
    _, _, run = trained
    proc = run_charnn(
        "sample",
        str(run),
        "-n",
        "30",
        "-N",
        "3",
        "--seed",
        "1",
        "--separator",
        r"\n@@\n",
        "--no-echo-prime",
        "--prime",
        "The",
    )
    assert proc.returncode == 0, proc.stderr
    parts = proc.stdout.split("\n@@\n")
    assert len(parts) == 3 and all(len(p) == 30 for p in parts)


def test_prime_from_stdin(trained):
    _, _, run = trained
    piped = run_charnn(
        "sample", str(run), "--prime-file", "-", "-n", "30", "--seed", "2", input="Romeo said"
    )
    given = run_charnn("sample", str(run), "--prime", "Romeo said", "-n", "30", "--seed", "2")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == given.stdout and piped.stdout.startswith("Romeo said")


def test_a_missing_or_blank_prime_file_is_named_as_one(trained, tmp_path):
    _, _, run = trained
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n", encoding="utf-8")
    for path, said in (
        (tmp_path / "none.txt", "prime file not found"),
        (blank, "only whitespace: a prime file"),
    ):
        proc = run_charnn("sample", str(run), "--prime-file", str(path), "-n", "5")
        assert proc.returncode == 1 and said in proc.stderr, proc.stderr


def test_stop_through_the_cli(trained):
    _, _, run = trained
    full = run_charnn("sample", str(run), "-n", "300", "--greedy", "--no-echo-prime").stdout
    stop = full[150:152]
    cut = run_charnn(
        "sample", str(run), "-n", "300", "--greedy", "--no-echo-prime", "--stop", stop
    ).stdout
    kept = run_charnn(
        "sample",
        str(run),
        "-n",
        "300",
        "--greedy",
        "--no-echo-prime",
        "--stop",
        stop,
        "--include-stop",
    ).stdout
    assert cut == full[: full.index(stop)] and kept == cut + stop


def test_unknown_prime_characters(trained):
    _, _, run = trained
    proc = run_charnn("sample", str(run), "--prime", "Ωmega ☃")
    assert proc.returncode == 1 and "'Ω'" in proc.stderr and "'☃'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    skip = run_charnn("sample", str(run), "--prime", "Ωmega", "--unknown", "skip", "-n", "5")
    assert skip.returncode == 0 and skip.stdout.startswith("mega") and len(skip.stdout) == 9


def test_piping_into_head_ends_quietly_and_fast(trained):
    """`--length 0` streams until the reader goes away, then charnn ends at once: exit 0,
    nothing on stderr (an unhandled broken pipe would print, or run on forever)."""
    _, _, run = trained
    command = (
        f"'{sys.executable}' -m charnn sample '{run}' --length 0 | head -c 3000; "
        'echo " rc=${PIPESTATUS[0]}"'
    )
    start = time.monotonic()
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 30
    assert proc.stderr == ""
    assert len(proc.stdout.rsplit(" rc=", 1)[0].encode()) == 3000
    assert proc.stdout.endswith(" rc=0\n")


def test_sampling_leaves_the_callers_model_as_it_was():
    torch.manual_seed(0)
    config = ModelSpec(vocab_size=len(VOCAB), hidden_size=24, embed_size=8, dropout=0.5)
    loaded = LoadedModel(CharRNN(config).train(), VOCAB, Path("memory"), RunConfig(), 0)
    drawn = text(loaded, seed=3, prime="the cell state ")
    assert loaded.model.training  # the prime was read in eval mode, and the mode restored
    loaded.model.eval()
    assert text(loaded, seed=3, prime="the cell state ") == drawn  # no dropout was drawn


def test_interactive_mode_on_a_terminal(trained):
    """A real pseudo-terminal: type two primes, read their continuations, end with Ctrl-D."""
    import pty
    import select

    _, _, run = trained
    args = ["sample", str(run), "--length", "30", "--seed", "7"]
    expected = [
        run_charnn(*args, "--prime", prime, "--seed", str(seed), "--no-echo-prime").stdout
        for prime, seed in (("Romeo", "7"), ("Juliet", "8"))  # round k uses seed + k
    ]
    main, child = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
    proc = subprocess.Popen([*CHARNN, *args, "--interactive"], stdin=child, stdout=child,
                            stderr=child, env=env)  # fmt: skip
    os.close(child)
    seen = b""

    def read_until_prompts(count):
        nonlocal seen
        while seen.count(b"> ") < count:
            ready, _, _ = select.select([main], [], [], 60)
            assert ready, seen
            seen += os.read(main, 4096)

    read_until_prompts(1)
    os.write(main, b"Romeo\n")
    read_until_prompts(2)
    os.write(main, b"Juliet\n")
    read_until_prompts(3)
    os.write(main, b"\x04")  # Ctrl-D at the prompt
    assert proc.wait(timeout=60) == 0
    os.close(main)
    shown = seen.decode("utf-8").replace("\r\n", "\n")
    assert expected[0] in shown and expected[1] in shown
    assert "Traceback" not in shown


def test_interactive_needs_a_terminal(trained):
    _, _, run = trained
    proc = run_charnn("sample", str(run), "--interactive", input="Romeo\n")
    assert proc.returncode == 2 and "needs a terminal" in proc.stderr
