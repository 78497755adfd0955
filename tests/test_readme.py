"""The README's examples are run, so they cannot drift from what charnn does."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from charnn.text.builtin import get_corpus

README = Path(__file__).resolve().parent.parent / "README.md"


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
    assert "pytest" in lines[1]
