"""What the user sees on stderr while charnn works: a Rich progress bar on a terminal, plain
log lines elsewhere (one per evaluation), nothing at all with --quiet."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from charnn.cli.common import flag
from charnn.training.events import Evaluated, Event, Notice, Saved, TrainResult
from charnn.training.events import Progress as StepProgress

BAR_TOTAL = 1000  # the bar's resolution: the run's fraction done, in thousandths


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainDisplay:
    """Turns training events into a progress bar (terminal) or log lines (pipe, file)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True)
        self.live = not quiet and sys.stderr.isatty()
        self.progress: Progress | None = None

    def __enter__(self) -> TrainDisplay:
        if self.live:
            self.progress = Progress(
                TextColumn("step {task.fields[step]}"),
                BarColumn(),
                TextColumn("loss {task.fields[loss]}  val {task.fields[val]} bits/char"),
                TextColumn("{task.fields[speed]} chars/s"),
                TextColumn("{task.fields[elapsed]} elapsed, {task.fields[remaining]} left"),
                console=self.console,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train",
                total=BAR_TOTAL,
                step=0,
                loss="-",
                val="-",
                speed="-",
                elapsed="0:00",
                remaining="-:--",
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def on_event(self, event: Event) -> None:
        if isinstance(event, StepProgress) and self.progress is not None:
            self.progress.update(
                self.task,
                completed=event.fraction * BAR_TOTAL,
                step=event.step,
                loss=f"{event.train_loss:.3f}",
                val="-" if event.val_bpc is None else f"{event.val_bpc:.3f}",
                speed=f"{event.chars_per_sec:,.0f}",
                elapsed=_clock(event.elapsed),
                remaining=_clock(event.remaining),
            )
        elif isinstance(event, Evaluated):
            if self.progress is not None:
                self.progress.update(self.task, val=f"{event.val_bpc:.3f}")
            mark = " (best)" if event.best else ""
            both = (
                ""
                if event.average_bpc is None
                else f" (live weights {event.live_bpc:.4f}, average {event.average_bpc:.4f})"
            )
            self.log(
                f"step {event.step}: train loss {event.train_loss:.4f} nats/char, "
                f"val {event.val_bpc:.4f} bits/char{both}{mark}, {_clock(event.elapsed)} elapsed"
            )
        elif isinstance(event, Notice):
            self.log(f"note: {event.render(flag)}")
        elif isinstance(event, Saved):
            pass  # summarised once at the end

    def finished(self, result: TrainResult, corpus: object) -> None:
        """`corpus`: the path, or paths, the run was started with (for the resume command)."""
        where = result.run_dir
        paths = corpus if isinstance(corpus, list | tuple) else [corpus]
        quoted = " ".join(shlex.quote(str(p)) for p in paths)
        if result.interrupted:
            if not result.steps:
                self.log("interrupted before the first step; nothing to save yet")
                return
            self.log(
                f"interrupted at step {result.steps}; saved {result.last_path}. Continue with:\n"
                f"  charnn train {quoted} --resume {shlex.quote(str(where))}"
            )
            return
        early = " (stopped early: no new best within --patience)" if result.stopped_early else ""
        self.log(
            f"done{early}: {result.steps} steps in {_clock(result.elapsed)}, best val "
            f"{result.best_val_bpc:.4f} bits/char; checkpoints in {where}/"
        )


class DownloadDisplay:
    """A download progress bar on a terminal; silence elsewhere."""

    def __init__(self, name: str, quiet: bool = False) -> None:
        self.name = name
        self.progress: Progress | None = None
        if not quiet and sys.stderr.isatty():
            self.progress = Progress(
                TextColumn(name),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> DownloadDisplay:
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task(self.name, total=None)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, received: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=received, total=total)


class ReadDisplay:
    """A bar for each text `charnn eval` reads, on a terminal only; it clears when done."""

    def __init__(self, quiet: bool = False) -> None:
        self.progress: Progress | None = None
        if not quiet and sys.stderr.isatty():
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
                redirect_stdout=False,  # stdout carries the results alone
                redirect_stderr=False,
            )
        self.task: TaskID | None = None

    def __enter__(self) -> ReadDisplay:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def reading(self, what: str) -> Callable[[float], None] | None:
        """A new bar for `what` in place of the last one, and the callback that moves it (None
        off a terminal)."""
        progress = self.progress
        if progress is None:
            return None
        if self.task is not None:
            progress.remove_task(self.task)
        task = self.task = progress.add_task(f"reading {what}", total=1.0)
        return lambda fraction: progress.update(task, completed=fraction)
