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
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charnn.errors import CharnnError
from charnn.fileio import atomic_write
from charnn.text.sources import CorpusSpec, decoded_chunks
from charnn.text.vocab import Vocab, check_readable, code_points

CHUNK_BYTES = 8 << 20  # bytes read and encoded at a time: bounds the memory encoding needs
CACHE_FORMAT = 1
MANY_DOCUMENTS = 20  # from this many documents on, validation takes whole documents
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
    # several documents: where the validation documents start (None: the last --val-frac of
    # the text), and each file with the SHA-256 of its bytes
    val_start: int | None = None
    files: tuple[tuple[str, str], ...] = ()
    documents: int = 1

    def train_end(self, val_frac: float) -> int:
        """Where the training split ends: the validation documents' start, else the last
        `val_frac` of the text (as charnn.training.streams.split_train_val cuts it)."""
        n = len(self.ids)
        return n - int(n * val_frac) if self.val_start is None else self.val_start

    def ids_in(self, vocab: Vocab) -> np.ndarray:
        """The ids under another vocabulary holding every character of this one."""
        if vocab == self.vocab:
            return self.ids
        remap = np.array([vocab.chars.index(c) for c in self.vocab.chars], dtype=np.int64)
        return remap.astype(id_dtype(len(vocab)))[self.ids]


def load_corpus(
    source: str | Path | CorpusSpec,
    encoding: str = "utf-8",
    on_notice: Callable[[str], None] | None = None,
    val_frac: float = 0.1,
) -> EncodedCorpus:
    """A corpus as ids, from the cache when this text was encoded before.

    `source` is one file, or a CorpusSpec naming files and folders (charnn.text.sources). With many
    documents the validation split takes whole documents from all over the corpus (every
    round(1 / val_frac)-th), stored after the training documents.
    """
    spec = source if isinstance(source, CorpusSpec) else CorpusSpec((str(source),), encoding)
    if spec.single_file:
        return _load_file(Path(spec.paths[0]), spec.encoding, on_notice)
    files = spec.files(on_notice)
    digests = tuple((str(f), _bytes_digest(f)) for f in files)
    key = _documents_key(spec, digests, val_frac)
    folder = cache_root() / "corpora"
    cached = _read_cached(folder, key)
    if cached is not None:
        return cached
    vocab, documents = _scan_documents(spec, files)
    every = max(2, round(1 / val_frac)) if documents >= MANY_DOCUMENTS else None
    written: dict = {}

    def write(out) -> None:
        written.update(_write_documents(spec, files, vocab, every, out))

    try:
        atomic_write(folder / f"{key}.ids", write)
    except OSError as err:
        if on_notice is not None:
            on_notice(f"cannot write the corpus cache in {folder} ({err.strerror}); encoding "
                      "in memory (set CHARNN_CACHE_DIR to a writable folder)")  # fmt: skip
        sink = _GrowingWriter(id_dtype(len(vocab)))
        written.update(_write_documents(spec, files, vocab, every, sink))
        return EncodedCorpus(sink.array(), vocab, written["sha256"], None,
                             written["val_start"], digests, documents)  # fmt: skip
    meta = {"format": CACHE_FORMAT, "vocab": vocab.chars, "dtype": id_dtype(len(vocab)).str,
            "files": digests, "documents": documents, **written}  # fmt: skip
    atomic_write(folder / f"{key}.json", lambda out: out.write(json.dumps(meta).encode()))
    found = _read_cached(folder, key)
    assert found is not None
    return found


def _load_file(path: Path, encoding: str, on_notice: Callable[[str], None] | None) -> EncodedCorpus:
    """One file, read as one document."""
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


def _bytes_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _documents_key(spec: CorpusSpec, digests: tuple[tuple[str, str], ...], val_frac: float) -> str:
    """The cache key of several documents: what decides the ids, and nothing else (not where
    the files are)."""
    parts = [f"charnn-documents-{CACHE_FORMAT}", codecs.lookup(spec.encoding).name, spec.joiner,
             str(spec.doc_per_line), repr(val_frac), *(sha for _, sha in digests)]  # fmt: skip
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _scan_documents(spec: CorpusSpec, files: list[Path]) -> tuple[Vocab, int]:
    """First pass over several documents: the vocabulary (separator included) and how many."""
    seen = np.zeros(UNICODE, dtype=bool)
    seen[code_points(spec.joiner)] = True
    documents = 0
    for document in spec.documents(files):
        documents += 1
        for text in document:
            seen[code_points(text)] = True
    points = np.flatnonzero(seen).astype("<u4")
    chars = points.tobytes().decode("utf-32-le", "surrogatepass")
    if not documents or not chars.strip():
        raise CharnnError(f"{', '.join(spec.paths)} holds no text: a corpus needs some")
    return Vocab(chars), documents


def _write_documents(
    spec: CorpusSpec, files: list[Path], vocab: Vocab, every: int | None, out
) -> dict:
    """Second pass: the ids of the training documents, then those of the validation documents
    (every `every`-th; None: all in order, the split then the text's tail). Returns the length,
    where validation starts and the text's SHA-256."""
    dtype = id_dtype(len(vocab))
    table = np.zeros(UNICODE, dtype=dtype)
    table[code_points(vocab.chars)] = np.arange(len(vocab))
    separator = table[code_points(spec.joiner)].tobytes()
    digest = hashlib.sha256()
    lengths = {"train": 0, "val": 0}
    with tempfile.TemporaryFile() as held_back:  # the validation documents, until the end
        sinks = {"train": out, "val": held_back}
        started = {"train": False, "val": False}
        val_digest = hashlib.sha256()
        for index, document in enumerate(spec.documents(files)):
            part = "val" if every is not None and index % every == every - 1 else "train"
            sink, text_digest = sinks[part], digest if part == "train" else val_digest
            if started[part]:
                sink.write(separator)
                text_digest.update(spec.joiner.encode("utf-8", "surrogatepass"))
                lengths[part] += len(spec.joiner)
            started[part] = True
            for text in document:
                sink.write(table[code_points(text)].tobytes())
                text_digest.update(text.encode("utf-8", "surrogatepass"))
                lengths[part] += len(text)
        val_start = None
        if started["val"]:
            out.write(separator)
            digest.update(spec.joiner.encode("utf-8", "surrogatepass"))
            val_start = lengths["train"] + len(spec.joiner)
            held_back.seek(0)
            shutil.copyfileobj(held_back, out)
            digest.update(val_digest.digest())  # the text, train then validation documents
    length = lengths["train"] + (len(spec.joiner) + lengths["val"] if started["val"] else 0)
    return {"length": length, "val_start": val_start, "sha256": digest.hexdigest()}


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
        files = tuple(tuple(pair) for pair in meta.get("files", ()))
        return EncodedCorpus(ids, Vocab(meta["vocab"]), meta["sha256"], ids_path,
                             meta.get("val_start"), files, meta.get("documents", 1))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, CharnnError):  # damaged: encode again
        return None


def _scan(path: Path, encoding: str) -> tuple[Vocab, int, str]:
    """First pass: the vocabulary, the length in characters and the text's SHA-256."""
    seen = np.zeros(UNICODE, dtype=bool)
    digest = hashlib.sha256()
    length = 0
    for text in decoded_chunks(path, encoding):
        seen[code_points(text)] = True
        digest.update(text.encode("utf-8", "surrogatepass"))
        length += len(text)
    points = np.flatnonzero(seen).astype("<u4")
    chars = points.tobytes().decode("utf-32-le", "surrogatepass")
    if not chars.strip():
        raise CharnnError(f"{path} holds only whitespace: a corpus needs some text")
    return Vocab(chars), length, digest.hexdigest()


def _write_ids(path: Path, encoding: str, vocab: Vocab, out) -> None:
    """Second pass: every character's id, in order."""
    table = np.zeros(UNICODE, dtype=id_dtype(len(vocab)))
    table[code_points(vocab.chars)] = np.arange(len(vocab))
    for text in decoded_chunks(path, encoding):
        out.write(table[code_points(text)].tobytes())


class _ArrayWriter:
    """A file-like sink that fills a numpy array, for encoding without a cache."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.position = array, 0

    def write(self, data: bytes) -> None:
        values = np.frombuffer(data, dtype=self.array.dtype)
        self.array[self.position : self.position + len(values)] = values
        self.position += len(values)


class _GrowingWriter:
    """A file-like sink that collects ids in memory, for encoding several documents without a
    cache (their length is known only once written)."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.parts: list[np.ndarray] = []

    def write(self, data: bytes) -> None:
        self.parts.append(np.frombuffer(data, dtype=self.dtype).copy())

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.empty(0, self.dtype)
