"""Training curves from a run's metrics.jsonl, drawn with matplotlib (an optional extra)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from charnn.checkpoints.folder import METRICS_LOG, read_metrics_log
from charnn.errors import CharnnError
from charnn.fileio import atomic_write


def read_metrics(run_dir: Path) -> list[dict]:
    if not (run_dir / METRICS_LOG).is_file():
        raise CharnnError(
            f"{run_dir} has no {METRICS_LOG}: give a run folder that charnn train made"
        )
    records = read_metrics_log(run_dir)
    if not records:
        raise CharnnError(f"{run_dir / METRICS_LOG} holds no measurements yet: train a while more")
    return records


def plot_curves(run_dir: str | Path, out: str | Path) -> Path:
    """Train and validation bits/char against step and against training time, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        from matplotlib import pyplot as plt
    except ImportError:
        raise CharnnError(
            "charnn plot needs matplotlib: pip install 'charnn[plot]' (or pip install matplotlib)"
        ) from None
    run_dir, out = Path(run_dir), Path(out)
    lines = read_metrics(run_dir)
    train = [m for m in lines if m.get("train_loss") is not None]
    val = [m for m in lines if m.get("evaluated", True) and m.get("val_bpc") is not None]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, label in ((axes[0], "step", "step"), (axes[1], "elapsed", "minutes trained")):
        scale = 60.0 if key == "elapsed" else 1.0
        ax.plot(
            [m[key] / scale for m in train],
            [m["train_loss"] / math.log(2) for m in train],
            label="train",
            alpha=0.7,
        )
        ax.plot([m[key] / scale for m in val], [m["val_bpc"] for m in val], "o-", label="val")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("bits/char")
    axes[0].legend()
    figure.suptitle(run_dir.name)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write(out, lambda handle: handle.write(buffer.getvalue()))
    return out
