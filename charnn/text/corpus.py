"""A corpus as ids: one streaming reader for one file or many, cached on disk.

A corpus is encoded once. Its documents (a single file is one) are streamed in chunks, never
held whole as a Python string: the vocabulary is collected in a first pass and the ids written
in a second, as uint8, uint16 or uint32 by vocabulary size, into the cache (text.cache), which
the next run maps straight from disk. The validation split is stored after the training text:
- with many documents, whole documents from all over the corpus (every round(1 / val_frac)-th);
- in a labelled corpus, of every label: of many documents, every round(1 / val_frac)-th of
  its own; of fewer, its last documents, at least val_frac of its text; of one, or where those
  fall short, the last val_frac of its text, cut inside a document (two characters at least
  where it has four); so that every label is measured;
- otherwise the last val_frac of the text.
A labelled corpus also stores each character's label, 1 and up in the order the labels first
appear (0 is the "any" label a model learns besides them); a separator takes the label of the
document it ends.
"""

from __future__ import annotations

import codecs
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from charnn.errors import CharnnError, SettingError, literal
from charnn.text import cache
from charnn.text.reading import file_chunks
from charnn.text.sources import CorpusSpec, Source
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
    labels: tuple[str, ...] = ()  # a labelled corpus's labels: label k + 1 is labels[k]
    label_ids: np.ndarray | None = None  # (n,) each character's label, 0: "any" (none here)

    def label_chars(self) -> dict[str, int]:
        """Each label's share of the text, in characters."""
        if self.label_ids is None:
            return {}
        counts = np.bincount(np.asarray(self.label_ids), minlength=len(self.labels) + 1)
        return {name: int(counts[k + 1]) for k, name in enumerate(self.labels)}

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
    digests = tuple((str(f.path), _bytes_digest(f.path)) for f in files)
    key = _key(spec, files, digests, val_frac)
    found = _cached(key)
    if found is not None:
        return found
    scan = _scan(spec, files)
    split = _Split.plan(scan, val_frac)
    labelled = spec.label_from is not None

    def write(out: BinaryIO, labels_out: BinaryIO | None) -> dict[str, Any]:
        return _write(spec, files, scan, split, out, labels_out)

    label_dtype = id_dtype(len(scan.labels) + 1).str if labelled else None
    described = {"vocab": scan.vocab.chars, "dtype": id_dtype(len(scan.vocab)).str,
                 "files": digests, "documents": scan.documents, "labels": scan.labels,
                 "label_dtype": label_dtype}  # fmt: skip
    try:
        cache.write_cached(key, write, described, labelled)
    except OSError as err:  # no cache then: encode into memory
        if on_notice is not None:
            on_notice(f"cannot write the corpus cache in {cache.corpora_folder()} "
                      f"({err.strerror}); encoding in memory (set CHARNN_CACHE_DIR to a "
                      "writable folder)")  # fmt: skip
        ids = _Collected(id_dtype(len(scan.vocab)))
        labels = _Collected(id_dtype(len(scan.labels) + 1)) if labelled else None
        written = write(ids, labels)  # type: ignore[arg-type]
        return EncodedCorpus(ids.array(), scan.vocab, written["sha256"], None,
                             written["val_start"], digests, scan.documents, tuple(scan.labels),
                             labels.array() if labels else None)  # fmt: skip
    found = _cached(key)
    assert found is not None, "the cache was just written"
    return found


def _cached(key: str) -> EncodedCorpus | None:
    """The corpus the cache holds under `key`, or None (missing or damaged: encode again)."""
    cached = cache.read_cached(key)
    if cached is None:
        return None
    ids, label_ids, meta = cached
    try:
        files = tuple((str(path), str(sha)) for path, sha in meta.get("files", ()))
        return EncodedCorpus(ids, Vocab(meta["vocab"]), meta["sha256"],
                             cache.corpora_folder() / f"{key}.ids", meta.get("val_start"),
                             files, meta.get("documents", 1), tuple(meta.get("labels") or ()),
                             label_ids)  # fmt: skip
    except (CharnnError, KeyError, TypeError, ValueError):
        return None


def _bytes_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def _key(
    spec: CorpusSpec, files: list[Source], digests: tuple[tuple[str, str], ...], val_frac: float
) -> str:
    """What decides the ids, and nothing else: not where the files are, nor the validation
    share where it cannot cut whole documents (a few files, each its own document). Rows are
    read as CSV or as JSONL by the file's suffix."""
    cuts_documents = spec.doc_per_line or spec.by_row or len(digests) >= MANY_DOCUMENTS
    labelled = spec.label_from is not None
    kinds = [f.path.suffix.lower() for f in files] if spec.by_row else []
    return cache.key_of([codecs.lookup(spec.encoding).name, spec.joiner, str(spec.doc_per_line),
                         str(spec.one_document), repr(val_frac) if cuts_documents or labelled
                         else "", str(spec.label_from), spec.text_field, spec.label_field,
                         *(str(f.label) for f in files), *kinds,
                         *(sha for _, sha in digests)])  # fmt: skip


@dataclass
class _Scan:
    """The first pass: the vocabulary, how many documents, and each label's documents'
    lengths in characters (labels in the order they first appear)."""

    vocab: Vocab
    documents: int
    labels: list[str] = field(default_factory=list)
    lengths: dict[str, list[int]] = field(default_factory=dict)


def _scan(spec: CorpusSpec, files: list[Source]) -> _Scan:
    """First pass: the vocabulary (with the separator's characters, unless the corpus is one
    plain file, which nothing joins), the documents, and each label's documents' lengths."""
    seen = np.zeros(UNICODE, dtype=bool)
    documents = 0
    lengths: dict[str, list[int]] = {}
    for document in spec.documents(files):
        documents += 1
        size = 0
        for text in document.text:
            seen[code_points(text)] = True
            size += len(text)
        if document.label is not None:
            lengths.setdefault(document.label, []).append(size)
    if not spec.one_document:
        seen[code_points(spec.joiner)] = True
    chars = np.flatnonzero(seen).astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
    if not documents:
        raise CharnnError(f"{', '.join(spec.paths)} holds no text: a corpus needs some")
    if not chars.strip():
        names = ", ".join(spec.paths)
        raise CharnnError(f"{names} holds only whitespace: a corpus needs some text")
    for label, sizes in lengths.items():
        _check_label(label, spec)
        if not any(sizes):
            raise SettingError(
                f"{literal(', '.join(spec.paths))}: the label {literal(repr(label))} (from "
                f"{{label_from}} {spec.label_from}) has no text, its documents are empty: give "
                "it some text, or remove it"
            )
    if spec.label_from is not None and len(lengths) < 2:
        raise SettingError(
            f"{', '.join(spec.paths)} gives {len(lengths)} label with {{label_from}} "
            f"{spec.label_from}: a labelled corpus needs two or more"
        )
    return _Scan(Vocab(chars), documents, list(lengths), lengths)


def _check_label(name: str, spec: CorpusSpec) -> None:
    """Refuse a label that could be trained on but never asked for by name."""
    why = None
    if name == "any":
        why = 'it is the name of the built-in label for text of no label, "any"'
    elif "," in name or "=" in name:
        why = '"," and "=" write a mix of labels, such as poems=0.7,letters=0.3'
    elif name != name.strip():
        why = "it starts or ends with whitespace"
    elif not name:
        why = "it is empty"
    if why is not None:
        raise SettingError(
            f"{literal(', '.join(spec.paths))}: the label {literal(repr(name))} (from "
            f"{{label_from}} {spec.label_from}) could never be asked for, as {literal(why)}: "
            "rename it"
        )


@dataclass(frozen=True)
class _Split:
    """Which documents go to validation: every `every`-th (many unlabelled documents); of each
    label, every `every`-th of its own (a label of many), those from `first_val[label]` on, or
    its text from its `cut[label]`-th character on; none: the text's tail (val_start None)."""

    every: int | None = None
    spread: frozenset[str] = frozenset()  # the labels of many documents
    first_val: dict[str, int] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)

    @classmethod
    def plan(cls, scan: _Scan, val_frac: float) -> _Split:
        every = max(2, round(1 / val_frac))
        if not scan.labels:
            return cls(every=every if scan.documents >= MANY_DOCUMENTS else None)
        first_val, cut = {}, {}
        # held out from all over a label, as from an unlabelled corpus (the same documents
        # where each label before holds a multiple of `every`: benchmarks compare the two)
        spread = frozenset(label for label, lengths in scan.lengths.items()
                           if len(lengths) >= MANY_DOCUMENTS)  # fmt: skip
        for label, lengths in scan.lengths.items():
            if label in spread:
                continue
            total, held, start = sum(lengths), 0, len(lengths)
            while start > 1 and held < val_frac * total:
                start -= 1
                held += lengths[start]
            if len(lengths) > 1 and held >= val_frac * total:
                first_val[label] = start
                continue
            # one document, or last ones too short to hold val_frac: the label's last val_frac,
            # cut inside a document; two characters at least, the fewest a score can be of,
            # where two stay to train
            cut[label] = total - max(int(total * val_frac), 2 if total >= 4 else 0)
        return cls(every if spread else None, spread, first_val, cut)


class _Part:
    """The training or the validation part: where its ids, labels and text's hash go."""

    def __init__(self, ids: BinaryIO, labels: BinaryIO | None) -> None:
        self.ids, self.labels = ids, labels
        self.digest, self.length, self.started = hashlib.sha256(), 0, False
        self.tag: np.ndarray | None = None  # the label of the document written last

    def open(self, separator: bytes, joiner: str, tag: np.ndarray | None) -> None:
        """A document starts here: after the first, the separator ends the one before."""
        if self.started:
            self.write(separator, joiner, self.tag)
        self.started, self.tag = True, tag

    def write(self, ids: bytes, text: str, tag: np.ndarray | None) -> None:
        self.ids.write(ids)
        if self.labels is not None and tag is not None:
            self.labels.write(np.repeat(tag, len(text)).tobytes())
        self.digest.update(text.encode("utf-8", "surrogatepass"))
        self.length += len(text)


def _write(
    spec: CorpusSpec,
    files: list[Source],
    scan: _Scan,
    split: _Split,
    out: BinaryIO,
    labels_out: BinaryIO | None,
) -> dict[str, Any]:
    """Second pass: the ids (and labels) of the training text, then of the validation text
    (see _Split). Returns the length, where validation starts and the text's SHA-256."""
    table = np.zeros(UNICODE, dtype=id_dtype(len(scan.vocab)))
    table[code_points(scan.vocab.chars)] = np.arange(len(scan.vocab))
    label_dtype = id_dtype(len(scan.labels) + 1)
    separator, joiner = table[code_points(spec.joiner)].tobytes(), spec.joiner
    with tempfile.TemporaryFile() as held_ids, tempfile.TemporaryFile() as held_labels:
        train = _Part(out, labels_out)
        val = _Part(held_ids, held_labels if labels_out is not None else None)
        seen: dict[str, int] = {}  # documents of each label so far
        label_chars: dict[str | None, int] = {}  # and their characters
        for index, document in enumerate(spec.documents(files)):
            label = document.label
            tag = None if label is None else np.array([scan.labels.index(label) + 1], label_dtype)
            number = index
            if label is not None:
                number = seen[label] = seen.get(label, -1) + 1
            cut = split.cut.get(label) if label is not None else None
            written = label_chars.get(label, 0)  # this label's characters before the document
            past_cut = cut is not None and written >= cut
            part = val if past_cut or _in_validation(split, label, number, index) else train
            part.open(separator, joiner, tag)
            for text in document.text:
                if cut is None or written + len(text) <= cut:
                    part.write(table[code_points(text)].tobytes(), text, tag)
                else:  # the label's text from the cut on is validation
                    keep = max(0, cut - written)
                    if keep:
                        part.write(table[code_points(text[:keep])].tobytes(), text[:keep], tag)
                    if part is train:
                        part = val
                        part.open(separator, joiner, tag)
                    part.write(table[code_points(text[keep:])].tobytes(), text[keep:], tag)
                written += len(text)
            label_chars[label] = written
        val_start, digest = None, train.digest
        if val.started:
            train.write(separator, joiner, train.tag)
            val_start = train.length
            for held, sink in ((held_ids, out), (held_labels, labels_out)):
                if sink is not None:
                    held.seek(0)
                    shutil.copyfileobj(held, sink)  # type: ignore[misc]
            digest.update(val.digest.digest())  # the text, train then validation documents
    return {"length": train.length + val.length, "val_start": val_start,
            "sha256": digest.hexdigest()}  # fmt: skip


def _in_validation(split: _Split, label: str | None, number: int, index: int) -> bool:
    """Whether a document goes to validation (see _Split); `number` counts its label's."""
    if label is None:
        return split.every is not None and index % split.every == split.every - 1
    if label in split.spread:
        return number % split.every == split.every - 1  # type: ignore[operator]
    return label in split.first_val and number >= split.first_val[label]


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
