"""Encoded corpora on disk, read back with np.memmap, so the next run on the same text maps its
ids straight from disk and the operating system pages in only what training reads.

    ~/.cache/charnn/corpora/KEY.ids     the ids, raw little-endian integers
    ~/.cache/charnn/corpora/KEY.labels  a labelled corpus's label of every character, alike
    ~/.cache/charnn/corpora/KEY.json    vocabulary, length, dtypes, text SHA-256, files, labels

The folder is $CHARNN_CACHE_DIR, else $XDG_CACHE_HOME/charnn, else ~/.cache/charnn; anything
in it may be deleted at any time. The key is a hash of what decides the ids: the files' bytes,
the encoding and how documents are cut and joined, never where the files are.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from charnn.errors import CharnnError
from charnn.fileio import atomic_write

# 2: a single file is read as a corpus of one document; 3: labels; 4: a label of many documents
# holds out documents from all over it
CACHE_FORMAT = 4


def cache_root() -> Path:
    if os.environ.get("CHARNN_CACHE_DIR"):
        return Path(os.environ["CHARNN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charnn"


def corpora_folder() -> Path:
    return cache_root() / "corpora"


def key_of(parts: list[str]) -> str:
    """A cache key from the text of what decides the ids."""
    joined = "\0".join([f"charnn-corpus-{CACHE_FORMAT}", *parts])
    return hashlib.sha256(joined.encode()).hexdigest()[:32]


def read_cached(key: str) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]] | None:
    """The ids and, for a labelled corpus, the labels (memory-mapped) and their description, or
    None when missing or damaged (the corpus is then encoded again)."""
    folder = corpora_folder()
    try:
        meta = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT:
            return None
        ids = _mapped(folder / f"{key}.ids", meta["dtype"], meta["length"])
        labels = meta.get("label_dtype")
        labelled = _mapped(folder / f"{key}.labels", labels, meta["length"]) if labels else None
        return ids, labelled, meta
    except (OSError, ValueError, KeyError, TypeError, CharnnError):
        return None


def _mapped(path: Path, dtype_text: str, length: int) -> np.ndarray:
    dtype = np.dtype(dtype_text)
    if path.stat().st_size != length * dtype.itemsize:
        raise ValueError(f"{path} is not {length} {dtype_text}")  # damaged: encode again
    return np.memmap(path, dtype=dtype, mode="r", shape=(length,))


Writer = Callable[[BinaryIO, BinaryIO | None], dict[str, Any]]


def write_cached(key: str, write: Writer, meta: dict[str, Any], labelled: bool) -> None:
    """Write the ids (and a labelled corpus's labels) with `write(ids_file, labels_file)`, which
    returns the rest of their description, then the description; each atomically. Raises
    OSError where the folder cannot be written."""
    folder, described = corpora_folder(), {}

    def write_ids(out: BinaryIO) -> None:
        if not labelled:
            described.update(write(out, None))
            return
        atomic_write(folder / f"{key}.labels", lambda labels: described.update(write(out, labels)))

    atomic_write(folder / f"{key}.ids", write_ids)
    meta = {"format": CACHE_FORMAT, **meta, **described}
    atomic_write(folder / f"{key}.json", lambda out: out.write(json.dumps(meta).encode()))
