"""A corpus as ids: one streaming reader for one file or many, cached on disk.

A corpus is encoded once. Its documents (a single file is one) are streamed in chunks, never
held whole as a Python string: the vocabulary is collected in a first pass and the ids written
in a second, as uint8, uint16 or uint32 by vocabulary size, into the cache (text.cache), which
the next run maps straight from disk. With many documents, validation takes whole documents
from all over the corpus (every round(1 / val_frac)-th), stored after the training documents;
otherwise it is the last `val_frac` of the text.
"""

from __future__ import annotations

import codecs
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from charnn.errors import CharnnError, SettingError
from charnn.text import cache
from charnn.text.reading import file_chunks
from charnn.text.sources import CorpusSpec
from charnn.text.vocab import Vocab, code_points

MANY_DOCUMENTS = 20  # from this many documents on, validation takes whole documents
UNICODE = 0x110000  # code points


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
    # where the validation documents start (None: the last val_frac of the text)
    val_start: int | None = None
    files: tuple[tuple[str, str], ...] = ()  # each file with the SHA-256 of its bytes
    documents: int = 1

    def train_end(self, val_frac: float) -> int:
        """Where the training split ends: the validation documents' start, else the last
        `val_frac` of the text (as split_train_val cuts it)."""
        n = len(self.ids)
        return n - int(n * val_frac) if self.val_start is None else self.val_start

    def ids_in(self, vocab: Vocab) -> np.ndarray:
        """The ids under another vocabulary holding every character of this one."""
        if vocab == self.vocab:
            return self.ids
        remap = np.array([vocab.chars.index(c) for c in self.vocab.chars], dtype=np.int64)
        return remap.astype(id_dtype(len(vocab)))[self.ids]


def split_train_val(
    ids: np.ndarray, val_frac: float, val_start: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The last `val_frac` of the text is validation (or, for a corpus of many documents, the
    documents from `val_start` on); both parts need at least two characters."""
    n_val = int(len(ids) * val_frac) if val_start is None else len(ids) - val_start
    if n_val < 2 or len(ids) - n_val < 2:
        minimum = int(np.ceil(2 / min(val_frac, 1 - val_frac)))
        raise SettingError(
            f"corpus is too short: {len(ids)} characters, but {{val_frac}} {val_frac} needs at "
            f"least {minimum} so that both splits hold two characters"
        )
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def load_corpus(
    source: str | Path | CorpusSpec,
    encoding: str = "utf-8",
    on_notice: Callable[[str], None] | None = None,
    val_frac: float = 0.1,
) -> EncodedCorpus:
    """A corpus as ids, from the cache when this text was encoded before. `source` is one file
    (in `encoding`), or a CorpusSpec naming files and folders (text.sources)."""
    spec = source if isinstance(source, CorpusSpec) else CorpusSpec((str(source),), encoding)
    files = spec.files(on_notice)
    digests = tuple((str(f), _bytes_digest(f)) for f in files)
    key = _key(spec, digests, val_frac)
    found = _cached(key)
    if found is not None:
        return found
    vocab, documents = _scan(spec, files)
    every = max(2, round(1 / val_frac)) if documents >= MANY_DOCUMENTS else None

    def write(out: BinaryIO) -> dict[str, Any]:
        return _write(spec, files, vocab, every, out)

    described = {"vocab": vocab.chars, "dtype": id_dtype(len(vocab)).str, "files": digests,
                 "documents": documents}  # fmt: skip
    try:
        cache.write_cached(key, write, described)
    except OSError as err:  # no cache then: encode into memory
        if on_notice is not None:
            on_notice(f"cannot write the corpus cache in {cache.corpora_folder()} "
                      f"({err.strerror}); encoding in memory (set CHARNN_CACHE_DIR to a "
                      "writable folder)")  # fmt: skip
        sink = _Collected(id_dtype(len(vocab)))
        written = write(sink)  # type: ignore[arg-type]
        return EncodedCorpus(sink.array(), vocab, written["sha256"], None,
                             written["val_start"], digests, documents)  # fmt: skip
    found = _cached(key)
    assert found is not None, "the cache was just written"
    return found


def _cached(key: str) -> EncodedCorpus | None:
    """The corpus the cache holds under `key`, or None (missing or damaged: encode again)."""
    cached = cache.read_cached(key)
    if cached is None:
        return None
    ids, meta = cached
    try:
        files = tuple((str(path), str(sha)) for path, sha in meta.get("files", ()))
        return EncodedCorpus(ids, Vocab(meta["vocab"]), meta["sha256"],
                             cache.corpora_folder() / f"{key}.ids", meta.get("val_start"),
                             files, meta.get("documents", 1))  # fmt: skip
    except (CharnnError, KeyError, TypeError, ValueError):
        return None


def _bytes_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def _key(spec: CorpusSpec, digests: tuple[tuple[str, str], ...], val_frac: float) -> str:
    """What decides the ids, and nothing else: not where the files are, nor the validation
    share where it cannot cut whole documents (a few files, each its own document)."""
    cuts_documents = spec.doc_per_line or len(digests) >= MANY_DOCUMENTS
    return cache.key_of([codecs.lookup(spec.encoding).name, spec.joiner, str(spec.doc_per_line),
                         str(spec.one_document), repr(val_frac) if cuts_documents else "",
                         *(sha for _, sha in digests)])  # fmt: skip


def _scan(spec: CorpusSpec, files: list[Path]) -> tuple[Vocab, int]:
    """First pass: the vocabulary (with the separator's characters, unless the corpus is one
    plain file, which nothing joins) and how many documents there are."""
    seen = np.zeros(UNICODE, dtype=bool)
    documents = 0
    for document in spec.documents(files):
        documents += 1
        for text in document:
            seen[code_points(text)] = True
    if not spec.one_document:
        seen[code_points(spec.joiner)] = True
    chars = np.flatnonzero(seen).astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
    if not documents:
        raise CharnnError(f"{', '.join(spec.paths)} holds no text: a corpus needs some")
    if not chars.strip():
        raise CharnnError(
            f"{', '.join(spec.paths)} holds only whitespace: a corpus needs some text"
        )
    return Vocab(chars), documents


def _write(
    spec: CorpusSpec, files: list[Path], vocab: Vocab, every: int | None, out: BinaryIO
) -> dict[str, Any]:
    """Second pass: the ids of the training documents, then those of the validation documents
    (every `every`-th; None: all in order, the split then the text's tail). Returns the length,
    where validation starts and the text's SHA-256."""
    dtype = id_dtype(len(vocab))
    table = np.zeros(UNICODE, dtype=dtype)
    table[code_points(vocab.chars)] = np.arange(len(vocab))
    separator, joiner = table[code_points(spec.joiner)].tobytes(), spec.joiner.encode()
    digests = {"train": hashlib.sha256(), "val": hashlib.sha256()}
    lengths = {"train": 0, "val": 0}
    started = {"train": False, "val": False}
    with tempfile.TemporaryFile() as held_back:  # the validation documents, until the end
        sinks = {"train": out, "val": held_back}
        for index, document in enumerate(spec.documents(files)):
            part = "val" if every is not None and index % every == every - 1 else "train"
            if started[part]:
                sinks[part].write(separator)
                digests[part].update(joiner)
                lengths[part] += len(spec.joiner)
            started[part] = True
            for text in document:
                sinks[part].write(table[code_points(text)].tobytes())
                digests[part].update(text.encode("utf-8", "surrogatepass"))
                lengths[part] += len(text)
        val_start, digest = None, digests["train"]
        if started["val"]:
            out.write(separator)
            digest.update(joiner)
            val_start = lengths["train"] + len(spec.joiner)
            held_back.seek(0)
            shutil.copyfileobj(held_back, out)  # type: ignore[misc]
            digest.update(digests["val"].digest())  # the text, train then validation documents
    length = lengths["train"] + (len(spec.joiner) + lengths["val"] if started["val"] else 0)
    return {"length": length, "val_start": val_start, "sha256": digest.hexdigest()}


class _Collected:
    """A file-like sink that collects ids in memory, for encoding where the cache cannot be
    written."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.parts: list[np.ndarray] = []

    def write(self, data: bytes) -> None:
        self.parts.append(np.frombuffer(data, dtype=self.dtype).copy())

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.empty(0, self.dtype)
