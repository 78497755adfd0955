"""Reading text files: one clear line for anything that is not text, and bytes decoded in
chunks, so that no file is ever held whole as bytes and text at once."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from pathlib import Path

from charnn.errors import CharnnError, SettingError, literal

CHUNK_BYTES = 8 << 20  # bytes read and decoded at a time
SNIFF_BYTES = 65536  # read to tell text from binary
BOM = "\ufeff"


def check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise SettingError(
            f"unknown {{encoding}} {literal(repr(encoding))}: try utf-8 or latin-1"
        ) from None


def check_readable(path: Path, encoding: str, what: str = "corpus") -> None:
    """Fail with one clear line if `path` is missing, unreadable, empty or binary; `what` the
    file is to the user (a corpus, a prime file) names it."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise CharnnError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise CharnnError(f"{path} is a folder: give the path of a text file") from None
    except PermissionError:
        raise CharnnError(f"cannot read {path}: permission denied") from None
    except OSError as err:
        raise CharnnError(f"cannot read {path}: {err.strerror or err}") from None
    check_encoding(encoding)
    if not head:
        raise CharnnError(f"{path} is empty: a {what} needs some text")
    if b"\x00" in head and not encoding.lower().replace("-", "").startswith("utf16"):
        raise CharnnError(f"{path} looks like a binary file (it contains NUL bytes), not text")


def looks_binary(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return b"\x00" in handle.read(SNIFF_BYTES)
    except OSError:
        return True  # unreadable: not something to train on


def decode(chunks: Iterable[bytes], source: str, encoding: str = "utf-8") -> Iterator[str]:
    """Bytes, in chunks, as text: a leading BOM dropped, a bad byte named by its offset."""
    check_encoding(encoding)
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, first = 0, True
    for chunk in _and_end(chunks):
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as err:
            buffered = len(err.object) - len(chunk)  # bytes the decoder held back before
            raise SettingError(
                f"{literal(source)} is not valid {literal(encoding)}: bad byte "
                f"0x{err.object[err.start]:02x} at byte offset {offset - buffered + err.start}; "
                "convert the file or pass {encoding} (for example latin-1)"
            ) from None
        if first and text:
            text, first = text.removeprefix(BOM), False
        if text:
            yield text
        offset += len(chunk)


def _and_end(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks, then an empty one that tells the decoder the input has ended."""
    for chunk in chunks:
        if chunk:
            yield chunk
    yield b""


def file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def decoded_chunks(path: Path, encoding: str) -> Iterator[str]:
    """The file's text in pieces (see `decode`)."""
    return decode(file_chunks(path), str(path), encoding)


def lines(path: Path, encoding: str) -> Iterator[str]:
    """The file's lines without their line ends ("\\n" or "\\r\\n"), streamed."""
    rest = ""
    for text in decoded_chunks(path, encoding):
        pieces = (rest + text).split("\n")
        rest = pieces.pop()
        for piece in pieces:
            yield piece.removesuffix("\r")
    if rest:
        yield rest.removesuffix("\r")


def read_text(path: str | Path, encoding: str = "utf-8", what: str = "corpus") -> str:
    """A whole text file, for a text small enough to hold (a file to evaluate on, a prime); a
    file that is not usable text is named as `what` it is to the user in one clear line."""
    path = Path(path)
    check_readable(path, encoding, what)
    text = "".join(decoded_chunks(path, encoding))
    if not text.strip():
        raise CharnnError(f"{path} holds only whitespace: a {what} needs some text")
    return text


read_corpus = read_text  # the name the Python API has always had
