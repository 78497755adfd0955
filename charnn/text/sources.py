"""Which files make a corpus, in what order, cut into which documents.

    charnn train a.txt b.txt notes/ --glob '*.md'

Files are taken in the order given; a folder stands for the files under it, walked recursively
and sorted by path, that match the glob (default: all), hidden files and folders left out, and
files that look binary (a NUL byte in their first 64 KiB) skipped with a note. Each file is one
document (a single file is a corpus of one document: its text, exactly), or with doc_per_line
each non-empty line is. Documents are joined by a separator
(a blank line between files, a newline between lines), so the model learns where one ends.

Everything here streams: a file is read in chunks and a line at a time, never whole.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from charnn.config.train import TrainConfig
from charnn.errors import CharnnError
from charnn.text.reading import check_readable, decoded_chunks, lines, looks_binary

FILE_SEPARATOR = "\n\n"
LINE_SEPARATOR = "\n"


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus as the user named it."""

    paths: tuple[str, ...]
    encoding: str = "utf-8"
    glob: str | None = None  # for folders: which files, by name (`*.py`)
    separator: str | None = None  # between documents; None: FILE_SEPARATOR or LINE_SEPARATOR
    doc_per_line: bool = False  # each line of a file is its own document

    @property
    def joiner(self) -> str:
        if self.separator is not None:
            return self.separator
        return LINE_SEPARATOR if self.doc_per_line else FILE_SEPARATOR

    @property
    def one_document(self) -> bool:
        """One plain file, read as it is: the corpus is exactly that file's text."""
        return len(self.paths) == 1 and not self.doc_per_line and not Path(self.paths[0]).is_dir()

    def files(self, on_notice: Callable[[str], None] | None = None) -> list[Path]:
        """Every file of the corpus, in order (see the module's docstring)."""
        found: list[Path] = []
        hidden = binary = 0
        for name in self.paths:
            path = Path(name)
            if not path.is_dir():
                check_readable(path, self.encoding)  # a file named explicitly must be text
                found.append(path)
                continue
            for candidate in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = candidate.relative_to(path).parts
                if any(part.startswith(".") for part in relative):
                    hidden += 1
                elif self.glob is None or fnmatch.fnmatch(candidate.name, self.glob):
                    if looks_binary(candidate):
                        binary += 1
                    else:
                        found.append(candidate)
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

    def documents(self, files: Sequence[Path]) -> Iterator[Iterator[str]]:
        """Each document's text, in pieces, in order."""
        for path in files:
            if self.doc_per_line:
                for line in lines(path, self.encoding):
                    if line.strip():
                        yield iter((line,))
            else:
                yield decoded_chunks(path, self.encoding)


def corpus_spec(config: TrainConfig) -> CorpusSpec:
    """The files and documents a run's `corpus` names."""
    return CorpusSpec(
        config.corpus_paths, config.encoding, config.glob, config.separator, config.doc_per_line
    )
