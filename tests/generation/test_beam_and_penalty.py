"""Generation that does not loop: the repetition penalty and beam search."""

import itertools
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from charnn.checkpoints.loading import LoadedModel
from charnn.config.model import ModelSpec
from charnn.config.train import RunConfig
from charnn.generation.penalty import MIN_REPEAT, RepetitionPenalty
from charnn.generation.sampler import sample
from charnn.nn.model import CharRNN
from charnn.text.vocab import Vocab

from conftest import TINY, run_charnn

VOCAB = Vocab("\n .abcdefghijklmnopqrstuvwxyz")


def random_model(seed: int = 0, vocab: Vocab = VOCAB) -> LoadedModel:
    torch.manual_seed(seed)
    config = ModelSpec(vocab_size=len(vocab), cell="lstm", hidden_size=24, embed_size=8)
    return LoadedModel(CharRNN(config).eval(), vocab, Path("memory"), RunConfig(), 0)


def text(loaded, length=200, **options) -> str:
    return "".join(sample(loaded, length, **options))


def longest_repeat(text: str) -> int:
    """The length of the longest substring occurring twice (overlaps allowed)."""
    low, high = 0, len(text) - 1  # a repeat of `low` exists; none longer than `high`
    while low < high:
        n = (low + high + 1) // 2
        grams = [text[i : i + n] for i in range(len(text) - n + 1)]
        low, high = (n, high) if len(set(grams)) < len(grams) else (low, n - 1)
    return low


def log_probability(loaded: LoadedModel, prime: str, continuation: str) -> float:
    """log P(continuation | prime) under the model, read by the model itself in one pass."""
    ids = torch.as_tensor(loaded.vocab.encode(prime + continuation))[None]
    with torch.no_grad():
        logits, _ = loaded.model(ids)
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    targets = ids[0, len(prime) :]
    return float(logp[len(prime) - 1 : -1].gather(1, targets[:, None]).sum())


def test_longest_repeat():
    assert longest_repeat("abcdxabcy") == 3
    assert longest_repeat("aaaa") == 3
    assert longest_repeat("abc") == 0


def ids(chars: str) -> np.ndarray:
    return np.array([VOCAB.chars.index(c) for c in chars])


def test_penalty_counts_the_repeat_a_character_would_extend():
    penalty = RepetitionPenalty(2.0, rows=2)
    for a, b in zip("xabcdyabc", "abcabcabc", strict=True):
        penalty.append(ids(a + b))
    adjusted = penalty.adjust(np.zeros((2, len(VOCAB)), dtype=np.float32))
    cost = -adjusted / math.log(2.0)  # in factors of the penalty
    # row 0, "xabcdyabc": "d" would repeat "abcd" (4 characters: the first that costs);
    # "y" and "a" would repeat nothing longer than themselves
    assert cost[0, VOCAB.chars.index("d")] == pytest.approx(4 - MIN_REPEAT + 1)
    assert np.count_nonzero(cost[0]) == 1
    # row 1, "abcabcabc": "a" would make the repeat "abcabca" (7 characters)
    assert cost[1, VOCAB.chars.index("a")] == pytest.approx(7 - MIN_REPEAT + 1)
    assert np.count_nonzero(cost[1]) == 1


def test_penalty_rows_follow_their_beams():
    penalty = RepetitionPenalty(2.0, rows=2)
    for a, b in zip("abcab", "xyzwv", strict=True):
        penalty.append(ids(a + b))
    penalty.select(np.array([0, 0]))  # both rows now continue "abcab"
    adjusted = penalty.adjust(np.zeros((2, len(VOCAB)), dtype=np.float32))
    assert np.count_nonzero(adjusted) == 0  # "abc" is a repeat of 3: free
    penalty.append(ids("cc"))
    adjusted = penalty.adjust(np.zeros((2, len(VOCAB)), dtype=np.float32))
    assert np.all(adjusted[:, VOCAB.chars.index("a")] < 0)  # "abca" would repeat 4


def test_penalty_of_one_changes_nothing():
    loaded = random_model()
    for options in ({"temperature": 0}, {"seed": 5}, {"seed": 5, "top_k": 4}):
        assert text(loaded, 400, repetition_penalty=1.0, **options) == text(loaded, 400, **options)
    penalty = RepetitionPenalty(1.0, rows=1)
    for c in "abcabcabcabc":
        penalty.append(ids(c))
    logits = np.random.default_rng(0).normal(size=(1, len(VOCAB))).astype(np.float32)
    assert np.array_equal(penalty.adjust(logits), logits)


@pytest.fixture(scope="module")
def looping(tmp_path_factory):
    """A small model trained on a text that repeats one line: greedy output loops."""
    root = tmp_path_factory.mktemp("loop")
    corpus = root / "corpus.txt"
    corpus.write_text("the king is dead, long live the king. " * 400, encoding="utf-8")
    proc = run_charnn("train", str(corpus), "--max-steps", "60", "--checkpoint-dir",
                      str(root / "ck"), "--seed", "1", *TINY)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return root / "ck" / "corpus-lstm"


def test_penalty_makes_greedy_output_less_repetitive(looping):
    def greedy(*flags: str) -> str:
        proc = run_charnn("sample", str(looping), "--greedy", "--length", "600", "--prime",
                          "the ", "--no-echo-prime", *flags)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout) == 600
        return proc.stdout

    plain, penalised = greedy(), greedy("--repetition-penalty", "1.5")
    assert longest_repeat(plain) > 300  # the loop: most of the text repeats
    assert longest_repeat(penalised) < longest_repeat(plain) / 4
    assert greedy("--repetition-penalty", "1") == plain


def test_beam_of_one_is_greedy(looping):
    loaded = random_model(3)
    for prime in ("", "ab", "the "):
        greedy = text(loaded, 300, temperature=0, prime=prime)
        assert text(loaded, 300, beam=1, prime=prime) == greedy
    beam = run_charnn("sample", str(looping), "--beam", "1", "--length", "300")
    greedy = run_charnn("sample", str(looping), "--greedy", "--length", "300")
    assert beam.returncode == 0, beam.stderr
    assert beam.stdout == greedy.stdout


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_is_at_least_as_likely_as_greedy(seed):
    loaded = random_model(seed)
    greedy = text(loaded, 60, temperature=0, prime="a")
    beams = {width: text(loaded, 60, beam=width, prime="a") for width in (2, 5, 16)}
    for found in beams.values():
        assert len(found) == 60
        assert log_probability(loaded, "a", found) >= log_probability(loaded, "a", greedy) - 1e-9
    assert text(loaded, 60, beam=5, prime="a") == beams[5]  # deterministic


@pytest.mark.parametrize("seed", [2, 3, 9])  # models whose likeliest text greedy misses
def test_wide_enough_beam_finds_the_likeliest_text(seed):
    """A beam as wide as all texts but their last character is an exhaustive search."""
    vocab = Vocab("abcdef")
    loaded = random_model(seed, vocab)
    texts = ["".join(t) for t in itertools.product(vocab.chars, repeat=4)]
    ids_ = torch.as_tensor(np.stack([vocab.encode("a" + t) for t in texts]))
    with torch.no_grad():
        logp = torch.log_softmax(loaded.model(ids_)[0].double(), dim=-1)
    scores = logp[:, :-1].gather(2, ids_[:, 1:, None]).sum(dim=(1, 2))
    best = texts[int(scores.argmax())]
    assert text(loaded, 4, temperature=0, prime="a") != best
    assert text(loaded, 4, beam=len(vocab) ** 3, prime="a") == best


def test_stop_strings_end_beams():
    loaded = random_model(1)
    free = text(loaded, 80, beam=4)
    stop = free[10:12]  # it occurs in the likeliest text, so some beam meets it
    stopped = text(loaded, 80, beam=4, stop=(stop,))
    assert stop not in stopped and len(stopped) < 80
    kept = text(loaded, 80, beam=4, stop=(stop,), include_stop=True)
    assert kept == stopped + stop


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--beam", "3", "-t", "0.5"], "--beam searches for the likeliest text"),
        (["--beam", "3", "--greedy"], "--beam searches for the likeliest text"),
        (["--beam", "3", "-N", "2"], "--beam finds one text"),
        (["--beam", "3", "--length", "0"], "--beam needs a --length"),
        (["--repetition-penalty", "0.5"], "--repetition-penalty"),
    ],
)
def test_bad_combinations_are_one_line_errors(trained, flags, message):
    proc = run_charnn("sample", str(trained[2]), *flags)
    assert proc.returncode in (1, 2)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_jsonl_records_the_penalty_and_beam(trained):
    proc = run_charnn("sample", str(trained[2]), "--format", "jsonl", "--length", "30",
                      "--beam", "2", "--repetition-penalty", "1.3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (record,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert (record["beam"], record["repetition_penalty"], len(record["text"])) == (2, 1.3, 30)


def test_the_server_engine_applies_the_penalty_as_charnn_sample_does(looping):
    """charnn serve's worker, with another job sharing its batch, gives the CLI's text."""
    from charnn.checkpoints.loading import load_checkpoint
    from charnn.config.sample import SampleConfig
    from charnn.serve.engine import Engine, Job

    engine = Engine(load_checkpoint(looping))
    ended: dict[str, threading.Event] = {}
    results: dict[str, list[str]] = {}

    def job(name: str, config: SampleConfig) -> Job:
        ended[name] = threading.Event()

        def deliver(event) -> None:
            if event[0] == "end":
                results[name] = event[1].texts
                ended[name].set()

        return Job(config, deliver)

    greedy = {"temperature": 0.0, "length": 600, "prime": "the "}
    engine.start()
    try:
        engine.submit(job("plain", SampleConfig(**greedy)))
        engine.submit(job("penalised", SampleConfig(**greedy, repetition_penalty=1.5)))
        assert all(e.wait(120) for e in ended.values())
    finally:
        engine.stop()
        engine.join(30)
    cli = run_charnn("sample", str(looping), "--greedy", "--length", "600", "--prime", "the ",
                     "--no-echo-prime", "--repetition-penalty", "1.5")  # fmt: skip
    assert results["penalised"] == [cli.stdout]
    assert longest_repeat(results["penalised"][0]) < longest_repeat(results["plain"][0]) / 4
