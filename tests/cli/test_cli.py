"""The real `charnn` command, end to end, in subprocesses."""

import json
import os

import pytest

from conftest import CHARNN, TINY, run_charnn


def assert_one_line_error(proc, code=1):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 if code == 1 else lines, proc.stderr
    return proc.stderr


@pytest.mark.slow
def test_train_sample_eval_end_to_end(trained):
    root, corpus, run = trained
    assert {"last.pt", "best.pt", "metrics.jsonl"} <= {p.name for p in run.iterdir()}

    proc = run_charnn(
        "sample",
        "--checkpoint-dir",
        str(root / "ck"),
        "--length",
        "80",
        "--prime",
        "Hello",
        "--seed",
        "7",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Hello") and len(proc.stdout) == len("Hello") + 80
    again = run_charnn(
        "sample", str(run / "best.pt"), "--length", "80", "--prime", "Hello", "--seed", "7"
    )
    assert again.stdout == proc.stdout  # same seed, same checkpoint, same text

    proc = run_charnn("eval", "--json", "--checkpoint-dir", str(root / "ck"), str(corpus))
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    result = json.loads(line)
    assert result["chars"] == 20_000 and result["unknown"] == 0
    assert 0 < result["bits_per_char"] < 8
    assert result["perplexity"] == pytest.approx(2 ** result["bits_per_char"], rel=1e-6)


def test_eval_on_the_validation_text_agrees_with_training(trained):
    root, corpus, run = trained
    text = corpus.read_text(encoding="utf-8")
    val = root / "val.txt"
    val.write_text(text[len(text) - int(len(text) * 0.1) :], encoding="utf-8")
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    proc = run_charnn("eval", "--json", str(run / "last.pt"), str(val))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["bits_per_char"] == pytest.approx(last["val_bpc"], abs=1e-6)


def test_eval_with_no_file_scores_the_models_own_validation_split(trained):
    root, _, run = trained
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    proc = run_charnn("eval", "--json", str(run / "last.pt"))  # a checkpoint and no FILE
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["split"] == "validation" and result["chars"] == 2_000  # 10% of 20,000
    assert result["bits_per_char"] == pytest.approx(last["val_bpc"], abs=1e-6)
    newest = run_charnn("eval", "--checkpoint-dir", str(root / "ck"))  # no argument at all
    assert newest.returncode == 0, newest.stderr
    assert "(validation" in newest.stdout  # the file column names the split
    assert f"{last['best_val_bpc']:.4f}" in newest.stdout  # best.pt, the newest run's best


def test_eval_reports_unknown_characters(trained, tmp_path):
    root, _, run = trained
    other = tmp_path / "other.txt"
    other.write_text("hello world ÆØÅ hello", encoding="utf-8")
    proc = run_charnn("eval", "--json", str(run), str(other))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["unknown"] == 3 and result["unknown_chars"] == "ÅÆØ"
    table = run_charnn("eval", str(run), str(other))
    assert "bits/char" in table.stdout and "outside the vocabulary" in table.stderr


def test_version_and_help_on_every_command():
    proc = run_charnn("--version")
    assert proc.returncode == 0 and "charnn" in proc.stdout
    for command in ([], ["train"], ["sample"], ["eval"], ["data"], ["data", "get"]):
        proc = run_charnn(*command, "-h")
        assert proc.returncode == 0 and "Usage:" in proc.stdout, command
    assert "default: 2;" in run_charnn("train", "--help").stdout  # defaults are shown


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "not found"),
        (b"", "empty"),
        (b"\n\n \n\n", "holds only whitespace"),
        (b"\x00\x01binary\x00", "binary"),
        (b"ok text \xfe\xff", "byte offset 8"),
        (b"ab", "too short"),
    ],
)
def test_bad_corpora_get_one_clear_line(tmp_path, content, needle):
    corpus = tmp_path / "c.txt"
    if content is not None:
        corpus.write_bytes(content)
    proc = run_charnn("train", str(corpus), "--checkpoint-dir", str(tmp_path / "ck"), *TINY)
    assert needle in assert_one_line_error(proc)
    assert not any((tmp_path / "ck").glob("*"))  # a failed run leaves no run folder behind


@pytest.mark.parametrize("shape", [["--hidden-size", "100000"], ["--layers", "1000000"]])
def test_a_model_too_big_for_memory_is_refused_before_it_is_built(tmp_path, corpus, shape):
    proc = run_charnn("train", str(corpus), "--checkpoint-dir", str(tmp_path / "ck"), *shape)
    error = assert_one_line_error(proc)
    assert "parameters: training it needs at least" in error and "--hidden-size" in error
    assert not any((tmp_path / "ck").glob("*"))


@pytest.mark.parametrize(
    "args", [["--lr", "-1"], ["--time-budget", "5x"], ["--cell", "transformer"], ["--layers", "0"]]
)
def test_impossible_options_are_usage_errors(corpus, args):
    proc = run_charnn("train", str(corpus), *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--lr", "inf"], ["train", "--dropout", "nan"], ["sample", "-t", "nan"],
        ["sample", "--top-p", "nan"], ["sample", "--seed", "-1"],
    ],
)  # fmt: skip
def test_non_finite_numbers_and_negative_seeds_are_usage_errors(corpus, args):
    """nan passes every range check by comparing false; numpy's generators take no -1."""
    from click.testing import CliRunner

    from charnn.cli import main

    command, *flags = args
    result = CliRunner().invoke(
        main, [command, *([str(corpus)] if command == "train" else []), *flags]
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for" in result.output


def test_no_checkpoint_found(tmp_path):
    proc = run_charnn("sample", "--checkpoint-dir", str(tmp_path))
    assert "no run found" in assert_one_line_error(proc)
    proc = run_charnn("sample", str(tmp_path / "missing.pt"))
    assert "not found" in assert_one_line_error(proc)


def test_a_folder_of_runs_given_as_the_run_says_what_to_pass(trained):
    root, _, _ = trained
    proc = run_charnn("eval", str(root / "ck"))  # the checkpoints folder, not a run in it
    assert f"such as {root / 'ck' / 'corpus-lstm'}" in assert_one_line_error(proc)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, corpus):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    proc = run_charnn("eval", str(bad), str(corpus))
    assert "corrupt" in assert_one_line_error(proc)
    notes = tmp_path / "notes.pt"  # text, named as checkpoints are: taken as the CHECKPOINT
    notes.write_text("hello text\n", encoding="utf-8")
    assert "not a checkpoint at all" in assert_one_line_error(run_charnn("eval", str(notes)))


def test_eval_shows_its_reading_on_a_terminal_only(trained):
    """stderr a pseudo-terminal, stdout a pipe: a bar on the terminal, clean JSON on stdout;
    --quiet leaves the terminal empty."""
    import pty
    import select
    import subprocess
    import time

    _, _, run = trained
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHARNN_", "TTY_", "NO_COLOR", "FORCE_COLOR"))}  # fmt: skip
    env.update(TERM="xterm", COLUMNS="120")  # a terminal Rich draws on, whatever runs the tests
    for quiet in ([], ["--quiet"]):
        main, child = pty.openpty()
        command = [*CHARNN, "eval", str(run), "--json", *quiet]
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=child, env=env)  # fmt: skip
        os.close(child)
        shown, deadline = b"", time.monotonic() + 120
        try:
            while time.monotonic() < deadline:  # read the terminal until the command closes it
                ready, _, _ = select.select([main], [], [], 1)
                if not ready:
                    continue
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # EIO: the other end closed
                    break
                if not chunk:
                    break
                shown += chunk
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
            os.close(main)
        assert proc.returncode == 0
        assert json.loads(out)["split"] == "validation"
        assert (b"reading the validation split" in shown) == (not quiet), shown


def test_a_failing_run_never_overwrites_a_saved_one(trained, tmp_path):
    root, corpus, run = trained
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    proc = run_charnn(
        "train",
        str(corpus),
        "--name",
        run.name,
        "--checkpoint-dir",
        str(run.parent),
        "--max-steps",
        "2",
        *TINY,
    )
    assert "already exists" in assert_one_line_error(proc)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.slow
def test_unnamed_runs_get_fresh_folders(tmp_path, corpus):
    ck = tmp_path / "ck"
    for _ in range(2):
        proc = run_charnn(
            "train", str(corpus), "--max-steps", "2", "--checkpoint-dir", str(ck), *TINY
        )
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in ck.iterdir()) == ["corpus-lstm", "corpus-lstm-2"]


@pytest.mark.slow
def test_log_lines_off_a_terminal(tmp_path, corpus):
    proc = run_charnn(
        "train",
        str(corpus),
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--checkpoint-dir",
        str(tmp_path),
        *TINY[:-1],
    )
    assert proc.returncode == 0 and proc.stdout == ""
    evals = [line for line in proc.stderr.splitlines() if "val" in line and "step" in line]
    assert len(evals) == 3  # steps 2 and 4, then the summary
    assert "\x1b[" not in proc.stderr  # no progress bar or colour codes in a log


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_corpus(tmp_path, corpus):
    corpus.chmod(0)
    proc = run_charnn("train", str(corpus), "--checkpoint-dir", str(tmp_path / "ck"))
    assert "permission denied" in assert_one_line_error(proc)


@pytest.mark.slow
@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_interrupt_saves_last_and_exits(tmp_path, corpus, signame, code):
    import signal
    import subprocess
    import time

    command = [
        *CHARNN,
        "train",
        str(corpus),
        "--time-budget",
        "1h",
        "--checkpoint-dir",
        str(tmp_path),
        "--name",
        "run",
        "--eval-every",
        "3",
        *TINY[:-1],
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "run" / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until it has trained (and evaluated) a few steps
    proc.send_signal(getattr(signal, signame))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "interrupted at step" in stderr and "Traceback" not in stderr
    assert f"--resume {tmp_path / 'run'}" in stderr  # the command that continues the run
    from charnn.checkpoints.loading import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "last.pt").step > 0


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from charnn.cli import main; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False"


def test_lr_decay_flag_reaches_the_run(tmp_path, corpus):
    proc = run_charnn("train", str(corpus), "--max-steps", "2", "--lr-decay", "cosine",
                      "--checkpoint-dir", str(tmp_path), "--name", "run", "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = json.loads(run_charnn("info", str(tmp_path / "run"), "--json").stdout)
    assert info["train_config"]["lr_decay"] == "cosine"
    bad = run_charnn("train", str(corpus), "--lr-decay", "step", "--checkpoint-dir", str(tmp_path))
    assert bad.returncode == 2 and "'step' is not one of 'linear', 'cosine'" in bad.stderr


@pytest.mark.slow
def test_a_time_budget_plans_the_model_unless_told(tmp_path, corpus):
    for extra, expected, decay in [
        ([], 128, 0.1),  # 2 steps train too few characters for more than the narrowest width
        (["--hidden-size", "48", "--weight-decay", "0"], 48, 0),
    ]:
        name = f"run{expected}"
        proc = run_charnn("train", str(corpus), "--time-budget", "5m", "--max-steps", "2",
                          "--checkpoint-dir", str(tmp_path), "--name", name, "--quiet",
                          *extra)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        info = run_charnn("info", str(tmp_path / name), "--json")
        described = json.loads(info.stdout)
        assert described["model_config"]["hidden_size"] == expected
        assert described["train_config"]["weight_decay"] == decay


def test_a_folder_that_cannot_be_made_or_a_name_that_leaves_it_is_one_line(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc def ghi\n" * 300, encoding="utf-8")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder", encoding="utf-8")
    for extra in (["--checkpoint-dir", str(blocked / "ck")], ["--name", "../escape"],
                  ["--name", ""], ["--seed", str(2**70)]):  # fmt: skip
        proc = run_charnn("train", str(corpus), "--max-steps", "2", *TINY, *extra, cwd=tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: ")
    assert not (tmp_path / "escape").exists() and blocked.read_text() == "not a folder"
