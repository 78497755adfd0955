"""Write the corpora bench/quality.py was measured on (bench/RESULTS.md), from text this machine
already holds: no download.

    python bench/make_corpora.py OUT_DIR

- stdlib_code.txt: the Python standard library's own source (tests and idlelib left out), files
  in sorted order joined by blank lines, up to 9 MB: code.
- ru_messages.txt: the Russian translations in the system's gettext catalogs
  (/usr/share/locale/ru/LC_MESSAGES/*.mo), one message per paragraph: a non-Latin text.
- ja_messages.txt: the Japanese translations in the same catalogs, the same way: a CJK text with
  a vocabulary of over a thousand characters.
- vim_manual_small.txt: the first 100,000 characters of Vim's user manual
  (/usr/share/vim/*/doc/usr_*.txt): a small corpus.

tinyshakespeare and pydoc come from `charnn data get NAME`. A source this machine lacks is
skipped with a note on stderr.
"""

from __future__ import annotations

import argparse
import gettext
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

CODE_CHARS = 9_000_000
SMALL_CHARS = 100_000


def stdlib_code() -> str:
    root = sysconfig.get_paths()["stdlib"]
    skipped = ("/test", "idlelib", "site-packages")  # test, tests, test_*.py
    files = sorted(
        str(p) for p in Path(root).rglob("*.py") if not any(s in str(p) for s in skipped)
    )
    parts, size = [], 0
    for path in files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text)
        if size > CODE_CHARS:
            break
    return "\n\n".join(parts)


def russian_messages() -> str:
    return "\n\n".join(translations("ru", first_letter=0x400))


def japanese_messages() -> str:
    return "\n\n".join(translations("ja", first_letter=0x3000))


def translations(locale: str, first_letter: int) -> Iterator[str]:
    """The system's gettext translations into `locale`, one message each, where letters from
    U+`first_letter` on make up over a quarter of the non-space characters (untranslated and
    mostly-Latin messages left out)."""
    for path in sorted(Path(f"/usr/share/locale/{locale}/LC_MESSAGES").glob("*.mo")):
        try:
            with path.open("rb") as file:
                catalog = gettext.GNUTranslations(file)._catalog  # type: ignore[attr-defined]
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        for text in catalog.values():
            if isinstance(text, str) and len(text) > 20:
                letters = sum(c.isalpha() and ord(c) >= first_letter for c in text)
                if letters > 0.25 * len(text.replace(" ", "")):
                    yield text.strip()


def vim_manual() -> str:
    files = sorted(Path("/usr/share/vim").glob("vim*/doc/usr_*.txt"))
    text = "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    return text[:SMALL_CHARS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, make in (("stdlib_code", stdlib_code), ("ru_messages", russian_messages),
                       ("ja_messages", japanese_messages),
                       ("vim_manual_small", vim_manual)):  # fmt: skip
        text = make()
        if not text:
            print(f"{name}: no source text on this machine, skipped", file=sys.stderr)
            continue
        path = args.out_dir / f"{name}.txt"
        path.write_text(text, encoding="utf-8")
        print(f"{path}: {len(text):,} characters, {len(set(text))} distinct")


if __name__ == "__main__":
    main()
