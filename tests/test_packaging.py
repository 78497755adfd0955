"""The wheel and sdist build, and the wheel alone gives a working charnn in a fresh venv."""

import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*command, **kwargs):
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT, timeout=600)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")

    names = zipfile.ZipFile(wheel).namelist()
    assert "charnn/py.typed" in names and "charnn/cli/train.py" in names
    assert not [n for n in names if n.endswith((".pt", ".txt")) and "dist-info" not in n]
    assert not [n for n in names if n.startswith(("data/", "checkpoints/", "tests/"))]
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    top = [m.split("/", 1)[1] for m in members if "/" in m]  # below the sdist's own folder
    assert not [m for m in top if m.startswith("checkpoints/") and not m.endswith(".gitkeep")]
    assert not [m for m in top if m.startswith("data/") and not m.endswith("README.md")]

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = env_dir / "bin" / "pip"
    run(pip, "install", "-q", "torch==2.13.0", timeout=600)  # first, as the README says
    run(pip, "install", "-q", wheel, timeout=600)
    charnn = env_dir / "bin" / "charnn"
    assert "charnn" in run(charnn, "--version").stdout
    run(charnn, "data", "get", "pydoc", "--data-dir", tmp_path / "data")
    run(
        charnn,
        "train",
        tmp_path / "data" / "pydoc.txt",
        "--max-steps",
        "3",
        "--hidden-size",
        "16",
        "--checkpoint-dir",
        tmp_path / "ck",
        "--quiet",
        timeout=300,
    )
    sample = run(charnn, "sample", "--checkpoint-dir", tmp_path / "ck", "--length", "20")
    assert len(sample.stdout) == 20


@pytest.mark.slow
def test_pipx_installs_charnn_as_a_tool_in_a_folder_of_its_own(tmp_path):
    """`pipx install` as the README shows it: torch pinned first, the extras named."""
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin")}
    run(sys.executable, "-m", "pipx", "install", "--preinstall", "torch==2.13.0",
        f"{ROOT}[serve]", env=env, timeout=900)  # fmt: skip
    charnn = tmp_path / "bin" / "charnn"
    assert "charnn" in run(charnn, "--version").stdout
    imported = run(charnn.resolve().parent / "python", "-c",
                   "import charnn; print(charnn.__file__)", cwd=tmp_path).stdout  # fmt: skip
    assert str(tmp_path / "pipx") in imported  # its own copy, not this checkout
    run(charnn, "data", "get", "pydoc", "--data-dir", tmp_path / "data")
    run(charnn, "train", tmp_path / "data" / "pydoc.txt", "--max-steps", "2", "--hidden-size",
        "16", "--checkpoint-dir", tmp_path / "ck", "--quiet", timeout=300)  # fmt: skip
    venv_python = charnn.resolve().parent / "python"
    run(venv_python, "-c", "import uvicorn, starlette")  # the extra came along
