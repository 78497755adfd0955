"""Encoded corpora on disk, read back with np.memmap, so the next run on the same text maps its
ids straight from disk and the operating system pages in only what training reads.

    ~/.cache/charnn/corpora/KEY.ids     the ids, raw little-endian integers
    ~/.cache/charnn/corpora/KEY.json    vocabulary, length, dtype, text SHA-256, files

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

CACHE_FORMAT = 2  # 2: a single file is read as a corpus of one document


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


def read_cached(key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The ids (memory-mapped) and their description, or None when missing or damaged (the
    corpus is then encoded again)."""
    folder = corpora_folder()
    meta_path, ids_path = folder / f"{key}.json", folder / f"{key}.ids"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT:
            return None
        dtype = np.dtype(meta["dtype"])
        if ids_path.stat().st_size != meta["length"] * dtype.itemsize:
            return None
        return np.memmap(ids_path, dtype=dtype, mode="r", shape=(meta["length"],)), meta
    except (OSError, ValueError, KeyError, TypeError, CharnnError):
        return None


def write_cached(key: str, write_ids: Callable[[BinaryIO], dict[str, Any]], meta: dict) -> None:
    """Write the ids with `write_ids(file)`, which returns the rest of their description, then
    the description; each atomically. Raises OSError where the folder cannot be written."""
    folder, described = corpora_folder(), {}

    def write(out: BinaryIO) -> None:
        described.update(write_ids(out))

    atomic_write(folder / f"{key}.ids", write)
    meta = {"format": CACHE_FORMAT, **meta, **described}
    atomic_write(folder / f"{key}.json", lambda out: out.write(json.dumps(meta).encode()))
