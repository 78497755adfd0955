"""Config files, environment variables, `charnn info` and shell completion."""

import json
import os
import subprocess

from charnn.config.model import CELLS

from conftest import CHARNN, run_charnn


def train_and_describe(tmp_path, corpus, *args, env=None):
    proc = run_charnn(
        "train",
        str(corpus),
        "--max-steps",
        "2",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
        "--name",
        "run",
        *args,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    described = run_charnn("info", str(tmp_path / "ck" / "run"), "--json")
    assert described.returncode == 0, described.stderr
    return json.loads(described.stdout)


def test_toml_config_with_flags_and_environment_on_top(tmp_path, corpus):
    config = tmp_path / "run.toml"
    config.write_text(
        'cell = "gru"\nhidden-size = 24\nlayers = 1\nembed-size = 8\nlr = 0.01\nquiet = true\n'
    )
    env = {**os.environ, "CHARNN_EMBED_SIZE": "6", "CHARNN_LR": "0.02"}
    info = train_and_describe(tmp_path, corpus, "--config", str(config), "--lr", "0.03", env=env)
    model = info["model_config"]
    assert (model["cell"], model["hidden_size"], model["layers"]) == ("gru", 24, 1)  # from TOML
    assert model["embed_size"] == 6  # the environment beats the file
    assert info["train_config"]["lr"] == 0.03  # a flag beats both


def test_config_errors_are_usage_errors(tmp_path, corpus):
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text("hiden-size = 3\n")
    proc = run_charnn("train", str(corpus), "--config", str(bad_key))
    assert proc.returncode == 2 and "hiden_size" in proc.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("cell = \n")
    proc = run_charnn("train", str(corpus), "--config", str(broken))
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text('layers = "many"\n')
    proc = run_charnn("train", str(corpus), "--config", str(wrong_type))
    assert proc.returncode == 2 and "layers" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_names_the_environment_variables():
    help_text = run_charnn("train", "--help").stdout
    for name in ("CHARNN_LR", "CHARNN_HIDDEN_SIZE", "CHARNN_TIME_BUDGET", "CHARNN_CONFIG"):
        assert name in help_text


def test_info_describes_a_run(trained):
    _, _, run = trained
    proc = run_charnn("info", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "lstm, 1x32" in proc.stdout and "vocabulary" in proc.stdout
    assert "val history" in proc.stdout  # two evaluations: a sparkline
    described = json.loads(run_charnn("info", str(run / "last.pt"), "--json").stdout)
    assert described["step"] == 30 and described["vocab_size"] == len(described["vocab"])
    assert len(described["val_bpc_history"]) == 2
    missing = run_charnn("info", str(run / "nope.pt"))
    assert missing.returncode == 1 and "not found" in missing.stderr


def complete(words: str, index: int) -> list[str]:
    env = {
        **os.environ,
        "_CHARNN_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(index),
    }
    proc = subprocess.run(CHARNN, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [line.split(",", 1)[1] for line in proc.stdout.splitlines()]


def test_bash_completion():
    assert "train" in complete("charnn tr", 1)
    assert complete("charnn train --hidden", 2) == ["--hidden-size"]
    assert set(complete("charnn train --cell ", 3)) == set(CELLS)
    script = subprocess.run(
        CHARNN,
        capture_output=True,
        text=True,
        env={**os.environ, "_CHARNN_COMPLETE": "bash_source"},
    ).stdout
    check = subprocess.run(
        ["bash", "-c", script + "\ncomplete -p charnn"], capture_output=True, text=True
    )
    assert check.returncode == 0 and "charnn" in check.stdout  # bash accepts the script
