"""Which files make a corpus, in what order, cut into which documents, with which labels.

    charnn train a.txt b.txt notes/ --glob '*.md'
    charnn train styles/ --label-from folder          # styles/poems/..., styles/letters/...
    charnn train tweets.jsonl --label-from field --text-field body --label-field account

Files are taken in the order given; a folder stands for the files under it, walked recursively
and sorted by path, that match the glob (default: all), hidden files and folders left out, and
files that look binary (a NUL byte in their first 64 KiB) skipped with a note. Each file is one
document (a single file is a corpus of one document: its text, exactly), or with doc_per_line
each non-empty line is, or with label_from "field" each row of a JSONL or CSV file is. Documents
are joined by a separator (a blank line between files, a newline between lines), so the model
learns where one ends.

A labelled corpus gives each document a label: the first folder under the corpus folder that
holds its file ("folder"), the file's name ("file"), or the row's label field ("field").

Everything here streams: a file is read in chunks and a line at a time, never whole.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from charnn.config.train import TrainConfig
from charnn.errors import CharnnError, SettingError, literal
from charnn.text.reading import check_readable, decoded_chunks, lines, looks_binary

FILE_SEPARATOR = "\n\n"
LINE_SEPARATOR = "\n"
TABLES = (".jsonl", ".csv")  # the files label_from "field" reads, one row a document
MAX_FIELD = 2**31 - 1  # a CSV field (a document) of any size, not csv's 128 KiB; a C long


@dataclass(frozen=True)
class Source:
    """One file of a corpus, and its documents' label where it gives them all one."""

    path: Path
    label: str | None = None


@dataclass(frozen=True)
class Document:
    label: str | None
    text: Iterator[str]  # in pieces


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus as the user named it."""

    paths: tuple[str, ...]
    encoding: str = "utf-8"
    glob: str | None = None  # for folders: which files, by name (`*.py`)
    separator: str | None = None  # between documents; None: FILE_SEPARATOR or LINE_SEPARATOR
    doc_per_line: bool = False  # each line of a file is its own document
    label_from: str | None = None  # "folder", "file" or "field"; None: no labels
    text_field: str = "text"
    label_field: str = "label"

    @property
    def joiner(self) -> str:
        if self.separator is not None:
            return self.separator
        return LINE_SEPARATOR if self.doc_per_line or self.by_row else FILE_SEPARATOR

    @property
    def by_row(self) -> bool:
        return self.label_from == "field"

    @property
    def one_document(self) -> bool:
        """One plain file, read as it is: the corpus is exactly that file's text."""
        plain = not self.doc_per_line and self.label_from is None
        return len(self.paths) == 1 and plain and not Path(self.paths[0]).is_dir()

    def files(self, on_notice: Callable[[str], None] | None = None) -> list[Source]:
        """Every file of the corpus, in order (see the module's docstring)."""
        found: list[Source] = []
        hidden = binary = 0
        for name in self.paths:
            path = Path(name)
            if not path.is_dir():
                check_readable(path, self.encoding)  # a file named explicitly must be text
                found.append(self._source(path, path.parent))
                continue
            for candidate in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = candidate.relative_to(path).parts
                if any(part.startswith(".") for part in relative):
                    hidden += 1
                elif self.glob is None or fnmatch.fnmatch(candidate.name, self.glob):
                    if looks_binary(candidate):
                        binary += 1
                    else:
                        found.append(self._source(candidate, path))
        if on_notice is not None and (hidden or binary):
            what = [f"{hidden} hidden" if hidden else "", f"{binary} binary" if binary else ""]
            on_notice(f"skipped {' and '.join(w for w in what if w)} file(s) in the folders given")
        if not found:
            pattern = f" matching {self.glob!r}" if self.glob else ""
            raise CharnnError(
                f"no text files{pattern} in {', '.join(self.paths)}: name files or folders "
                "that hold text"
            )
        return found

    def _source(self, path: Path, root: Path) -> Source:
        if self.label_from == "file":
            return Source(path, path.stem)
        if self.label_from == "field" and path.suffix.lower() not in TABLES:
            raise SettingError(
                f"{literal(path)} is not a JSONL or CSV file: {{label_from}} field reads the "
                "rows of .jsonl and .csv files"
            )
        if self.label_from == "folder":
            parts = path.relative_to(root).parts
            if len(parts) < 2:
                raise SettingError(
                    f"{literal(path)} is in no folder under {literal(root)}: with {{label_from}} "
                    "folder each file's label is the first folder under the corpus folder"
                )
            return Source(path, parts[0])
        return Source(path)

    def documents(self, files: list[Source]) -> Iterator[Document]:
        """Each document, its label and its text in pieces, in order."""
        for source in files:
            if self.by_row:
                yield from self._rows(source.path)
            elif self.doc_per_line:
                for line in lines(source.path, self.encoding):
                    if line.strip():
                        yield Document(source.label, iter((line,)))
            else:
                yield Document(source.label, decoded_chunks(source.path, self.encoding))

    def _rows(self, path: Path) -> Iterator[Document]:
        """The rows of a JSONL or CSV file, each a document (rows with no text left out)."""
        fields = (self.text_field, self.label_field)
        for number, row in _table(path, self.encoding):
            label = row.get(self.label_field)
            if isinstance(label, (bool, int, float)):  # JSON's 0, 1.5, true: ids as labels
                row = {**row, self.label_field: json.dumps(label)}
            missing = [name for name in fields if not isinstance(row.get(name), str)]
            if missing:
                raise SettingError(
                    f"{literal(path)} row {number} has no {literal(repr(missing[0]))} field of "
                    "text: name the fields with {text_field} and {label_field}"
                )
            if row[self.text_field].strip():
                yield Document(row[self.label_field], iter((row[self.text_field],)))


def _table(path: Path, encoding: str) -> Iterator[tuple[int, dict]]:
    """(row number from 1, row) of a JSONL or CSV file."""
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(path, encoding)
        return
    for number, line in enumerate(lines(path, encoding), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CharnnError(f"{path} row {number} is not valid JSON ({err})") from None
        yield number, row if isinstance(row, dict) else {}


def _csv_rows(path: Path, encoding: str) -> Iterator[tuple[int, dict]]:
    """(row number from 1, row) of a CSV file, each problem one line naming the file and the
    row (or the line, for a byte that does not decode)."""
    csv.field_size_limit(MAX_FIELD)
    utf8 = codecs.lookup(encoding).name == "utf-8"  # utf_8, UTF8: a BOM is no character
    number = 0
    with open(path, encoding="utf-8-sig" if utf8 else encoding, newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            for number, row in enumerate(reader, start=1):
                yield number, row
        except UnicodeDecodeError as err:  # text is decoded a block at a time: find the line
            where = literal(_bad_line(path, encoding, err))
            raise SettingError(f"{literal(path)} {where}; convert the file or pass {{encoding}} "
                               "(for example latin-1)") from None  # fmt: skip
        except csv.Error as err:
            raise CharnnError(f"{path} row {number + 1} is not valid CSV ({err})") from None


def _bad_line(path: Path, encoding: str, err: UnicodeDecodeError) -> str:
    """Which line of `path` first fails to decode, and its bad byte."""
    decoder = codecs.getincrementaldecoder(encoding)()
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as bad:
                byte = bad.object[bad.start]
                return f"line {number} is not valid {encoding}: bad byte 0x{byte:02x}"
    return f"is not valid {encoding} ({err.reason})"


def corpus_spec(config: TrainConfig) -> CorpusSpec:
    """The files and documents a run's `corpus` names."""
    return CorpusSpec(config.corpus_paths, config.encoding, config.glob, config.separator,
                      config.doc_per_line, config.label_from, config.text_field,
                      config.label_field)  # fmt: skip
