"""The README's and the manual's examples are run or parsed, so they cannot drift from what
charnn does: the Python example runs, the quickstart is two lines that pin torch first (CI runs
both), and every documented `charnn` command line names a real command with real flags whose
values convert."""

import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import click
import pytest

from charnn.cli import main
from charnn.text.builtin import get_corpus

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.slow
def test_python_example_runs(tmp_path):
    (block,) = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    get_corpus("pydoc", tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    sample, bits = proc.stdout[:200], proc.stdout[200:]  # 200 generated characters, then bpc
    assert len(sample) == 200 and 0 < float(bits.strip()) < 8
    assert (tmp_path / "checkpoints" / "pydoc-lstm" / "best.pt").is_file()


def test_quickstart_is_two_lines_pinning_torch_first():
    text = README.read_text(encoding="utf-8")
    quickstart = text[text.index("## Quickstart") :]
    block = re.search(r"```bash\n(.*?)```", quickstart, re.S).group(1)
    lines = block.strip().splitlines()
    assert len(lines) == 2
    for line in lines:  # torch is pinned before anything else is installed
        assert re.findall(r"pip install \S+", line)[0] == "pip install torch==2.13.0"
    assert "pytest" in lines[1] and "charnn train" in lines[0]


def documented_commands() -> list[tuple[str, str]]:
    """(page, line) for every `charnn ...` line of a code block, comments and pipes cut off."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            for line in block.splitlines():
                for command in re.split(r"&&|\|", line):
                    command = command.strip()
                    if command.startswith("charnn "):
                        words = shlex.split(command, comments=True)
                        found.append((page.name, shlex.join(words).split(" > ")[0]))
    return found


COMMANDS = documented_commands()


def test_the_manual_documents_every_command():
    named = {shlex.split(line)[1] for _, line in COMMANDS}
    assert named >= set(main.commands)


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{p}: {c}" for p, c in COMMANDS])
def test_a_documented_command_line_parses(page, line, tmp_path, monkeypatch):
    """Parsing converts every value and checks every flag, as running it would, without
    running it (a file it names need not exist: options that read one get an empty TOML)."""
    monkeypatch.chdir(tmp_path)
    words = [word for word in shlex.split(line)[1:] if word != ">"]
    for i, word in enumerate(words):
        if word == "--config" and i + 1 < len(words):
            Path(words[i + 1]).write_text("", encoding="utf-8")
    try:
        parse(words, page, line)
    except click.exceptions.Exit as done:  # --help, --version
        assert done.exit_code == 0


def parse(words: list[str], page: str, line: str) -> None:
    command: click.Command = main
    context = None
    while isinstance(command, click.Group):
        context = command.make_context(command.name or "charnn", words, parent=context)
        with warnings.catch_warnings():  # Click 8.2 moves the subcommand's words into args
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = [*context.protected_args, *context.args]
        if not rest:
            return  # a group on its own: its help
        name, *words = rest
        found = command.get_command(context, name)
        assert found is not None, f"{page}: no command {name!r} in {line!r}"
        command = found
    command.make_context(command.name or "", words, parent=context)


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces hyphens."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {anchor(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_and_anchor_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if fragment and linked.suffix == ".md":
            assert fragment in anchors(linked), f"{page.name}: no #{fragment} in {linked.name}"
