"""Encoded corpora, cached on disk and read back with np.memmap.

A corpus is encoded once: the file is streamed in chunks (never held whole as a Python string),
its vocabulary collected in a first pass and the ids written in a second, as uint8, uint16 or
uint32 by vocabulary size. The ids file is keyed by a hash of the file's bytes and encoding,
so the next run on the same file maps it straight from disk, and the operating system pages in
only what training reads.

    ~/.cache/charnn/corpora/KEY.ids     the ids, raw little-endian integers
    ~/.cache/charnn/corpora/KEY.json    vocabulary, length, dtype, text SHA-256

The folder is $CHARNN_CACHE_DIR, else $XDG_CACHE_HOME/charnn, else ~/.cache/charnn; anything
in it may be deleted at any time.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charnn.errors import CharnnError
from charnn.fileio import atomic_write
from charnn.vocab import Vocab, check_readable, code_points

CHUNK_BYTES = 8 << 20  # bytes read and encoded at a time: bounds the memory encoding needs
CACHE_FORMAT = 1
UNICODE = 0x110000  # code points


def cache_root() -> Path:
    if os.environ.get("CHARNN_CACHE_DIR"):
        return Path(os.environ["CHARNN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charnn"


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer that holds every id."""
    for dtype in (np.uint8, np.uint16):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype).newbyteorder("<")
    return np.dtype("<u4")


@dataclass(frozen=True)
class EncodedCorpus:
    """A corpus as ids: `ids` is (n,) unsigned integers, usually a read-only np.memmap."""

    ids: np.ndarray
    vocab: Vocab
    sha256: str  # of the text encoded as UTF-8: what checkpoints store to recognise it
    cache_path: Path | None  # the ids file, None when encoded in memory

    def ids_in(self, vocab: Vocab) -> np.ndarray:
        """The ids under another vocabulary holding every character of this one."""
        if vocab == self.vocab:
            return self.ids
        remap = np.array([vocab.chars.index(c) for c in self.vocab.chars], dtype=np.int64)
        return remap.astype(id_dtype(len(vocab)))[self.ids]


def load_corpus(
    path: str | Path,
    encoding: str = "utf-8",
    on_notice: Callable[[str], None] | None = None,
) -> EncodedCorpus:
    """The corpus at `path` as ids, from the cache when this file was encoded before."""
    path = Path(path)
    check_readable(path, encoding)
    key = _file_key(path, encoding)
    folder = cache_root() / "corpora"
    cached = _read_cached(folder, key)
    if cached is not None:
        return cached
    vocab, length, digest = _scan(path, encoding)
    dtype = id_dtype(len(vocab))
    meta = {"format": CACHE_FORMAT, "vocab": vocab.chars, "length": length, "dtype": dtype.str,
            "sha256": digest, "source": str(path.resolve())}  # fmt: skip
    try:
        atomic_write(folder / f"{key}.ids", lambda out: _write_ids(path, encoding, vocab, out))
        atomic_write(folder / f"{key}.json", lambda out: out.write(json.dumps(meta).encode()))
    except OSError as err:  # no cache then: encode into memory
        if on_notice is not None:
            on_notice(f"cannot write the corpus cache in {folder} ({err.strerror}); encoding "
                      "in memory (set CHARNN_CACHE_DIR to a writable folder)")  # fmt: skip
        ids = np.empty(length, dtype=dtype)
        _write_ids(path, encoding, vocab, _ArrayWriter(ids))
        return EncodedCorpus(ids, vocab, digest, None)
    found = _read_cached(folder, key)
    assert found is not None
    return found


def _file_key(path: Path, encoding: str) -> str:
    digest = hashlib.sha256(
        f"charnn-cache-{CACHE_FORMAT}\0{codecs.lookup(encoding).name}\0".encode()
    )
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def _read_cached(folder: Path, key: str) -> EncodedCorpus | None:
    meta_path, ids_path = folder / f"{key}.json", folder / f"{key}.ids"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT:
            return None
        dtype = np.dtype(meta["dtype"])
        if ids_path.stat().st_size != meta["length"] * dtype.itemsize:
            return None  # damaged: encode again
        ids = np.memmap(ids_path, dtype=dtype, mode="r", shape=(meta["length"],))
        return EncodedCorpus(ids, Vocab(meta["vocab"]), meta["sha256"], ids_path)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _decoded_chunks(path: Path, encoding: str) -> Iterator[str]:
    """The file's text in pieces, a leading BOM dropped; a bad byte is named by its offset."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, first = 0, True
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK_BYTES)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                buffered = len(err.object) - len(chunk)  # bytes the decoder held back before
                at = offset - buffered + err.start
                raise CharnnError(
                    f"{path} is not valid {encoding}: bad byte 0x{err.object[err.start]:02x} at "
                    f"byte offset {at}; convert the file or pass --encoding (for example latin-1)"
                ) from None
            if first and text:
                text, first = text.removeprefix("\ufeff"), False
            if text:
                yield text
            if not chunk:
                return
            offset += len(chunk)


def _scan(path: Path, encoding: str) -> tuple[Vocab, int, str]:
    """First pass: the vocabulary, the length in characters and the text's SHA-256."""
    seen = np.zeros(UNICODE, dtype=bool)
    digest = hashlib.sha256()
    length = 0
    for text in _decoded_chunks(path, encoding):
        seen[code_points(text)] = True
        digest.update(text.encode("utf-8", "surrogatepass"))
        length += len(text)
    points = np.flatnonzero(seen).astype("<u4")
    chars = points.tobytes().decode("utf-32-le", "surrogatepass")
    if not chars.strip():
        raise CharnnError(f"{path} is empty: a corpus needs some text")
    return Vocab(chars), length, digest.hexdigest()


def _write_ids(path: Path, encoding: str, vocab: Vocab, out) -> None:
    """Second pass: every character's id, in order."""
    table = np.zeros(UNICODE, dtype=id_dtype(len(vocab)))
    table[code_points(vocab.chars)] = np.arange(len(vocab))
    for text in _decoded_chunks(path, encoding):
        out.write(table[code_points(text)].tobytes())


class _ArrayWriter:
    """A file-like sink that fills a numpy array, for encoding without a cache."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.position = array, 0

    def write(self, data: bytes) -> None:
        values = np.frombuffer(data, dtype=self.array.dtype)
        self.array[self.position : self.position + len(values)] = values
        self.position += len(values)
