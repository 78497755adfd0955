"""Tables keep their content: piped, they take the full width; in a narrow terminal, long cells
fold onto more lines instead of being cut short."""

import os
import re
import subprocess
import sys

from rich.table import Table

from charnn.cli.common import print_table

from conftest import CHARNN, run_charnn

LONG = "a-run-with-a-name-much-longer-than-any-column-of-an-eighty-column-terminal-allows"


def test_a_piped_list_shows_every_name_and_corpus_whole(trained, tmp_path):
    root, corpus, run = trained
    long_run = tmp_path / "ck" / LONG
    long_run.mkdir(parents=True)
    (long_run / "best.pt").write_bytes((run / "best.pt").read_bytes())
    proc = run_charnn("list", "--checkpoint-dir", str(tmp_path / "ck"))
    assert proc.returncode == 0, proc.stderr
    assert LONG in proc.stdout and str(corpus) in proc.stdout
    assert "…" not in proc.stdout


def test_a_table_into_a_reader_that_has_gone_ends_quietly_with_0(trained):
    root, _, _ = trained
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
    proc = subprocess.Popen([*CHARNN, "list", "--checkpoint-dir", str(root / "ck")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line
    assert proc.wait(timeout=120) == 0 and proc.stderr.read() == b""


def test_a_piped_evaluation_keeps_every_cell_in_80_columns(trained):
    root, corpus, run = trained
    proc = run_charnn("eval", str(run), str(corpus), columns=80)
    assert proc.returncode == 0, proc.stderr
    assert str(corpus) in proc.stdout and "…" not in proc.stdout


def test_the_dynamic_columns_keep_every_cell_in_a_pipe(capsys, monkeypatch):
    from charnn.cli.evaluate import _print_results
    from charnn.evaluation.dynamic import DynamicResult, DynamicSettings
    from charnn.evaluation.evaluator import EvalResult

    monkeypatch.setenv("COLUMNS", "80")
    result = EvalResult(f"/data/{LONG}.txt", 123_456, 123_455, 0, "", 1.1, 1.587, 3.0)
    adapted = DynamicResult(1.4321, DynamicSettings(0.003, 0.001), 12.5, 30.25)
    loaded = type("Loaded", (), {"path": f"/checkpoints/{LONG}/best.pt"})()
    _print_results(loaded, [(result, adapted)], dynamic=True)
    shown = capsys.readouterr().out
    assert "…" not in shown and LONG in shown.replace("\n", "")
    for cell in ("123,456", "1.5870", "1.4321", "0.003", "12.5 (+30.2 tuning)"):
        assert cell in shown


def test_in_a_narrow_terminal_a_long_cell_folds(monkeypatch, capsys):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "40")
    table = Table()
    table.add_column("run")
    table.add_column("steps")
    table.add_row(LONG, "1,000")
    print_table(table)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # no colours
    assert "…" not in shown
    assert max(len(line) for line in shown.splitlines()) <= 40
    folded = "".join(line.strip("│┃ ").split("│")[0].strip() for line in shown.splitlines())
    assert LONG in folded.replace("1,000", "")
