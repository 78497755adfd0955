"""`charnn list` and `charnn info`: what runs exist and what a checkpoint holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from charnn.cli.common import CONTEXT, print_table
from charnn.config.model import ModelSpec
from charnn.config.train import TrainConfig


@click.command("list", context_settings=CONTEXT)
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=TrainConfig.checkpoint_dir,
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run on stdout.")
def list_command(checkpoint_dir: Path, as_json: bool) -> None:
    """The runs under --checkpoint-dir, newest first."""
    from charnn.checkpoints.summary import list_runs

    runs = list_runs(checkpoint_dir)
    if as_json:
        for run in runs:
            sys.stdout.write(json.dumps(run, ensure_ascii=False) + "\n")
        return
    if not runs:
        click.echo(f"no runs under {checkpoint_dir}/", err=True)
        return
    from rich.table import Table

    table = Table()
    for column in ("run", "cell", "size", "params", "steps", "best val bpc", "corpus", "modified"):
        table.add_column(column, justify="right" if column in ("params", "steps") else "left")
    for r in runs:
        if "error" in r:
            table.add_row(r["name"], "[red]unreadable[/red]", "", "", "", "", r["error"], "")
            continue
        bpc = "-" if r["best_val_bpc"] is None else f"{r['best_val_bpc']:.4f}"
        table.add_row(
            r["name"],
            r["cell"],
            f"{r['layers']}x{r['hidden_size']}",
            f"{r['parameters']:,}",
            f"{r['steps']:,}",
            bpc,
            str(r["corpus"]),
            r["modified"].replace("T", " "),
        )
    print_table(table)


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def info(checkpoint: Path, as_json: bool) -> None:
    """Describe CHECKPOINT (a .pt file or run folder): configs, vocabulary, metrics."""
    from charnn.checkpoints.summary import describe_checkpoint

    described = describe_checkpoint(checkpoint)
    if as_json:
        sys.stdout.write(json.dumps(described, ensure_ascii=False) + "\n")
        return
    metrics = described["metrics"]
    shape = ModelSpec.from_dict(described["model_config"])
    lines = [
        f"checkpoint   {described['path']}",
        f"charnn       {described['charnn_version']} (format {described['format_version']})",
        f"model        {shape.cell}, {shape.layers}x{shape.hidden_size}, embed "
        f"{shape.embed_size}, dropout {shape.dropout} ({shape.decoder_dropout:g} before the "
        "decoder)",
        f"parameters   {described['parameters']:,}",
        f"vocabulary   {described['vocab_size']} characters: {described['vocab']!r}",
        f"step         {described['step']:,}",
    ]
    for key in ("val_bpc", "best_val_bpc", "train_loss", "elapsed"):
        if metrics.get(key) is not None:
            lines.append(f"{key:12} {metrics[key]:.4f}")
    if metrics.get("average_val_bpc") is not None:
        lines.append(f"weights      {described['weights']} (live weights "
                     f"{metrics['live_val_bpc']:.4f}, their average "
                     f"{metrics['average_val_bpc']:.4f})")  # fmt: skip
    labels = described.get("labels") or {}
    if labels:
        total = sum(count or 0 for count in labels.values()) or 1
        shares = ", ".join(
            name if count is None else f"{name} {count / total:.1%}"
            for name, count in labels.items()
        )
        lines.append(f"labels       {len(labels)} and any: {shares}")
    files = described.get("corpus_files") or []
    if files:
        shown = ", ".join(path for path, _ in files[:5]) + (" ..." if len(files) > 5 else "")
        lines.append(f"corpus files {len(files)}: {shown}")
    plan = described.get("plan")
    if plan and plan.get("chosen"):
        chosen = ", ".join(f"{k} {v}" for k, v in plan["chosen"].items())
        lines.append(f"plan         {chosen} (for {plan['why']})")
    again = (plan or {}).get("replanned") or {}
    if again.get("changed"):
        changed = ", ".join(f"{k} {v}" for k, v in again["changed"].items())
        lines.append(f"re-planned   {changed} (at step {again['step']}, for {again['passes']:.1f} "
                     f"passes at the measured {again['chars_per_sec']:,.0f} chars/s)")  # fmt: skip
    history = described.get("val_bpc_history") or []
    if len(history) > 1:
        lines.append(f"val history  {_sparkline(history)}  {history[0]:.3f} -> {history[-1]:.3f}")
    lines.append("training config:")
    config = dict(described["train_config"])
    config.pop("model", None)
    lines += [f"  {key:15} {value}" for key, value in config.items()]
    click.echo("\n".join(lines))


def _sparkline(values: list[float]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(bars[round((v - low) / span * (len(bars) - 1))] for v in values)
