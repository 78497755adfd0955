"""The training loop: truncated BPTT over contiguous streams, AdamW, clipping, evaluation, saving.

The loop never prints. It reports what happens as events (training.events) through a callback,
and the CLI turns them into a progress bar or log lines. Around it: training.prepare prepares the
run (resume or start, settings planned, folder claimed), training.length sets its length and
learning rate, checkpoints.folder owns the run folder's files, training.distributed keeps
torchrun ranks agreed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from charnn.checkpoints.folder import RunWriter
from charnn.checkpoints.format import clone_tensors, make_payload, to_cpu
from charnn.config.train import TrainConfig, decided
from charnn.errors import CharnnError
from charnn.evaluation.evaluator import stream_bounds, stream_nats
from charnn.fileio import LAST, LOCK
from charnn.nn.devices import (
    adamw,
    autocast,
    check_fits,
    check_precision,
    cpu_has_native_bf16,
    precision_problem,
    resolve_device,
    use_threads,
)
from charnn.nn.model import CharRNN, State, count_parameters, detach_state
from charnn.text.corpus import load_corpus
from charnn.text.vocab import Vocab
from charnn.training.calibrate import calibrate
from charnn.training.distributed import Ranks, process_group
from charnn.training.events import Evaluated, Event, Notice, Progress, Saved, TrainResult
from charnn.training.length import Schedule
from charnn.training.plan import REPLAN_AT, Facts, replan
from charnn.training.prepare import PreparedRun, prepare_run, run_lock
from charnn.training.state import capture_rng, restore_rng
from charnn.training.streams import TrainStreams, fit_shape, split_train_val

PROGRESS_INTERVAL = 0.25  # seconds between Progress events


def loss_on(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, state: State | None
) -> tuple[torch.Tensor, State]:
    """Mean cross-entropy (nats/char) of one window, and the state after it (`model` is a
    CharRNN, or one wrapped in DistributedDataParallel)."""
    logits, state = model(inputs, state)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return loss, state


def _as_tuple(state: State) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def native_bf16_on(device: torch.device, cell: str) -> bool:
    """Whether bf16 autocast pays for `cell` on `device`: a CPU that multiplies bf16, and has
    the cell's kernel in it."""
    native = device.type == "cpu" and cpu_has_native_bf16()
    return native and precision_problem(device, "bf16", cell) is None


class _LossMeter:
    """The mean training loss and chars/s since the last Progress event."""

    def __init__(self) -> None:
        self.since = time.perf_counter()
        self.total, self.count, self.chars = 0.0, 0, 0
        self.last_mean = math.nan  # the latest mean reported, for evaluations between reports

    def add(self, loss: float, chars: int) -> None:
        self.total, self.count, self.chars = self.total + loss, self.count + 1, self.chars + chars

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else self.last_mean

    def take(self, now: float) -> tuple[float, float]:
        """(mean loss, chars/s) since the last take; starts the next interval."""
        mean, rate = self.mean, self.chars / (now - self.since)
        self.since, self.total, self.count, self.chars, self.last_mean = now, 0.0, 0, 0, mean
        return mean, rate


class Trainer:
    """Trains one model on already-encoded ids; `run_dir=None` keeps everything in memory.

    Settings left unset in `config` take their fallbacks: planning is `train`'s. Everything
    needed to continue exactly where a run stopped lives in the fields below and is saved in
    every checkpoint (see `resume_state` and `restore`). In a torchrun job (`ranks`), each process
    trains its block of the stream rows and all agree on every decision; see training.distributed.
    """

    def __init__(
        self,
        config: TrainConfig,
        vocab: Vocab,
        train_ids: np.ndarray,
        val_ids: np.ndarray,
        run_dir: Path | None = None,
        on_event: Callable[[Event], None] | None = None,
        stop_requested: Callable[[], bool] | None = None,
        ranks: Ranks | None = None,
        device: torch.device | None = None,
    ) -> None:
        ranks = ranks or Ranks()
        self.device = device or resolve_device(config.device)
        self.config = config = config.complete()  # unplanned settings at their fallbacks
        self.vocab = vocab
        self.val_ids = val_ids
        self.ranks = ranks
        self.writer = RunWriter(run_dir, config.keep) if run_dir and ranks.is_main else None
        self.emit = (on_event if ranks.is_main else None) or (lambda event: None)
        self.stop_requested = stop_requested or (lambda: False)
        check_precision(self.device, decided(config.precision), config.model.cell)

        torch.manual_seed(config.seed)
        model_config = replace(config.model, vocab_size=len(vocab))
        self.model = CharRNN(model_config).to(self.device)
        self.optimizer = adamw(
            self.model.parameters(),
            config.lr,
            decided(config.weight_decay),
            self.device,
            decided(config.beta1),
        )
        # fp16 gradients can underflow: the loss is scaled up, and steps that overflow skipped
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")

        shape = fit_shape(len(train_ids), config.batch_size, config.seq_len, ranks.world_size)
        if (shape.batch_size, shape.seq_len) != (config.batch_size, config.seq_len):
            self.emit(
                Notice(
                    f"training split has {len(train_ids)} characters: using --batch-size "
                    f"{shape.batch_size} --seq-len {shape.seq_len}, one window per row"
                )
            )
        self.streams = TrainStreams(train_ids, shape, config.seed)
        self.val_pieces = stream_bounds(len(val_ids) - 1, config.eval_chars)  # what validate scores
        self.val_scored = sum(stop - start for start, stop in self.val_pieces)
        if self.val_scored < len(val_ids) - 1:
            self.emit(
                Notice(
                    f"evaluations score {self.val_scored:,} of the validation split's "
                    f"{len(val_ids) - 1:,} characters, in {len(self.val_pieces)} pieces spread "
                    "over it (--eval-chars 0: all)"
                )
            )
        self.rows = ranks.rows(shape.batch_size)  # this process's streams
        self.schedule = Schedule(config, self.streams.windows_per_pass)
        # where the run stands: all of it is saved, so a resumed run continues exactly
        self.step = 0
        self.window = 0  # next window of the current pass
        self.pass_index = 0  # passes over the training split begun, less one
        self.hidden: State | None = None  # carried from window to window, for self.rows
        self.elapsed_before = 0.0  # training seconds spent before this process started
        self.lr_scale = 1.0  # halved by each skipped non-finite batch (--on-nan skip)
        self.best_val_bpc = math.inf
        self.last_val_bpc = math.nan
        self.evals_since_best = 0  # for --patience
        self.corpus_sha256: str | None = None  # stored so a resume can check the text
        self.corpus_files: list[list[str]] = []  # [path, SHA-256] of each file, for several
        self.plan: dict[str, Any] | None = None  # how the run's settings were planned
        self.chars_trained = 0  # by this process, for chars/s in metrics.jsonl

    @property
    def run_dir(self) -> Path | None:
        return self.writer.run_dir if self.writer else None

    @property
    def total_steps(self) -> int | None:
        return self.schedule.total_steps

    def run(self) -> TrainResult:
        net = self._network()
        config, start = self.config, time.perf_counter() - self.elapsed_before
        meter, interrupted = _LossMeter(), False
        eval_every = decided(config.eval_every)
        self.model.train()
        while not self._out_of_patience():
            elapsed, stop = self.ranks.agreed_clock(
                time.perf_counter() - start, self.stop_requested()
            )
            fraction = self.schedule.fraction(self.step, elapsed)
            if fraction >= 1.0 or stop:
                interrupted = fraction < 1.0
                break
            if fraction >= REPLAN_AT and self._replan_due():
                self._replan(elapsed)
            loss = self._train_window(net, fraction)
            if loss is None:  # a non-finite batch, skipped
                continue
            meter.add(loss, self.streams.chars_per_window)
            now = time.perf_counter()
            if now - meter.since >= PROGRESS_INTERVAL or self.step == self.total_steps:
                self._report(meter, now - start, now)
            if self.step % eval_every == 0:
                self._evaluate_and_save(meter.mean, time.perf_counter() - start)
            elif self.step % config.save_every == 0:
                self._save(meter.mean, time.perf_counter() - start, best=False)

        elapsed = time.perf_counter() - start
        if interrupted:  # save at once; the user is waiting
            if self.step > 0:
                self._save(meter.mean, elapsed, best=False)
        elif self.step % eval_every != 0 or self.step == 0:
            self._evaluate_and_save(meter.mean, elapsed)
        return TrainResult(
            run_dir=self.run_dir,
            steps=self.step,
            best_val_bpc=self.best_val_bpc,
            final_val_bpc=self.last_val_bpc,
            elapsed=elapsed,
            interrupted=interrupted,
            stopped_early=self._out_of_patience(),
        )

    def _replan_due(self) -> bool:
        """Whether this run's regularisation is still to be re-planned from its own speed."""
        plan = self.plan or {}
        time_budget = self.config.time_budget is not None
        due = self.step > 0 and "replanned" not in plan
        return time_budget and due and bool(plan.get("from_passes"))

    def _replan(self, elapsed: float) -> None:
        """Re-decide the planned regularisation from the speed measured so far (every rank
        agrees on `elapsed` and the steps, so on the result)."""
        speed = self.step * self.streams.chars_per_window / elapsed
        planned = self.plan["from_passes"] if self.plan else []
        config, changed, passes = replan(self.config, planned, speed, len(self.streams.ids))
        self.config = config
        self.model.regularise(decided(config.model.dropout), decided(config.model.weight_drop))
        for group in self.optimizer.param_groups:
            group["betas"] = (decided(config.beta1), group["betas"][1])
        self.plan = {**(self.plan or {}), "replanned": {"step": self.step, "passes": passes,
                     "chars_per_sec": speed, "changed": changed}}  # fmt: skip
        if changed:
            what = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in changed.items())
            self.emit(
                Notice(
                    f"re-planned at step {self.step} for {passes:.1f} passes at the measured "
                    f"{speed:,.0f} chars/s: {what}"
                )
            )

    def _out_of_patience(self) -> bool:
        patience = decided(self.config.patience)
        return patience > 0 and self.evals_since_best >= patience

    def _network(self) -> torch.nn.Module:
        """The model, wrapped to average gradients across ranks in a torchrun job."""
        if not self.ranks.active:
            return self.model
        ids = [self.device] if self.device.type == "cuda" else None
        if not self.ranks.is_main:  # dropout masks of its own (rank 0 keeps the saved RNG)
            torch.manual_seed(self.config.seed + 1_000_003 * self.ranks.rank + self.step)
        return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _train_window(self, net: torch.nn.Module, fraction: float) -> float | None:
        """One step of truncated BPTT on the next window: the loss, or None if it was skipped."""
        config, streams = self.config, self.streams
        if self.window == streams.windows_per_pass:  # a new pass starts from a zero state
            self.window, self.hidden = 0, None
            self.pass_index += 1
        inputs, targets = self._to_device(*streams.window(self.window, self.pass_index))
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.lr(fraction) * self.lr_scale

        with autocast(self.device, decided(config.precision)):
            loss, new_hidden = loss_on(net, inputs, targets, self.hidden)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients
        max_norm = config.clip if config.clip > 0 else math.inf  # inf: measure, don't clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        loss_value = self.ranks.mean_loss(loss)
        self.window += 1
        self.step += 1
        overflow = self.scaler.is_enabled() and math.isfinite(loss_value)  # the scale's fault
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm.item())) and not overflow:
            self._non_finite(loss_value)  # raises, or skips this batch
            return None
        self.scaler.step(self.optimizer)  # skipped by the scaler if a gradient overflowed
        self.scaler.update()
        self.hidden = detach_state(new_hidden)
        self.chars_trained += streams.chars_per_window
        return loss_value

    def _report(self, meter: _LossMeter, elapsed: float, now: float) -> None:
        fraction = self.schedule.fraction(self.step, elapsed)
        train_loss, chars_per_sec = meter.take(now)
        self.emit(
            Progress(
                step=self.step,
                fraction=min(fraction, 1.0),
                train_loss=train_loss,
                lr=self.optimizer.param_groups[0]["lr"],
                chars_per_sec=chars_per_sec,
                elapsed=elapsed,
                remaining=elapsed / fraction * (1 - fraction) if fraction > 0 else None,
                val_bpc=None if math.isnan(self.last_val_bpc) else self.last_val_bpc,
            )
        )

    def _to_device(self, inputs: torch.Tensor, targets: torch.Tensor):
        """This rank's rows of a window, on the training device (copied asynchronously to a GPU)."""
        inputs, targets = inputs[self.rows], targets[self.rows]
        if self.device.type == "cuda":
            return (inputs.pin_memory().to(self.device, non_blocking=True),
                    targets.pin_memory().to(self.device, non_blocking=True))  # fmt: skip
        return inputs.to(self.device), targets.to(self.device)

    def _non_finite(self, loss: float) -> None:
        """A NaN or infinite loss or gradient: stop, or skip the batch at half the rate."""
        if self.config.on_nan == "stop":
            last = self.run_dir / LAST if self.run_dir else None
            saved = last is not None and last.is_file()  # none yet: the run's folder goes
            kept = f"; {last} (the last good state) is kept" if saved else "; nothing was saved"
            raise CharnnError(
                f"training diverged at step {self.step}: the loss or a gradient is not finite "
                f"(loss {loss}){kept}; try a lower --lr, or --on-nan skip"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scale *= 0.5
        self.emit(
            Notice(
                f"step {self.step}: non-finite loss or gradient; batch skipped, learning "
                f"rate halved (now x{self.lr_scale:g})"
            )
        )

    def validate(self) -> float:
        """Bits/char over the validation split, or over the same --eval-chars of it each time;
        in a torchrun job each rank reads some of its streams and the per-stream sums are added
        up, giving the single-process figure."""
        mine = range(self.ranks.rank, len(self.val_pieces), self.ranks.world_size)
        nats = stream_nats(self.model, self.val_ids, self.device, mine, self.config.eval_chars)
        nats = self.ranks.all_reduce(torch.from_numpy(nats)).numpy()  # one rank per stream
        return float(nats.sum()) / self.val_scored / math.log(2)

    def _evaluate_and_save(self, train_loss: float, elapsed: float) -> None:
        val_bpc = self.validate()
        best = val_bpc < self.best_val_bpc
        self.last_val_bpc = val_bpc
        self.best_val_bpc = min(self.best_val_bpc, val_bpc)
        self.evals_since_best = 0 if best else self.evals_since_best + 1
        self.emit(Evaluated(self.step, train_loss, val_bpc, best, elapsed))
        self._save(train_loss, elapsed, best, evaluated=True)

    def _metrics(self, train_loss: float, elapsed: float, evaluated: bool) -> dict[str, Any]:
        def known(value: float) -> float | None:  # JSON has no NaN or infinity
            return value if math.isfinite(value) else None

        segment = elapsed - self.elapsed_before  # this process's share of the training time
        return {
            "time": time.time(),
            "evaluated": evaluated,  # val_bpc was measured at this step (else: the latest)
            "chars_per_sec": self.chars_trained / segment if segment > 0 else None,
            "train_loss": known(train_loss),
            "val_bpc": known(self.last_val_bpc),
            "best_val_bpc": known(self.best_val_bpc),
            "lr": self.optimizer.param_groups[0]["lr"],
            "elapsed": elapsed,
            "batch_size": self.streams.shape.batch_size,
            "seq_len": self.streams.shape.seq_len,
        }

    def _all_hidden(self) -> list[torch.Tensor] | None:
        """The carried state of all B streams, gathered from every rank (a collective)."""
        if self.hidden is None:
            return None
        return [self.ranks.gather_rows(part) for part in _as_tuple(self.hidden)]

    def resume_state(self, elapsed: float, hidden: list[torch.Tensor] | None) -> dict[str, Any]:
        """Where the run stands, beyond weights and optimizer: enough to continue exactly."""
        return {
            "window": self.window,
            "pass": self.pass_index,
            "hidden": None if hidden is None else to_cpu(hidden),
            "elapsed": elapsed,
            "lr_scale": self.lr_scale,
            "grad_scaler": self.scaler.state_dict(),  # empty unless fp16
            "best_val_bpc": self.best_val_bpc,
            "last_val_bpc": self.last_val_bpc,
            "evals_since_best": self.evals_since_best,
            "rng": capture_rng(),
        }

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint saved by `_save`, exactly where it stopped."""
        try:
            self._restore(payload)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CharnnError(
                f"the checkpoint's saved training state is incomplete or damaged ({reason}): "
                "--init-from starts a new run from its weights"
            ) from None

    def _restore(self, payload: dict[str, Any]) -> None:
        payload = clone_tensors(payload)  # loaded tensors may sit at a different alignment
        self.model.load_state_dict(payload["model_state"])
        self.optimizer.load_state_dict(payload["optimizer_state"])
        self.step = payload["step"]
        resume = payload["resume"]
        self.window = resume["window"]
        self.pass_index = resume.get("pass", 0)  # older checkpoints: windows as in the first pass
        hidden = resume["hidden"]
        if hidden is not None:  # all B streams were saved; this rank carries its own rows
            tensors = tuple(t[:, self.rows].to(self.device) for t in hidden)
            self.hidden = tensors if len(tensors) == 2 else tensors[0]
        self.elapsed_before = resume["elapsed"]
        self.lr_scale = resume["lr_scale"]
        if resume.get("grad_scaler"):
            self.scaler.load_state_dict(resume["grad_scaler"])
        self.best_val_bpc = resume["best_val_bpc"]
        self.last_val_bpc = resume["last_val_bpc"]
        self.evals_since_best = resume.get("evals_since_best", 0)  # older checkpoints: none
        restore_rng(resume["rng"])

    @torch.no_grad()
    def transplant(self, payload: dict[str, Any]) -> None:
        """Start from another run's weights; characters new to it keep their fresh rows."""
        old_vocab = Vocab(payload["vocab"])
        rows = torch.tensor([self.vocab.chars.index(c) for c in old_vocab.chars])
        own = self.model.state_dict()
        try:
            for key, value in payload["model_state"].items():
                if key in ("embed.weight", "decoder.weight", "decoder.bias"):
                    own[key][rows] = value.to(own[key].device)  # one row per character
                else:
                    own[key].copy_(value)
        except (KeyError, RuntimeError) as err:
            raise CharnnError(
                f"--init-from checkpoint does not fit this model ({str(err).splitlines()[0]}): "
                "leave out the model flags to take its shape"
            ) from None

    def _save(self, train_loss: float, elapsed: float, best: bool, evaluated: bool = False) -> None:
        """Write last.pt (and best.pt on a new best), then the metrics line."""
        hidden = self._all_hidden()  # every rank takes part; rank 0 writes
        if self.writer is None:
            return
        metrics = self._metrics(train_loss, elapsed, evaluated)
        payload = make_payload(
            self.model, self.vocab, self.config, self.optimizer.state_dict(), self.step, metrics
        )
        payload["resume"] = self.resume_state(elapsed, hidden)
        payload["corpus_sha256"] = self.corpus_sha256
        payload["corpus_files"] = self.corpus_files
        payload["plan"] = self.plan
        for path in self.writer.save(payload, metrics, best):
            if not path.name.startswith("step-"):
                self.emit(Saved(path))


def train(
    config: TrainConfig,
    on_event: Callable[[Event], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    *,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    given: Collection[str] | None = None,
) -> TrainResult:
    """Train a model on `config.corpus`, keeping checkpoints in its run folder.

    Settings left unset (None) in `config` are planned for the time budget and this machine
    (charnn.training.plan), with one Notice saying what was chosen; the CLI does the same.
    resume: a run folder or checkpoint to continue exactly, or "auto" (continue the run named by
    --name, or CORPUS-CELL, if it has a checkpoint; else start it). init_from: a checkpoint whose
    weights start a new run (fine-tuning), its vocabulary extended by the corpus's characters.
    given: the settings chosen explicitly (default: those `config` gives a value); the others
    come from the run being resumed, or the model's shape from `init_from`.
    """
    notices: list[str] = []
    corpus = load_corpus(config.corpus_spec(), config.encoding, notices.append, config.val_frac)
    device = resolve_device(config.device)  # fail on a bad device before creating any folder
    shape = replace(config.model.complete(), vocab_size=len(corpus.vocab))  # planned width: as 256
    check_fits(count_parameters(shape), f"{shape.layers}x{shape.hidden_size} {shape.cell}", device)
    with process_group(device) as (ranks, device):

        def measure(config: TrainConfig, facts: Facts, vocab_size: int) -> Facts:
            return calibrate(config, facts, vocab_size, device)

        explicit = config.chosen() if given is None else set(given)
        native_bf16 = native_bf16_on(device, config.model.cell)
        run = prepare_run(
            config, corpus, measure=measure, native_bf16=native_bf16, resume=resume,
            init_from=init_from, given=explicit, on_main=ranks.on_main,
        )  # fmt: skip
        run = in_arithmetic_here(run, device, explicit)
        owner = ranks.is_main  # only rank 0 writes to the run folder
        try:  # from here a failure removes the run folder it claimed, if nothing was saved
            ids = corpus.ids_in(run.vocab)  # often memory-mapped
            train_ids, val_ids = split_train_val(ids, run.config.val_frac, corpus.val_start)
            use_threads(run.config.threads)
            with run_lock(run.run_dir) if owner else nullcontext():
                trainer = Trainer(
                    run.config, run.vocab, train_ids, val_ids, run.run_dir, on_event,
                    stop_requested, ranks=ranks, device=device,
                )  # fmt: skip
                if trainer.writer is not None:
                    trainer.writer.remove_stale()
                trainer.corpus_sha256 = corpus.sha256
                trainer.corpus_files = [list(pair) for pair in corpus.files]
                trainer.plan = run.plan
                for notice in notices + run.notices:
                    trainer.emit(Notice(notice))
                if run.resumed and run.checkpoint is not None:
                    trainer.restore(run.checkpoint)
                elif run.checkpoint is not None:
                    trainer.transplant(run.checkpoint)
                return trainer.run()
        finally:
            if owner and run.fresh and _holds_nothing(run.run_dir):  # failed before saving
                (run.run_dir / LOCK).unlink(missing_ok=True)  # leaves nothing behind
                run.run_dir.rmdir()


def in_arithmetic_here(run: PreparedRun, device: torch.device, given: set[str]) -> PreparedRun:
    """A run trains in its precision unless this machine cannot compute in it (a run planned in
    bf16 on a CPU with the kernel and resumed on one without, or trained in fp16 on a GPU and
    resumed on a CPU): then in fp32, with a notice. A precision given now is left for the
    Trainer to refuse."""
    precision = decided(run.config.precision)
    problem = precision_problem(device, precision, run.config.model.cell)
    if not problem or "precision" in given:
        return run
    notice = f"this machine cannot train this model in {precision}: training in fp32 instead"
    config = replace(run.config, precision="fp32")
    return replace(run, config=config, notices=[*run.notices, notice])


def _holds_nothing(run_dir: Path) -> bool:
    return run_dir.is_dir() and all(p.name == LOCK for p in run_dir.iterdir())
