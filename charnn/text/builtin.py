"""Named corpora: one built from text every Python ships with, and well-known public downloads."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from charnn.errors import CharnnError
from charnn.fileio import atomic_write

ProgressCallback = Callable[[int, int | None], None]  # (bytes so far, total bytes if known)


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    url: str | None = None  # None: built from the local Python installation
    sha256: str | None = None
    size: int | None = None  # bytes


CORPORA = {
    c.name: c
    for c in [
        Corpus(
            "pydoc",
            "Python's reference topics from the standard library's pydoc_data (about 0.46 MB of "
            "English and code); built offline from this Python installation",
        ),
        Corpus(
            "tinyshakespeare",
            "about 40,000 lines of Shakespeare's plays, the classic char-rnn corpus",
            url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            size=1_115_394,
        ),
    ]
}


def pydoc_text() -> str:
    """The built-in corpus: every pydoc reference topic, in a stable order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip() for key in sorted(topics)) + "\n"


def get_corpus(
    name: str,
    data_dir: str | Path = "data",
    *,
    url: str | None = None,
    on_progress: ProgressCallback | None = None,
    timeout: float = 30.0,
) -> Path:
    """Write corpus `name` to `data_dir/NAME.txt` (downloading it if needed) and return the path."""
    corpus = CORPORA.get(name)
    if corpus is None:
        raise CharnnError(f"unknown corpus {name!r}: `charnn data list` shows {', '.join(CORPORA)}")
    target = Path(data_dir) / f"{name}.txt"
    if corpus.url is None:
        atomic_write(target, lambda out: out.write(pydoc_text().encode("utf-8")))
        return target
    if target.is_file() and _sha256(target.read_bytes()) == corpus.sha256:
        return target
    data = download(url or corpus.url, on_progress=on_progress, timeout=timeout)
    digest, expected = _sha256(data), corpus.sha256 or ""
    if digest != expected:
        raise CharnnError(
            f"{name} download has SHA-256 {digest[:16]}…, expected {expected[:16]}…: the "
            "file is damaged or not the right one; nothing was written"
        )
    atomic_write(target, lambda out: out.write(data))
    return target


def download(
    url: str, *, on_progress: ProgressCallback | None = None, timeout: float = 30.0
) -> bytes:
    """Fetch `url` into memory, reporting progress, with one clear error when it fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total_bytes = int(total) if total and total.isdigit() else None
            chunks, received = [], 0
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                received += len(chunk)
                if on_progress:
                    on_progress(received, total_bytes)
            return b"".join(chunks)
    except urllib.error.HTTPError as err:
        raise CharnnError(f"cannot download {url}: the server answered {err.code}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise CharnnError(
            f"cannot download {url} ({reason}): are you offline? Download the file by other "
            "means and pass its path to `charnn train`"
        ) from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
