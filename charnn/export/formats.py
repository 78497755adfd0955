"""The formats `charnn export` writes, and writing one (each format's module is imported only
when it is written, so that the command line reads FORMATS without importing torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from charnn.checkpoints.loading import LoadedModel

FORMATS = ("html", "ml5", "hf", "onnx")


def export(loaded: LoadedModel, out: str | Path, format: str) -> Path:
    """Write `loaded` in `format` to `out`; returns the path written."""
    if format == "html":
        from charnn.export.web import export_html

        return export_html(loaded, out)
    if format == "ml5":
        from charnn.export.ml5 import export_ml5

        return export_ml5(loaded, out)
    if format == "hf":
        from charnn.export.hf import export_hf

        return export_hf(loaded, out)
    if format == "onnx":
        from charnn.export.onnx import export_onnx

        return export_onnx(loaded, out)
    raise ValueError(f"unknown export format {format!r}: {', '.join(FORMATS)}")
