"""The training loop: truncated BPTT over contiguous streams, AdamW, clipping, evaluation, saving.

The loop never prints. It reports what happens as events (`Progress`, `Evaluated`, `Saved`,
`Notice`) through a callback, and the CLI turns them into a progress bar or log lines.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from charnn.checkpoint import BEST, LAST, make_payload, save_atomic
from charnn.config import TrainConfig
from charnn.data import TrainStreams, fit_shape, split_train_val
from charnn.errors import CharnnError
from charnn.evaluator import bits_per_char
from charnn.model import CharRNN, State, detach_state
from charnn.vocab import Vocab, read_corpus

DEFAULT_EPOCHS = 10  # when no --max-steps, --epochs or --time-budget is given
WARMUP = 0.02  # fraction of training spent raising the learning rate from zero
PROGRESS_INTERVAL = 0.25  # seconds between Progress events


@dataclass(frozen=True)
class Progress:
    step: int
    fraction: float  # of the whole run, by steps or by time budget
    train_loss: float  # mean nats/char since the previous Progress event
    lr: float
    chars_per_sec: float
    elapsed: float
    remaining: float | None
    val_bpc: float | None  # the latest evaluation, if any


@dataclass(frozen=True)
class Evaluated:
    step: int
    train_loss: float
    val_bpc: float
    best: bool
    elapsed: float


@dataclass(frozen=True)
class Saved:
    path: Path


@dataclass(frozen=True)
class Notice:
    message: str


Event = Progress | Evaluated | Saved | Notice


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path | None
    steps: int
    best_val_bpc: float
    final_val_bpc: float
    elapsed: float
    interrupted: bool

    @property
    def best_path(self) -> Path | None:
        return self.run_dir / BEST if self.run_dir else None

    @property
    def last_path(self) -> Path | None:
        return self.run_dir / LAST if self.run_dir else None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharnnError("--device cuda asked for, but PyTorch sees no CUDA GPU: use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CharnnError("--device mps asked for, but this machine has no MPS: use --device cpu")
    return torch.device(name)


def lr_at(fraction: float, peak: float) -> float:
    """Linear warm-up, then a cosine decay to zero at the end of the run."""
    if fraction < WARMUP:
        return peak * fraction / WARMUP
    decay = (min(fraction, 1.0) - WARMUP) / (1.0 - WARMUP)
    return peak * 0.5 * (1.0 + math.cos(math.pi * decay))


def loss_on(model: CharRNN, inputs: torch.Tensor, targets: torch.Tensor, state: State | None):
    """Mean cross-entropy (nats/char) of one window, and the state after it."""
    logits, state = model(inputs, state)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return loss, state


class Trainer:
    """Trains one model on already-encoded ids; `run_dir=None` keeps everything in memory."""

    def __init__(
        self,
        config: TrainConfig,
        vocab: Vocab,
        train_ids: np.ndarray,
        val_ids: np.ndarray,
        run_dir: Path | None = None,
        on_event: Callable[[Event], None] | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.vocab = vocab
        self.val_ids = val_ids
        self.run_dir = run_dir
        self.emit = on_event or (lambda event: None)
        self.stop_requested = stop_requested or (lambda: False)
        self.device = resolve_device(config.device)

        torch.manual_seed(config.seed)
        model_config = replace(config.model, vocab_size=len(vocab))
        self.model = CharRNN(model_config).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )

        shape = fit_shape(len(train_ids), config.batch_size, config.seq_len)
        if (shape.batch_size, shape.seq_len) != (config.batch_size, config.seq_len):
            self.emit(
                Notice(
                    f"training split has {len(train_ids)} characters: using --batch-size "
                    f"{shape.batch_size} --seq-len {shape.seq_len} so that it fills one window"
                )
            )
        self.streams = TrainStreams(train_ids, shape)
        self.total_steps = self._total_steps()
        self.step = 0
        self.best_val_bpc = math.inf
        self.last_val_bpc = math.nan

    def _total_steps(self) -> int | None:
        """Steps to run, or None when only the time budget decides."""
        c = self.config
        limits = []
        if c.max_steps is not None:
            limits.append(c.max_steps)
        if c.epochs is not None:
            limits.append(max(1, round(c.epochs * self.streams.windows_per_pass)))
        if not limits and c.time_budget is None:
            limits.append(DEFAULT_EPOCHS * self.streams.windows_per_pass)
        return min(limits) if limits else None

    def _fraction(self, elapsed: float) -> float:
        """How far through the run we are: the further of steps done and time used."""
        fractions = [0.0]
        if self.total_steps is not None:
            fractions.append(self.step / self.total_steps)
        if self.config.time_budget is not None:
            fractions.append(elapsed / self.config.time_budget)
        return max(fractions)

    def run(self) -> TrainResult:
        model, streams, config = self.model, self.streams, self.config
        start = time.perf_counter()
        last_report, chars_since, loss_sum, losses = start, 0, torch.zeros(()), 0
        train_loss = math.nan
        window, state = 0, None
        interrupted = False
        model.train()
        while (fraction := self._fraction(time.perf_counter() - start)) < 1.0:
            if self.stop_requested():
                interrupted = True
                break
            if window == streams.windows_per_pass:  # a new pass starts from a zero state
                window, state = 0, None
            inputs, targets = (t.to(self.device, non_blocking=True) for t in streams.window(window))
            lr = lr_at(fraction, config.lr)
            for group in self.optimizer.param_groups:
                group["lr"] = lr

            loss, state = loss_on(model, inputs, targets, state)
            state = detach_state(state)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            self.optimizer.step()

            window += 1
            self.step += 1
            loss_sum += loss.detach().cpu()
            losses += 1
            chars_since += streams.chars_per_window
            now = time.perf_counter()
            if now - last_report >= PROGRESS_INTERVAL or self.step == self.total_steps:
                train_loss = self._check_finite(float(loss_sum) / losses)
                elapsed = now - start
                fraction = self._fraction(elapsed)
                self.emit(
                    Progress(
                        step=self.step,
                        fraction=min(fraction, 1.0),
                        train_loss=train_loss,
                        lr=lr,
                        chars_per_sec=chars_since / (now - last_report),
                        elapsed=elapsed,
                        remaining=elapsed / fraction * (1 - fraction) if fraction > 0 else None,
                        val_bpc=None if math.isnan(self.last_val_bpc) else self.last_val_bpc,
                    )
                )
                last_report, chars_since, loss_sum, losses = now, 0, torch.zeros(()), 0
            if self.step % config.eval_every == 0:
                if losses:
                    train_loss = self._check_finite(float(loss_sum) / losses)
                self._evaluate_and_save(train_loss, time.perf_counter() - start)

        if losses:
            train_loss = self._check_finite(float(loss_sum) / losses)
        elapsed = time.perf_counter() - start
        if interrupted:  # save at once; the user is waiting
            if self.step > 0:
                self._save(self._metrics(train_loss, self.last_val_bpc, elapsed), best=False)
        elif self.step % config.eval_every != 0 or self.step == 0:
            self._evaluate_and_save(train_loss, elapsed)
        return TrainResult(
            run_dir=self.run_dir,
            steps=self.step,
            best_val_bpc=self.best_val_bpc,
            final_val_bpc=self.last_val_bpc,
            elapsed=time.perf_counter() - start,
            interrupted=interrupted,
        )

    def _check_finite(self, loss: float) -> float:
        if not math.isfinite(loss):
            raise CharnnError(
                f"training diverged at step {self.step} (loss is {loss}); the checkpoints "
                "already saved are kept; try a lower --lr or a smaller --clip"
            )
        return loss

    def _evaluate_and_save(self, train_loss: float, elapsed: float) -> None:
        val_bpc = bits_per_char(self.model, self.val_ids, self.device)
        self.model.train()
        best = val_bpc < self.best_val_bpc
        self.last_val_bpc = val_bpc
        self.best_val_bpc = min(self.best_val_bpc, val_bpc)
        self.emit(Evaluated(self.step, train_loss, val_bpc, best, elapsed))
        self._save(self._metrics(train_loss, val_bpc, elapsed), best)

    def _metrics(self, train_loss: float, val_bpc: float, elapsed: float) -> dict[str, Any]:
        def known(value: float) -> float | None:  # JSON has no NaN or infinity
            return value if math.isfinite(value) else None

        return {
            "train_loss": known(train_loss),
            "val_bpc": known(val_bpc),
            "best_val_bpc": known(self.best_val_bpc),
            "elapsed": elapsed,
            "batch_size": self.streams.shape.batch_size,
            "seq_len": self.streams.shape.seq_len,
        }

    def _save(self, metrics: dict[str, Any], best: bool) -> None:
        """Append the metrics line, then write last.pt (and best.pt on a new best)."""
        if self.run_dir is None:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps({"step": self.step, **metrics}) + "\n")
        payload = make_payload(
            self.model, self.vocab, self.config, self.optimizer.state_dict(), self.step, metrics
        )
        save_atomic(payload, self.run_dir / LAST)
        self.emit(Saved(self.run_dir / LAST))
        if best:
            save_atomic(payload, self.run_dir / BEST)
            self.emit(Saved(self.run_dir / BEST))


def claim_run_dir(config: TrainConfig, corpus_path: Path) -> Path:
    """Create this run's folder, never reusing one that already holds a run."""
    root = Path(config.checkpoint_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CharnnError(f"cannot create checkpoint folder {root}: {err.strerror}") from None
    if config.name is not None:
        run_dir = root / config.name
        try:
            run_dir.mkdir()
        except FileExistsError:
            if any(run_dir.iterdir()):
                raise CharnnError(
                    f"run folder {run_dir} already exists: choose another --name, or leave "
                    "--name out to get a fresh folder"
                ) from None
        return run_dir
    base = f"{corpus_path.stem}-{config.model.cell}"
    for index in range(1, 10_000):
        run_dir = root / (base if index == 1 else f"{base}-{index}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise CharnnError(f"too many runs named {base} under {root}: pass --name")


def train(
    config: TrainConfig,
    on_event: Callable[[Event], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a model on `config.corpus` and keep its checkpoints in a fresh run folder."""
    corpus_path = Path(config.corpus)
    text = read_corpus(corpus_path, config.encoding)
    vocab = Vocab.from_text(text)
    train_ids, val_ids = split_train_val(vocab.encode(text), config.val_frac)
    resolve_device(config.device)  # fail on a bad device before creating any folder
    run_dir = claim_run_dir(config, corpus_path)
    try:
        trainer = Trainer(config, vocab, train_ids, val_ids, run_dir, on_event, stop_requested)
        return trainer.run()
    finally:
        if not any(run_dir.iterdir()):  # a run that failed before saving leaves nothing behind
            run_dir.rmdir()
