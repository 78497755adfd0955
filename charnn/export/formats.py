"""`charnn export`: a trained model for use outside charnn.

- charnn.export.web: one self-contained HTML page that generates in the browser, with the
  JavaScript stepper stepper.js (every cell);
- charnn.export.ml5: the folder ml5.js's charRNN loads (2-layer LSTM and cifg models).
"""

from __future__ import annotations

from pathlib import Path

from charnn.checkpoints.loading import LoadedModel

FORMATS = ("html", "ml5")


def export(loaded: LoadedModel, out: str | Path, format: str) -> Path:
    """Write `loaded` in `format` ("html" or "ml5") to `out`; returns the path written."""
    if format == "html":
        from charnn.export.web import export_html

        return export_html(loaded, out)
    if format == "ml5":
        from charnn.export.ml5 import export_ml5

        return export_ml5(loaded, out)
    raise ValueError(f"unknown export format {format!r}: {', '.join(FORMATS)}")
