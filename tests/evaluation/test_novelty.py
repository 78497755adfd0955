"""The memorisation check: the share of a sample's n-grams that its corpus never holds."""

import json
import random

import pytest

import charnn.evaluation.novelty
from charnn.errors import CharnnError
from charnn.evaluation.novelty import novelty
from charnn.text.vocab import Vocab

from conftest import make_text, run_charnn


def brute_force(sample: str, corpus: str, n: int) -> tuple[int, int]:
    grams = [sample[i : i + n] for i in range(len(sample) - n + 1)]
    return len(grams), sum(g not in corpus for g in grams)


def unseen_text(corpus: str, length: int, n: int, seed: int = 0) -> str:
    """Characters of the corpus, drawn so that none of the text's n-grams occurs in it."""
    rng = random.Random(seed)
    chars = sorted(set(corpus) - {"\n"})
    while True:
        text = "".join(rng.choice(chars) for _ in range(length))
        if all(text[i : i + n] not in corpus for i in range(length - n + 1)):
            return text


def test_a_copied_sample_is_not_novel_and_unseen_text_is():
    corpus = make_text(50_000)
    vocab = Vocab.from_text(corpus)
    ids = vocab.encode(corpus)
    copied = novelty(corpus[12_345:14_345], ids, vocab, (5, 10, 50))
    assert [(r.n, r.ngrams, r.novel, r.fraction) for r in copied] == [
        (5, 1996, 0, 0.0), (10, 1991, 0, 0.0), (50, 1951, 0, 0.0)]  # fmt: skip
    unseen = novelty(unseen_text(corpus, 500, 5), ids, vocab, (5, 10, 50))
    assert [r.fraction for r in unseen] == [1.0, 1.0, 1.0]


def test_counts_match_a_brute_force_search_across_chunks(monkeypatch):
    """Small chunks and verification batches, so n-grams straddle chunk boundaries."""
    monkeypatch.setattr(charnn.evaluation.novelty, "CHUNK", 97)
    monkeypatch.setattr(charnn.evaluation.novelty, "VERIFY_ROWS", 5)
    rng = random.Random(1)
    for _ in range(40):
        corpus = "".join(rng.choice("abc") for _ in range(rng.randint(1, 3000)))
        vocab = Vocab.from_text(corpus)
        sample = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 200)))
        if rng.random() < 0.5 and len(corpus) > 20:
            start = rng.randrange(len(corpus) - 10)
            sample = corpus[start : start + rng.randint(1, 200)] + sample[:30]
        ns = (1, 2, 5, 9, 16, 30)
        for result in novelty(sample, vocab.encode(corpus), vocab, ns):
            assert (result.ngrams, result.novel) == brute_force(sample, corpus, result.n)


def test_hash_collisions_never_count_as_copies(monkeypatch):
    """Under a base of 1 a hash is the sum of the ids: anagrams collide."""
    monkeypatch.setattr(charnn.evaluation.novelty, "BASES", (1,))
    corpus = "aabb" * 25
    vocab = Vocab.from_text(corpus)
    (result,) = novelty("aba", vocab.encode(corpus), vocab, (3,))
    assert (result.ngrams, result.novel) == (1, 1)  # "aba" hashes as "aab" but is not in it
    corpus = "ab" * 50
    with pytest.raises(CharnnError, match="collide"):  # two anagrams in the sample itself
        novelty("abba", vocab.encode(corpus), vocab, (2,))
    monkeypatch.setattr(charnn.evaluation.novelty, "BASES", (1, 0x9E3779B97F4A7C15))
    (result,) = novelty("abba", vocab.encode(corpus), vocab, (2,))  # the next base is used
    assert (result.ngrams, result.novel) == (3, 1)  # "ab" and "ba" occur, "bb" does not


def test_short_samples_and_unknown_characters():
    corpus = make_text(5_000)
    vocab = Vocab.from_text(corpus)
    results = novelty(corpus[:8] + "#" + corpus[9:30], vocab.encode(corpus), vocab, (5, 40))
    assert results[0].ngrams == 26 and results[0].novel == 5  # each 5-gram holding "#"
    assert results[1].ngrams == 0 and results[1].fraction is None


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """A model trained on a text whose last tenth (its validation split) is new text."""
    root = tmp_path_factory.mktemp("novelty")
    corpus = root / "corpus.txt"
    text = make_text(18_000, seed=3) + make_text(2_000, seed=4)
    corpus.write_text(text, encoding="utf-8")
    flags = ["--max-steps", "2", "--hidden-size", "8", "--layers", "1", "--quiet"]
    proc = run_charnn("train", str(corpus), "--checkpoint-dir", str(root / "ck"), *flags)
    assert proc.returncode == 0, proc.stderr
    return root, corpus, text, root / "ck" / "corpus-lstm"


def test_cli_compares_with_the_training_split_or_a_corpus(split_run):
    root, corpus, text, run = split_run
    copied, tail = root / "copied.txt", root / "tail.txt"
    copied.write_text(text[1_000:3_000], encoding="utf-8")
    tail.write_text(text[-1_000:], encoding="utf-8")  # from the validation split
    proc = run_charnn("eval", str(run), "--novelty", str(copied), "--json", "--n", "5,50")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["n"], r["ngrams"], r["novel_fraction"]) for r in rows] == [
        (5, 1996, 0.0), (50, 1951, 0.0)]  # fmt: skip
    assert "training split" in rows[0]["corpus"]

    proc = run_charnn("eval", str(run), "--novelty", str(tail), "--json", "--n", "50")
    assert json.loads(proc.stdout)["novel_fraction"] > 0.5  # the model never trained on it
    proc = run_charnn("eval", "--novelty", str(tail), "--corpus", str(corpus), "--n", "50")
    assert proc.returncode == 0, proc.stderr
    assert "novel fraction" in proc.stdout and "0.0000" in proc.stdout  # the whole file has it


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "5,x"], "is not a list of lengths"),
        (["--n", "0"], "at least 1"),
        (["extra.txt", "more.txt"], "at most one argument"),
    ],
)
def test_cli_errors_are_one_line(split_run, args, message):
    root, corpus, _, run = split_run
    sample = root / "copied.txt"
    sample.write_text("some text", encoding="utf-8")
    proc = run_charnn("eval", "--novelty", str(sample), "--corpus", str(corpus), *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
