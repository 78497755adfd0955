"""A model as one web page: the weights, the JavaScript stepper and a small form, in one file.

The page needs no network and no server (it works opened from disk): the weights are float32 in
one base64 string inside the page, and stepper.js (shipped beside this module, the file the tests
run under Node) generates in the page itself.
"""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from charnn.checkpoints.loading import LoadedModel
from charnn.nn.cells import SPECS, mogrifier_names


def read_asset(name: str) -> str:
    return resources.files("charnn.export").joinpath(name).read_text(encoding="utf-8")


def model_json(loaded: LoadedModel) -> dict[str, Any]:
    """What stepper.js loads: the shape, the cell's gate order, the names of each layer's
    mogrifier rounds (none for other cells), and every tensor by name."""
    model = loaded.model
    config = model.config
    spec = SPECS[config.cell]
    tensors: dict[str, list[Any]] = {}
    chunks, offset = [], 0
    for name, tensor in model.state_dict().items():
        name = name.removeprefix("rnn.")
        values = tensor.detach().cpu().float().numpy().astype("<f4").ravel()
        tensors[name] = [offset, list(tensor.shape)]
        chunks.append(values)
        offset += values.size
    return {
        "format": "charnn-web-1",
        "cell": config.cell,
        "layers": config.layers,
        "hidden": model.hidden_size,
        "embed": config.embed_size,
        "vocab": loaded.vocab.chars,
        "gates": list(spec.gates),
        "peepholes": list(spec.peepholes),
        "rounds": [mogrifier_names(spec, config.mogrifier_rounds, k) for k in range(config.layers)],
        "labels": list(loaded.labels),
        "labelSize": config.label_size if loaded.labels else 0,
        "tensors": tensors,
        "data": base64.b64encode(np.concatenate(chunks).tobytes()).decode("ascii"),
    }


def script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element: with no "<" at all, no "</script>" can end
    it early and no "<!--" or "<script" can change how the page around it is parsed."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def page(loaded: LoadedModel) -> str:
    """The self-contained page, as text."""
    name = loaded.name
    config = loaded.model.config
    described = f"{config.cell}, {config.layers}×{loaded.model.hidden_size}, step {loaded.step}"
    replacements = {
        "{{TITLE}}": html.escape(name),
        "{{DESCRIPTION}}": html.escape(described),
        "{{STEPPER}}": read_asset("stepper.js"),
        "{{MODEL}}": script_json(model_json(loaded)),
    }
    assert "</script" not in replacements["{{STEPPER}}"]  # it sits inside a <script> element
    text = read_asset("page.html")
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text


def export_html(loaded: LoadedModel, out: str | Path) -> Path:
    """Write the page to `out` (a file; a folder gets MODEL.html inside it)."""
    out = Path(out)
    if out.is_dir():
        out = out / f"{loaded.name}.html"
    out.write_text(page(loaded), encoding="utf-8")
    return out
