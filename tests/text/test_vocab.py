import numpy as np
import pytest

from charnn.errors import CharnnError
from charnn.text.reading import read_corpus
from charnn.text.vocab import Vocab


def test_vocabulary_is_every_code_point_sorted():
    vocab = Vocab.from_text("hello wörld 🎉 héllo")
    assert vocab.chars == "".join(sorted(set("hello wörld 🎉 héllo")))
    assert "🎉" in vocab and len("🎉") == 1  # a code point, not its four UTF-8 bytes


def test_encode_matches_a_per_character_lookup_and_round_trips():
    text = "The quick brown fox — ünïcödé 🎉\n" * 50
    vocab = Vocab.from_text(text)
    expected = np.array([vocab.chars.index(c) for c in text])
    ids = vocab.encode(text)
    assert np.array_equal(ids, expected)
    assert vocab.decode(ids) == text


@pytest.mark.parametrize("chars", ["ba", "abca", "\n .a.b"])
def test_a_vocabulary_out_of_order_is_refused_not_misread(chars):
    with pytest.raises(CharnnError, match="code-point order"):
        Vocab(chars)  # its ids are found by binary search: out of order, some would be wrong


def test_unknown_characters_are_named_not_mapped():
    vocab = Vocab.from_text("abc")
    with pytest.raises(CharnnError, match="'x'"):
        vocab.encode("abxc")
    ids, unknown = vocab.encode_known("abxcyy")
    assert vocab.decode(ids) == "abc" and unknown == 3
    assert vocab.unknown("abxcyy") == ["x", "y"]


def test_leading_bom_is_dropped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello")
    assert read_corpus(path) == "hello"


def test_invalid_utf8_names_the_byte_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good text\xff more")
    with pytest.raises(CharnnError, match="byte offset 9"):
        read_corpus(path)
    assert read_corpus(path, encoding="latin-1") == "good text\xff more"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"  \n", "only whitespace"), (b"\x00\x01\x02binary", "binary")],
)
def test_unusable_corpora_get_clear_errors(tmp_path, content, message):
    path = tmp_path / "c.txt"
    path.write_bytes(content)
    with pytest.raises(CharnnError, match=message):
        read_corpus(path)


def test_missing_corpus_and_folder(tmp_path):
    with pytest.raises(CharnnError, match="not found"):
        read_corpus(tmp_path / "nope.txt")
    with pytest.raises(CharnnError, match="folder"):
        read_corpus(tmp_path)
