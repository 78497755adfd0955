"""A model as a folder to share on the Hugging Face Hub (checkpoints.hf), with its model card:
YAML front matter the Hub reads (library, tags, the validation bits/char) and a body that says
what the model is, what it was trained on (the files' names, sizes and SHA-256, never the text)
and how to sample from it."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

from charnn.checkpoints import hf
from charnn.checkpoints.loading import LoadedModel
from charnn.checkpoints.summary import describe_checkpoint
from charnn.errors import CharnnError


def export_hf(loaded: LoadedModel, out: str | Path) -> Path:
    """Write the folder `out`: model.safetensors, config.json and README.md."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise CharnnError(f"{folder} is a file: a shared model is a folder, give a folder's path")
    described = describe_checkpoint(loaded.path)
    counts = described.get("labels") or {}  # for `charnn info`: {name: characters}
    payload = {
        **{name: described.get(name) for name in hf.KEPT},
        "labels": list(loaded.labels),  # as the model reads them: label k + 1 is labels[k]
        "label_chars": {name: n for name, n in counts.items() if n is not None},
        "model_state": loaded.model.state_dict(),
        "corpus_sha256": loaded.corpus_sha256,
        "corpus_files": corpus_files(described, loaded),
    }
    hf.write_folder(payload, folder, model_card(loaded, payload, folder.name))
    return folder


def corpus_files(described: dict[str, Any], loaded: LoadedModel) -> list[dict[str, Any]]:
    """Each training file's name, SHA-256 and size in bytes (where the file is still there, as
    it was), never its text."""
    pairs = described.get("corpus_files") or [
        [path, None] for path in loaded.train_config.corpus_paths if path
    ]
    files = []
    for path, sha in pairs:
        size = None
        file = Path(path)
        if file.is_file() and sha is not None and _sha256(file) == sha:
            size = file.stat().st_size
        files.append({"name": file.name, "bytes": size, "sha256": sha})
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_card(loaded: LoadedModel, payload: dict[str, Any], name: str) -> str:
    config = loaded.model.config
    best = (payload.get("metrics") or {}).get("best_val_bpc")
    front = {
        "library_name": "charnn",
        "pipeline_tag": "text-generation",
        "tags": ["charnn", "character-level", "rnn", config.cell],
    }
    lines = ["---", *(f"{key}: {_yaml(value)}" for key, value in front.items())]
    if isinstance(best, int | float):
        result = {
            "task": {"type": "text-generation"},
            "metrics": [
                {"type": "bits-per-character", "name": "validation bits/char", "value": best}
            ],
        }
        lines.append(f"model-index: {_yaml([{'name': name, 'results': [result]}])}")
    lines += ["---", "", f"# {name}", ""]
    lines.append(
        f"A character-level {config.cell} language model trained with "
        f"[charnn](https://pypi.org/project/charnn/): {config.layers} layers of "
        f"{config.hidden_size} units, a vocabulary of {len(loaded.vocab)} characters, "
        f"{payload.get('step', 0):,} training steps"
        + (f", {best:.4f} bits per character on its validation split." if best else ".")
    )
    # the example primes with "The " only where the model knows those characters, and writes
    # in the first label of a conditioned model
    known = all(char in loaded.vocab.chars for char in "The ")
    flags = (" --prime 'The '" if known else "") + (
        f" --label {shlex.quote(loaded.labels[0])}" if loaded.labels else "")  # fmt: skip
    options = (', prime="The "' if known else "") + (
        f", label={loaded.labels[0]!r}" if loaded.labels else "")  # fmt: skip
    if loaded.labels:
        lines += ["", "Labels (`--label NAME`, or a mix such as `a=0.7,b=0.3`): "
                  + ", ".join(f"`{label}`" for label in loaded.labels) + "."]  # fmt: skip
    lines += ["", "## Use", "", "```bash", "pip install torch==2.13.0 charnn",
              f"charnn sample {name} --length 500{flags}", "```", "", "```python",
              "import charnn", f'model = charnn.load("{name}")',
              f'print("".join(charnn.sample(model, 500{options})))', "```", "",
              "## Training data", "", "| file | bytes | SHA-256 |", "|---|---|---|"]  # fmt: skip
    for file in payload["corpus_files"]:
        size = "" if file["bytes"] is None else f"{file['bytes']:,}"
        lines.append(f"| {file['name']} | {size} | {file['sha256'] or ''} |")
    lines += ["", "The files themselves are not part of this model.", ""]
    return "\n".join(lines)


def _yaml(value: Any) -> str:
    """A value in YAML's flow style, which JSON is a part of."""
    return json.dumps(value, ensure_ascii=False)
