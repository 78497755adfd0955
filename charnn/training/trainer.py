"""The training loop: truncated BPTT over contiguous streams, AdamW, clipping, evaluation, saving.

The loop never prints. It reports what happens as events (training.events) through a callback,
and the CLI turns them into a progress bar or log lines. Around it: training.prepare decides
where the run starts and with which settings, training.length how long it lasts and how its
learning rate moves, checkpoints.folder owns the run folder, training.distributed keeps torchrun
ranks agreed, and training.state is what a resume needs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from charnn.checkpoints import folder
from charnn.checkpoints.format import clone_tensors, make_payload, to_cpu
from charnn.checkpoints.loading import LoadedModel
from charnn.checkpoints.writer import RunWriter
from charnn.config.sample import SampleConfig
from charnn.config.train import RunConfig, TrainConfig
from charnn.errors import SettingError, literal
from charnn.evaluation.scoring import stream_bounds, stream_nats
from charnn.generation.sampler import sample_batch
from charnn.nn.devices import (
    autocast,
    check_precision,
    cpu_has_native_bf16,
    precision_problem,
    resolve_device,
    use_threads,
)
from charnn.nn.model import CharRNN, State, check_model_fits, detach_state
from charnn.text.corpus import load_corpus, split_train_val
from charnn.text.sources import corpus_spec
from charnn.text.vocab import Vocab
from charnn.training.average import WeightAverage
from charnn.training.board import Board
from charnn.training.calibrate import calibrate
from charnn.training.distributed import Ranks, process_group
from charnn.training.events import Evaluated, Event, Notice, Progress, Saved, TrainResult
from charnn.training.length import Schedule
from charnn.training.optim import adamw
from charnn.training.plan import REPLAN_AT, Facts, replan
from charnn.training.prepare import PreparedRun, prepare_run, read_as_resumed
from charnn.training.state import RunState, capture_rng, restore_rng
from charnn.training.streams import TrainStreams, fit_shape

PROGRESS_INTERVAL = 0.25  # seconds between Progress events
FEW_LABEL_CHARS, FEW_LABEL_SHARE = 5_000, 0.02  # a label with less is named at the start
SAMPLE_CHARS, SAMPLE_TEMPERATURE = 200, 0.8  # the sample TensorBoard shows at each evaluation


def loss_on(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    state: State | None,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State]:
    """Mean cross-entropy (nats/char) of one window, and the state after it (`model` is a
    CharRNN, or one wrapped in DistributedDataParallel; `labels` a conditioned model's)."""
    logits, state = model(inputs, state, labels)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return loss, state


def native_bf16_on(device: torch.device, cell: str) -> bool:
    """Whether bf16 autocast pays for `cell` on `device`: a CPU that multiplies bf16, and has
    the cell's kernel in it."""
    native = device.type == "cpu" and cpu_has_native_bf16()
    return native and precision_problem(device, "bf16", cell) is None


class _LossMeter:
    """The mean training loss, gradient norm and chars/s since the last Progress event."""

    def __init__(self) -> None:
        self.since = time.perf_counter()
        self.total, self.norms, self.count, self.chars = 0.0, 0.0, 0, 0
        self.last_mean = math.nan  # the latest mean reported, for evaluations between reports

    def add(self, loss: float, grad_norm: float, chars: int) -> None:
        self.total, self.norms = self.total + loss, self.norms + grad_norm
        self.count, self.chars = self.count + 1, self.chars + chars

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else self.last_mean

    def take(self, now: float) -> tuple[float, float, float]:
        """(mean loss, mean gradient norm, chars/s) since the last take; starts the next."""
        mean, rate = self.mean, self.chars / (now - self.since)
        norm = self.norms / self.count if self.count else math.nan
        self.since, self.total, self.norms, self.count, self.chars = now, 0.0, 0.0, 0, 0
        self.last_mean = mean
        return mean, norm, rate


@dataclass(frozen=True)
class Labelled:
    """A labelled corpus's labels (label k + 1 is names[k]; 0 is "any"), each one's share in
    characters, and each character's label in the two splits."""

    names: tuple[str, ...] = ()
    chars: dict[str, int] = field(default_factory=dict)
    train: np.ndarray | None = None
    val: np.ndarray | None = None


class Trainer:
    """Trains one model on already-encoded ids; `run_dir=None` keeps everything in memory.

    `config` has every setting decided (training.plan). Where the run stands is `self.state`,
    saved whole in every checkpoint (`restore` continues from one exactly). In a torchrun job
    (`ranks`), each process trains its block of the stream rows and all agree on every
    decision; see training.distributed.
    """

    def __init__(
        self,
        config: RunConfig,
        vocab: Vocab,
        train_ids: np.ndarray,
        val_ids: np.ndarray,
        run_dir: Path | None = None,
        on_event: Callable[[Event], None] | None = None,
        stop_requested: Callable[[], bool] | None = None,
        ranks: Ranks | None = None,
        device: torch.device | None = None,
        labels: Labelled | None = None,
    ) -> None:
        if not isinstance(config, RunConfig):
            raise TypeError("a Trainer runs a RunConfig (every setting decided: training.plan)")
        self.config = config
        self.vocab = vocab
        self.ranks = ranks = ranks or Ranks()
        self.device = device or resolve_device(config.device)
        self.writer = RunWriter(run_dir, config.keep) if run_dir and ranks.is_main else None
        self.emit = (on_event if ranks.is_main else None) or (lambda event: None)
        self.stop_requested = stop_requested or (lambda: False)
        check_precision(self.device, config.precision, config.model.cell)

        torch.manual_seed(config.seed)
        self.model = CharRNN(replace(config.model, vocab_size=len(vocab))).to(self.device)
        self.optimizer = adamw(self.model.parameters(), config.lr, config.weight_decay,
                               self.device, config.beta1)  # fmt: skip
        # fp16 gradients can underflow: the loss is scaled up, and steps that overflow skipped
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        # the weights' running average, scored beside them at each evaluation
        self.average = WeightAverage(self.model, config.average) if config.average > 0 else None
        self.labels = labels or Labelled()
        self.streams = self._streams(train_ids)
        self.rows = ranks.rows(self.streams.shape.batch_size)  # this process's streams
        self.schedule = Schedule(config, self.streams.windows_per_pass)
        self.val_ids, self.val_labels = val_ids, self.labels.val
        self.val_pieces = self._validation_pieces(len(val_ids) - 1)  # what `validate` scores
        self.state = RunState()
        self.carried: State | None = None  # the state carried between windows, for self.rows
        self.corpus_sha256: str | None = None  # stored so a resume can check the text
        self.corpus_files: list[list[str]] = []  # [path, SHA-256] of each file
        self.plan: dict[str, Any] | None = None  # how the run's settings were planned
        self.chars_trained = 0  # by this process, for chars/s in metrics.jsonl
        self.board: Board | None = None  # TensorBoard's event files, where asked for

    def _streams(self, train_ids: np.ndarray) -> TrainStreams:
        config = self.config
        shape = fit_shape(len(train_ids), config.batch_size, config.seq_len, self.ranks.world_size)
        if (shape.batch_size, shape.seq_len) != (config.batch_size, config.seq_len):
            self.emit(Notice.naming(
                f"training split has {len(train_ids)} characters: using {{batch_size}} "
                f"{shape.batch_size} {{seq_len}} {shape.seq_len}, one window per row"
            ))  # fmt: skip
        return TrainStreams(train_ids, shape, config.seed, self.labels.train)

    def _validation_pieces(self, targets: int) -> list[tuple[int, int]]:
        pieces = stream_bounds(targets, self.config.eval_chars)
        scored = sum(stop - start for start, stop in pieces)
        if scored < targets:
            self.emit(Notice.naming(
                f"evaluations score {scored:,} of the validation split's {targets:,} characters, "
                f"in {len(pieces)} pieces spread over it ({{eval_chars}} 0: all)"
            ))  # fmt: skip
        return pieces

    @property
    def run_dir(self) -> Path | None:
        return self.writer.folder if self.writer else None

    @property
    def total_steps(self) -> int | None:
        return self.schedule.total_steps

    @property
    def step(self) -> int:
        return self.state.step

    def run(self) -> TrainResult:
        net = self._network()
        config, state = self.config, self.state
        start = time.perf_counter() - state.elapsed
        meter, interrupted = _LossMeter(), False
        self.model.train()
        while not self._out_of_patience():
            elapsed, stop = self.ranks.agreed_clock(
                time.perf_counter() - start, self.stop_requested()
            )
            fraction = self.schedule.fraction(state.step, elapsed)
            if fraction >= 1.0 or stop:
                interrupted = fraction < 1.0
                break
            if fraction >= REPLAN_AT and self._replan_due():
                self._replan(elapsed)
            measured = self._train_window(net, fraction)
            if measured is None:  # a non-finite batch, skipped
                continue
            meter.add(*measured, self.streams.chars_per_window)
            now = time.perf_counter()
            if now - meter.since >= PROGRESS_INTERVAL or state.step == self.total_steps:
                self._report(meter, now - start, now)
            if state.step % self.config.eval_every == 0:
                self._evaluate_and_save(meter.mean, time.perf_counter() - start)
            elif state.step % config.save_every == 0:
                self._save(meter.mean, time.perf_counter() - start, best=False)

        elapsed = time.perf_counter() - start
        if interrupted:  # save at once; the user is waiting
            if state.step > 0:
                self._save(meter.mean, elapsed, best=False)
        elif state.step % self.config.eval_every != 0 or state.step == 0:
            self._evaluate_and_save(meter.mean, elapsed)
        return TrainResult(
            run_dir=self.run_dir,
            steps=state.step,
            best_val_bpc=state.best_val_bpc,
            final_val_bpc=state.last_val_bpc,
            elapsed=elapsed,
            interrupted=interrupted,
            stopped_early=self._out_of_patience(),
        )

    def _replan_due(self) -> bool:
        """Whether this run's regularisation is still to be re-planned from its own speed."""
        plan = self.plan or {}
        time_budget = self.config.time_budget is not None
        due = self.state.step > 0 and "replanned" not in plan
        return time_budget and due and bool(plan.get("from_passes"))

    def _replan(self, elapsed: float) -> None:
        """Re-decide the planned regularisation from the speed measured so far (every rank
        agrees on `elapsed` and the steps, so on the result)."""
        speed = self.state.step * self.streams.chars_per_window / elapsed
        planned = self.plan["from_passes"] if self.plan else []
        streams = self.streams
        config, changed, passes = replan(self.config, planned, speed, len(streams.ids),
                                         streams.shape)  # fmt: skip
        self.config = config
        self.model.regularise(config.model)
        for group in self.optimizer.param_groups:
            group["betas"] = (config.beta1, group["betas"][1])
        self.plan = {**(self.plan or {}), "replanned": {"step": self.state.step, "passes": passes,
                     "chars_per_sec": speed, "changed": changed}}  # fmt: skip
        if changed:
            what = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in changed.items())
            self.emit(Notice(f"re-planned at step {self.state.step} for {passes:.1f} passes at "
                             f"the measured {speed:,.0f} chars/s: {what}"))  # fmt: skip

    def _out_of_patience(self) -> bool:
        patience = self.config.patience
        return patience > 0 and self.state.evals_since_best >= patience

    def _network(self) -> torch.nn.Module:
        """The model, wrapped to average gradients across ranks in a torchrun job."""
        if not self.ranks.active:
            return self.model
        ids = [self.device] if self.device.type == "cuda" else None
        if not self.ranks.is_main:  # dropout masks of its own (rank 0 keeps the saved RNG)
            torch.manual_seed(self.config.seed + 1_000_003 * self.ranks.rank + self.state.step)
        return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _train_window(self, net: torch.nn.Module, fraction: float) -> tuple[float, float] | None:
        """One step of truncated BPTT on the next window: the loss and the gradient norm, or
        None if it was skipped."""
        config, streams, state = self.config, self.streams, self.state
        if state.window == streams.windows_per_pass:  # a new pass starts from a zero state
            state.window, self.carried = 0, None
            state.pass_index += 1
        inputs, targets = self._to_device(*streams.window(state.window, state.pass_index))
        labels = self._window_labels(streams.labels(state.window, state.pass_index))
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.lr(fraction) * state.lr_scale

        with autocast(self.device, config.precision):
            loss, new_carried = loss_on(net, inputs, targets, self.carried, labels=labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients
        max_norm = config.clip if config.clip > 0 else math.inf  # inf: measure, don't clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        loss_value = self.ranks.mean_loss(loss)
        state.window += 1
        state.step += 1
        norm = grad_norm.item()
        overflow = self.scaler.is_enabled() and math.isfinite(loss_value)  # the scale's fault
        if not (math.isfinite(loss_value) and math.isfinite(norm)) and not overflow:
            self._non_finite(loss_value)  # raises, or skips this batch
            return None
        self.scaler.step(self.optimizer)  # skipped by the scaler if a gradient overflowed
        self.scaler.update()
        if self.average is not None:
            self.average.update(fraction)
        self.carried = detach_state(new_carried)
        self.chars_trained += streams.chars_per_window
        return loss_value, norm

    def _window_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """This rank's rows' labels, some rows' whole window read as the "any" label (a share
        any_label of them, drawn from PyTorch's generator: a resume draws the same)."""
        if labels is None:
            return None
        labels = labels[self.rows]
        labels[torch.rand(len(labels)) < self.config.any_label] = 0
        return labels.to(self.device)

    def _report(self, meter: _LossMeter, elapsed: float, now: float) -> None:
        fraction = self.schedule.fraction(self.state.step, elapsed)
        train_loss, grad_norm, chars_per_sec = meter.take(now)
        last, lr = self.state.last_val_bpc, self.optimizer.param_groups[0]["lr"]
        self.emit(
            Progress(
                step=self.state.step,
                fraction=min(fraction, 1.0),
                train_loss=train_loss,
                lr=lr,
                chars_per_sec=chars_per_sec,
                elapsed=elapsed,
                remaining=elapsed / fraction * (1 - fraction) if fraction > 0 else None,
                val_bpc=None if math.isnan(last) else last,
                grad_norm=grad_norm,
            )
        )
        if self.board is not None:
            self.board.progress(self.state.step, train_loss, lr, chars_per_sec, grad_norm)

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
            last = self.run_dir / folder.LAST if self.run_dir else None
            saved = last is not None and last.is_file()  # none yet: the run's folder goes
            kept = (
                f"; {literal(last)} (the last good state) is kept"
                if saved
                else "; nothing was saved"
            )
            raise SettingError(
                f"training diverged at step {self.state.step}: the loss or a gradient is not "
                f"finite (loss {loss}){kept}; try a lower {{lr}}, or {{on_nan}} skip"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.state.lr_scale *= 0.5
        self.emit(Notice(f"step {self.state.step}: non-finite loss or gradient; batch skipped, "
                         f"learning rate halved (now x{self.state.lr_scale:g})"))  # fmt: skip

    def validate(self) -> float:
        """Bits/char over the validation split, or over the same `eval_chars` of it each time;
        in a torchrun job each rank reads some of its streams and the per-stream sums are added
        up, giving the single-process figure."""
        mine = range(self.ranks.rank, len(self.val_pieces), self.ranks.world_size)
        nats = stream_nats(self.model, self.val_ids, self.device, mine, self.config.eval_chars,
                           labels=self.val_labels)  # fmt: skip
        nats = self.ranks.all_reduce(torch.from_numpy(nats)).numpy()  # one rank per stream
        scored = sum(stop - start for start, stop in self.val_pieces)
        return float(nats.sum()) / scored / math.log(2)

    def _evaluate_and_save(self, train_loss: float, elapsed: float) -> None:
        """Score the live weights (and their average, where the run keeps one) and save; the
        better of the two is the run's figure, and best.pt holds them on a new best."""
        state, live_bpc = self.state, self.validate()
        scores: dict[str, float] = {}
        if self.average is not None and self.average.fraction is not None:
            with self.average.swapped_in():
                scores = {"live_val_bpc": live_bpc, "average_val_bpc": self.validate()}
        averaged = bool(scores) and scores["average_val_bpc"] < live_bpc
        val_bpc = scores["average_val_bpc"] if averaged else live_bpc
        best = val_bpc < state.best_val_bpc
        state.last_val_bpc = val_bpc
        state.best_val_bpc = min(state.best_val_bpc, val_bpc)
        state.evals_since_best = 0 if best else state.evals_since_best + 1
        self.emit(Evaluated(state.step, train_loss, val_bpc, best, elapsed,
                            scores.get("live_val_bpc"), scores.get("average_val_bpc")))  # fmt: skip
        if self.board is not None:
            self.board.evaluated(state.step, val_bpc, self.sample_text())
        self._save(train_loss, elapsed, best, evaluated=True, averaged=averaged, scores=scores)

    def sample_text(self, length: int = SAMPLE_CHARS) -> str:
        """A short sample of what the model writes now, at temperature SAMPLE_TEMPERATURE,
        always from the same seed (its draws are NumPy's: the run's own generators, and so an
        exact resume, are left alone)."""
        loaded = LoadedModel(self.model, self.vocab, Path("training"), self.config, self.step,
                             labels=self.labels.names)  # fmt: skip
        config = SampleConfig(length=length, temperature=SAMPLE_TEMPERATURE, seed=0)
        return "".join(sample_batch(loaded, config))

    def _metrics(self, train_loss: float, elapsed: float, evaluated: bool) -> dict[str, Any]:
        def known(value: float) -> float | None:  # JSON has no NaN or infinity
            return value if math.isfinite(value) else None

        segment = elapsed - self.state.elapsed  # this process's share of the training time
        return {
            "time": time.time(),
            "evaluated": evaluated,  # val_bpc was measured at this step (else: the latest)
            "chars_per_sec": self.chars_trained / segment if segment > 0 else None,
            "train_loss": known(train_loss),
            "val_bpc": known(self.state.last_val_bpc),
            "best_val_bpc": known(self.state.best_val_bpc),
            "lr": self.optimizer.param_groups[0]["lr"],
            "elapsed": elapsed,
            "batch_size": self.streams.shape.batch_size,
            "seq_len": self.streams.shape.seq_len,
        }

    def _all_carried(self) -> list[torch.Tensor] | None:
        """The carried state of all B streams, gathered from every rank (a collective)."""
        if self.carried is None:
            return None
        parts = self.carried if isinstance(self.carried, tuple) else (self.carried,)
        return [self.ranks.gather_rows(part) for part in parts]

    def saved_state(self, elapsed: float, carried: list[torch.Tensor] | None) -> RunState:
        """Where the run stands, as a checkpoint keeps it."""
        return replace(
            self.state,
            elapsed=elapsed,
            hidden=None if carried is None else to_cpu(carried),
            grad_scaler=self.scaler.state_dict(),  # empty unless fp16
            rng=capture_rng(),
        )

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint saved by `_save`, exactly where it stopped."""
        try:
            self._restore(clone_tensors(payload))  # loaded tensors may sit at another alignment
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SettingError(
                f"the checkpoint's saved training state is incomplete or damaged "
                f"({reason.replace('{', '(').replace('}', ')')}): {{init_from}} starts a new run "
                "from its weights"
            ) from None

    def _restore(self, payload: dict[str, Any]) -> None:
        resume = payload["resume"]
        self.model.load_state_dict(resume.get("live_weights", payload["model_state"]))
        if self.average is not None and "average" in resume:
            self.average.load_state_dict(resume["average"])
        self.optimizer.load_state_dict(payload["optimizer_state"])
        state = self.state = RunState.restored(payload["step"], resume)
        if state.hidden is not None:  # all B streams were saved; this rank carries its own rows
            tensors = tuple(t[:, self.rows].to(self.device) for t in state.hidden)
            self.carried = tensors if len(tensors) == 2 else tensors[0]
        if state.grad_scaler:
            self.scaler.load_state_dict(state.grad_scaler)
        restore_rng(state.rng)
        state.hidden, state.rng = None, {}  # carried and restored: the live run keeps neither

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
            reason = str(err).splitlines()[0].replace("{", "(").replace("}", ")")
            raise SettingError(
                f"{{init_from}} checkpoint does not fit this model ({reason}): leave out the "
                "model settings to take its shape"
            ) from None

    def _save(
        self,
        train_loss: float,
        elapsed: float,
        best: bool,
        evaluated: bool = False,
        averaged: bool = False,
        scores: dict[str, float] | None = None,
    ) -> None:
        """Write last.pt (and best.pt on a new best), then the metrics line. last.pt holds the
        live weights; best.pt the averaged ones where they scored better (`averaged`), the live
        ones kept beside them for a resume."""
        carried = self._all_carried()  # every rank takes part; rank 0 writes
        if self.writer is None:
            return
        metrics = {**self._metrics(train_loss, elapsed, evaluated), **(scores or {})}
        payload = make_payload(self.model, self.vocab, self.config.to_dict(),
                               self.optimizer.state_dict(), self.state.step, metrics)  # fmt: skip
        payload["resume"] = self.saved_state(elapsed, carried).saved()
        if self.average is not None:
            payload["resume"]["average"] = self.average.state_dict()
        payload["corpus_sha256"] = self.corpus_sha256
        payload["corpus_files"] = self.corpus_files
        payload["labels"], payload["label_chars"] = list(self.labels.names), self.labels.chars
        payload["plan"] = self.plan
        best_payload = None
        if best and averaged and self.average is not None:
            resume = {**payload["resume"], "live_weights": payload["model_state"]}
            best_payload = {**payload, "model_state": self.average.model_state(),
                            "weights": "average", "resume": resume}  # fmt: skip
        for path in self.writer.save(payload, metrics, best, best_payload):
            if path.name in (folder.BEST, folder.LAST):
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
    (training.plan), with one Notice saying what was chosen; the CLI does the same.
    resume: a run folder or checkpoint to continue exactly, or "auto" (continue the run named by
    `name`, or CORPUS-CELL, if it has a checkpoint; else start it). init_from: a checkpoint whose
    weights start a new run (fine-tuning), its vocabulary extended by the corpus's characters.
    given: the settings chosen explicitly (default: those `config` gives a value); the others
    come from the run being resumed, or the model's shape from `init_from`.
    """
    notices: list[str] = []
    explicit = config.chosen() if given is None else set(given)
    config = read_as_resumed(config, resume, explicit)
    corpus = load_corpus(corpus_spec(config), on_notice=notices.append, val_frac=config.val_frac)
    device = resolve_device(config.device)  # fail on a bad device before creating any folder
    with process_group(device) as (ranks, device):

        def measure(request: TrainConfig, facts: Facts, vocab_size: int) -> Facts:
            return calibrate(request, facts, vocab_size, device)

        run = prepare_run(
            config, corpus, measure=measure, native_bf16=native_bf16_on(device, config.model.cell),
            resume=resume, init_from=init_from, given=explicit, on_main=ranks.on_main,
        )  # fmt: skip
        run = trainable_here(run, device, explicit)
        owner = ranks.is_main  # only rank 0 writes to the run folder
        try:  # from here a failure removes the run folder it claimed, if nothing was saved
            check_model_fits(replace(run.config.model, vocab_size=len(run.vocab)), device)
            val_frac, val_start = run.config.val_frac, corpus.val_start
            train_ids, val_ids = split_train_val(corpus.ids_in(run.vocab), val_frac, val_start)
            labels = Labelled(corpus.labels, corpus.label_chars())
            if corpus.label_ids is not None:
                train, val = split_train_val(corpus.label_ids, val_frac, val_start)
                labels = replace(labels, train=train, val=val)
                notices += few_characters(labels.chars)
            use_threads(run.config.threads)
            with folder.locked(run.run_dir) if owner else nullcontext():
                trainer = _trainer(run, corpus, train_ids, val_ids, on_event, stop_requested,
                                   ranks, device, notices, labels)  # fmt: skip
                try:
                    return trainer.run()
                finally:
                    if trainer.board is not None:
                        trainer.board.close()
        finally:
            if owner and run.fresh:
                folder.release(run.run_dir)


def few_characters(chars: dict[str, int]) -> list[str]:
    """A notice for each label with little text to learn it from."""
    total = sum(chars.values())
    return [
        f"label {name!r} has {count:,} characters, {count / total:.1%} of the corpus: too few "
        "to learn its style well"
        for name, count in chars.items()
        if count < FEW_LABEL_CHARS or count < FEW_LABEL_SHARE * total
    ]


def _trainer(run, corpus, train_ids, val_ids, on_event, stop_requested, ranks, device, notices,
             labels):  # fmt: skip
    """The Trainer for a prepared run, restored or transplanted from its checkpoint."""
    trainer = Trainer(run.config, run.vocab, train_ids, val_ids, run.run_dir, on_event,
                      stop_requested, ranks=ranks, device=device, labels=labels)  # fmt: skip
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
    if run.config.tensorboard is not None and ranks.is_main:
        trainer.board = Board(run.config.tensorboard, trainer.step)
        trainer.board.plan(run.plan, run.config.to_dict(), trainer.step)
    return trainer


def trainable_here(run: PreparedRun, device: torch.device, given: set[str]) -> PreparedRun:
    """A run trains in its precision unless this machine cannot compute in it (a run planned in
    bf16 on a CPU with the kernel and resumed on one without, or trained in fp16 on a GPU and
    resumed on a CPU): then in fp32, with a notice. A precision given now is left for the
    Trainer to refuse."""
    precision = run.config.precision
    problem = precision_problem(device, precision, run.config.model.cell)
    if not problem or "precision" in given:
        return run
    notice = f"this machine cannot train this model in {precision}: training in fp32 instead"
    config = replace(run.config, precision="fp32")
    return replace(run, config=config, notices=[*run.notices, notice])
