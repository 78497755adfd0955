"""The encoded-corpus cache: chunked encoding equals encoding the whole text, a second load is
a memory map that skips encoding, and the errors of reading text keep their byte offsets."""

import hashlib
import json

import numpy as np
import pytest

from charnn.errors import CharnnError
from charnn.text import cache, corpus, reading
from charnn.text.corpus import id_dtype, load_corpus
from charnn.text.reading import read_corpus
from charnn.text.vocab import Vocab

from conftest import make_text


@pytest.fixture
def small_chunks(monkeypatch, tmp_path):
    """Chunks of 1,000 bytes, so that small files cross many chunk boundaries."""
    monkeypatch.setattr(reading, "CHUNK_BYTES", 1000)
    monkeypatch.setenv("CHARNN_CACHE_DIR", str(tmp_path / "cache"))


def test_chunked_encoding_equals_encoding_the_whole_text(tmp_path, small_chunks):
    text = make_text(20_000).replace("e", "é").replace("o", "ø€")  # multibyte, split by chunks
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # with a BOM, which is dropped
    corpus = load_corpus(path)
    vocab = Vocab.from_text(text)
    assert corpus.vocab == vocab
    assert corpus.ids.dtype == np.uint8 and np.array_equal(corpus.ids, vocab.encode(text))
    assert corpus.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert corpus.cache_path is not None and corpus.cache_path.stat().st_size == len(text)


def test_a_second_load_maps_the_cache_without_encoding(tmp_path, small_chunks, monkeypatch):
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(5_000), encoding="utf-8")
    first = load_corpus(path)

    def no_encoding(*args):
        raise AssertionError("encoded again")

    monkeypatch.setattr(corpus, "_scan", no_encoding)
    second = load_corpus(path)
    assert isinstance(second.ids, np.memmap) and np.array_equal(second.ids, first.ids)
    path.write_text(make_text(5_000, seed=1), encoding="utf-8")  # new content: a new key
    with pytest.raises(AssertionError, match="encoded again"):
        load_corpus(path)


def test_a_cached_vocabulary_out_of_order_is_encoded_again(tmp_path, small_chunks):
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(5_000), encoding="utf-8")
    first = load_corpus(path)
    meta = first.cache_path.with_suffix(".json")
    damaged = json.loads(meta.read_text(encoding="utf-8"))
    damaged["vocab"] = damaged["vocab"][::-1]  # a Vocab would refuse it
    meta.write_text(json.dumps(damaged), encoding="utf-8")
    again = load_corpus(path)
    assert again.vocab == first.vocab and np.array_equal(again.ids, first.ids)


def test_id_width_follows_the_vocabulary_size(tmp_path, small_chunks):
    assert [id_dtype(n).itemsize for n in (256, 257, 65536, 65537)] == [1, 2, 2, 4]
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 3  # 300 distinct characters
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(path)
    assert corpus.ids.dtype == np.uint16
    assert np.array_equal(corpus.ids, Vocab.from_text(text).encode(text))


def test_a_bad_byte_is_reported_at_its_offset_across_chunks(tmp_path, small_chunks):
    data = bytearray("é".encode() * 1500)  # 3,000 bytes: c3 a9 c3 a9 ...
    data[2502] = 0xFF  # in the third chunk
    path = tmp_path / "bad.txt"
    path.write_bytes(bytes(data))
    with pytest.raises(CharnnError, match="bad byte 0xff at byte offset 2502") as streamed:
        load_corpus(path)
    with pytest.raises(CharnnError) as whole:  # the same words as decoding the whole file
        read_corpus(path)
    assert str(streamed.value) == str(whole.value)


def test_without_a_writable_cache_the_corpus_is_encoded_in_memory(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("CHARNN_CACHE_DIR", str(blocked))  # a file where the folder should be
    path = tmp_path / "corpus.txt"
    text = make_text(3_000)
    path.write_text(text, encoding="utf-8")
    notices = []
    corpus = load_corpus(path, on_notice=notices.append)
    assert corpus.cache_path is None and np.array_equal(
        corpus.ids, Vocab.from_text(text).encode(text)
    )
    assert len(notices) == 1 and "CHARNN_CACHE_DIR" in notices[0]


def test_ids_move_to_a_larger_vocabulary(tmp_path, small_chunks):
    path = tmp_path / "corpus.txt"
    path.write_text("abcabc", encoding="utf-8")
    corpus = load_corpus(path)
    wider = Vocab("Zabcz")
    assert wider.decode(corpus.ids_in(wider)) == "abcabc"
    assert corpus.ids_in(corpus.vocab) is corpus.ids


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CHARNN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_root() == tmp_path / "charnn"
    monkeypatch.setenv("CHARNN_CACHE_DIR", str(tmp_path / "x"))
    assert cache.cache_root() == tmp_path / "x"
