"""The training loop: truncated BPTT over contiguous streams, AdamW, clipping, evaluation, saving.

The loop never prints. It reports what happens as events (`Progress`, `Evaluated`, `Saved`,
`Notice`) through a callback, and the CLI turns them into a progress bar or log lines.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Collection
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from charnn.cache import EncodedCorpus, load_corpus
from charnn.checkpoint import (
    clone_tensors,
    load_path,
    make_payload,
    read_payload,
    save_atomic,
    to_cpu,
)
from charnn.config import TrainConfig, budget_defaults
from charnn.data import TrainStreams, fit_shape, split_train_val
from charnn.devices import autocast, cpu_has_native_bf16, resolve_device, use_threads
from charnn.distributed import Ranks, process_group
from charnn.errors import CharnnError
from charnn.evaluator import stream_bounds, stream_nats
from charnn.events import Evaluated, Event, Notice, Progress, Saved, TrainResult
from charnn.fileio import BEST, LAST, LOCK, METRICS_LOG
from charnn.model import CharRNN, State, detach_state
from charnn.runs import (
    check_resumable,
    claim_run_dir,
    default_name,
    merged_config,
    resume_checkpoint,
    run_lock,
)
from charnn.vocab import Vocab, describe_chars

DEFAULT_EPOCHS = 10  # when no --max-steps, --epochs or --time-budget is given
WARMUP = 0.02  # fraction of training spent raising the learning rate from zero
PROGRESS_INTERVAL = 0.25  # seconds between Progress events


def lr_at(fraction: float, peak: float) -> float:
    """Linear warm-up, then a cosine decay to zero at the end of the run."""
    if fraction < WARMUP:
        return peak * fraction / WARMUP
    decay = (min(fraction, 1.0) - WARMUP) / (1.0 - WARMUP)
    return peak * 0.5 * (1.0 + math.cos(math.pi * decay))


def capture_rng() -> dict[str, Any]:
    """Every random number generator training might touch, as checkpoint-safe values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate wants tuples where a checkpoint may hand back lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


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


class Trainer:
    """Trains one model on already-encoded ids; `run_dir=None` keeps everything in memory.

    Everything needed to continue exactly where a run stopped lives in the fields below and is
    saved in every checkpoint (see `resume_state` and `restore`). In a torchrun job (`ranks`),
    each process trains its block of the stream rows and all agree on every decision; see
    charnn.distributed.
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
        self.config = config
        self.vocab = vocab
        self.val_ids = val_ids
        self.ranks = ranks
        self.run_dir = run_dir if ranks.is_main else None
        self.emit = (on_event if ranks.is_main else None) or (lambda event: None)
        self.stop_requested = stop_requested or (lambda: False)
        self.device = device or resolve_device(config.device)
        if config.precision == "fp16" and self.device.type == "cpu":  # oneDNN has no fp16 LSTM
            raise CharnnError("--precision fp16 needs a GPU; on a CPU use bf16 or fp32")

        torch.manual_seed(config.seed)
        model_config = replace(config.model, vocab_size=len(vocab))
        self.model = CharRNN(model_config).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        # fp16 gradients can underflow: the loss is scaled up, and steps that overflow skipped
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")

        shape = fit_shape(len(train_ids), config.batch_size, config.seq_len, ranks.world_size)
        if (shape.batch_size, shape.seq_len) != (config.batch_size, config.seq_len):
            self.emit(
                Notice(
                    f"training split has {len(train_ids)} characters: using --batch-size "
                    f"{shape.batch_size} --seq-len {shape.seq_len} so that it fills one window"
                )
            )
        self.streams = TrainStreams(train_ids, shape)
        self.rows = ranks.rows(shape.batch_size)  # this process's streams
        self.total_steps = self._total_steps()
        # where the run stands: all of it is saved, so a resumed run continues exactly
        self.step = 0
        self.window = 0  # next window of the current pass
        self.hidden: State | None = None  # carried from window to window, for self.rows
        self.elapsed_before = 0.0  # training seconds spent before this process started
        self.lr_scale = 1.0  # halved by each skipped non-finite batch (--on-nan skip)
        self.best_val_bpc = math.inf
        self.last_val_bpc = math.nan
        self.corpus_sha256: str | None = None  # stored so a resume can check the text
        self.chars_trained = 0  # by this process, for chars/s in metrics.jsonl

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
        model, streams, config, ranks = self.model, self.streams, self.config, self.ranks
        net: torch.nn.Module = model
        if ranks.active:  # averages the gradients across processes during backward()
            ids = [self.device] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
            if not ranks.is_main:  # dropout masks of its own (rank 0 keeps the saved RNG)
                torch.manual_seed(config.seed + 1_000_003 * ranks.rank + self.step)
        start = time.perf_counter() - self.elapsed_before
        last_report, chars_since, loss_sum, losses = time.perf_counter(), 0, 0.0, 0
        train_loss = math.nan
        interrupted = False
        model.train()
        while True:
            elapsed, stop = self._agreed_clock(start)
            if (fraction := self._fraction(elapsed)) >= 1.0:
                break
            if stop:
                interrupted = True
                break
            if self.window == streams.windows_per_pass:  # a new pass starts from a zero state
                self.window, self.hidden = 0, None
            inputs, targets = self._to_device(*streams.window(self.window))
            lr = lr_at(fraction, config.lr) * self.lr_scale
            for group in self.optimizer.param_groups:
                group["lr"] = lr

            with self._autocast():
                loss, new_hidden = loss_on(net, inputs, targets, self.hidden)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # clip the true gradients
            max_norm = config.clip if config.clip > 0 else math.inf  # inf: measure, don't clip
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            loss_value = self._mean_over_ranks(loss)
            self.window += 1
            self.step += 1
            overflow = self.scaler.is_enabled() and math.isfinite(loss_value)  # the scale's fault
            if not (math.isfinite(loss_value) and math.isfinite(grad_norm.item())) and not overflow:
                self._non_finite(loss_value)  # raises, or skips this batch
                continue
            self.scaler.step(self.optimizer)  # skipped by the scaler if a gradient overflowed
            self.scaler.update()
            self.hidden = detach_state(new_hidden)

            loss_sum += loss_value
            losses += 1
            chars_since += streams.chars_per_window
            self.chars_trained += streams.chars_per_window
            now = time.perf_counter()
            if now - last_report >= PROGRESS_INTERVAL or self.step == self.total_steps:
                train_loss = loss_sum / losses
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
                last_report, chars_since, loss_sum, losses = now, 0, 0.0, 0
            if self.step % config.eval_every == 0:
                train_loss = loss_sum / losses if losses else train_loss
                self._evaluate_and_save(train_loss, time.perf_counter() - start)
            elif self.step % config.save_every == 0:
                train_loss = loss_sum / losses if losses else train_loss
                self._save(train_loss, time.perf_counter() - start, best=False)

        train_loss = loss_sum / losses if losses else train_loss
        elapsed = time.perf_counter() - start
        if interrupted:  # save at once; the user is waiting
            if self.step > 0:
                self._save(train_loss, elapsed, best=False)
        elif self.step % config.eval_every != 0 or self.step == 0:
            self._evaluate_and_save(train_loss, elapsed)
        return TrainResult(
            run_dir=self.run_dir,
            steps=self.step,
            best_val_bpc=self.best_val_bpc,
            final_val_bpc=self.last_val_bpc,
            elapsed=elapsed,
            interrupted=interrupted,
        )

    def _to_device(self, inputs: torch.Tensor, targets: torch.Tensor):
        """This rank's rows of a window, on the training device (copied asynchronously to a GPU)."""
        inputs, targets = inputs[self.rows], targets[self.rows]
        if self.device.type == "cuda":
            return (inputs.pin_memory().to(self.device, non_blocking=True),
                    targets.pin_memory().to(self.device, non_blocking=True))  # fmt: skip
        return inputs.to(self.device), targets.to(self.device)

    def _autocast(self) -> torch.autocast:
        return autocast(self.device, self.config.precision)

    def _agreed_clock(self, start: float) -> tuple[float, bool]:
        """Seconds trained, and whether to stop: the same on every rank, so all stop together."""
        elapsed, stop = time.perf_counter() - start, self.stop_requested()
        if not self.ranks.active:
            return elapsed, stop
        agreed = self.ranks.all_reduce(torch.tensor([elapsed, float(stop)]), op="max")
        return float(agreed[0]), bool(agreed[1])

    def _mean_over_ranks(self, loss: torch.Tensor) -> float:
        """The loss over all B rows (each rank holds the mean over its own rows)."""
        if not self.ranks.active:
            return loss.item()
        total = self.ranks.all_reduce(loss.detach().reshape(1).double().cpu())
        return float(total[0]) / self.ranks.world_size

    def _non_finite(self, loss: float) -> None:
        """A NaN or infinite loss or gradient: stop, or skip the batch at half the rate."""
        if self.config.on_nan == "stop":
            kept = f"; {self.run_dir / LAST} (the last good state) is kept" if self.run_dir else ""
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
        """Bits/char over the whole validation split; in a torchrun job each rank reads some of
        its streams and the per-stream sums are added up, giving the single-process figure."""
        n_streams = len(stream_bounds(len(self.val_ids) - 1))
        mine = range(self.ranks.rank, n_streams, self.ranks.world_size)
        nats = stream_nats(self.model, self.val_ids, self.device, mine)
        nats = self.ranks.all_reduce(torch.from_numpy(nats)).numpy()  # one rank per stream
        return float(nats.sum()) / (len(self.val_ids) - 1) / math.log(2)

    def _evaluate_and_save(self, train_loss: float, elapsed: float) -> None:
        val_bpc = self.validate()
        best = val_bpc < self.best_val_bpc
        self.last_val_bpc = val_bpc
        self.best_val_bpc = min(self.best_val_bpc, val_bpc)
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
            "hidden": None if hidden is None else to_cpu(hidden),
            "elapsed": elapsed,
            "lr_scale": self.lr_scale,
            "grad_scaler": self.scaler.state_dict(),  # empty unless fp16
            "best_val_bpc": self.best_val_bpc,
            "last_val_bpc": self.last_val_bpc,
            "rng": capture_rng(),
        }

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint saved by `_save`, exactly where it stopped."""
        payload = clone_tensors(payload)  # loaded tensors may sit at a different alignment
        self.model.load_state_dict(payload["model_state"])
        self.optimizer.load_state_dict(payload["optimizer_state"])
        self.step = payload["step"]
        resume = payload["resume"]
        self.window = resume["window"]
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
        """Append the metrics line, then write last.pt (and best.pt on a new best)."""
        hidden = self._all_hidden()  # every rank takes part; rank 0 writes
        if self.run_dir is None:
            return
        metrics = self._metrics(train_loss, elapsed, evaluated)
        with open(self.run_dir / METRICS_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps({"step": self.step, **metrics}) + "\n")
        payload = make_payload(
            self.model, self.vocab, self.config, self.optimizer.state_dict(), self.step, metrics
        )
        payload["resume"] = self.resume_state(elapsed, hidden)
        payload["corpus_sha256"] = self.corpus_sha256
        save_atomic(payload, self.run_dir / LAST)
        self.emit(Saved(self.run_dir / LAST))
        if best:
            save_atomic(payload, self.run_dir / BEST)
            self.emit(Saved(self.run_dir / BEST))
        if self.config.keep > 0:
            save_atomic(payload, self.run_dir / f"step-{self.step:08d}.pt")
            for old in sorted(self.run_dir.glob("step-*.pt"))[: -self.config.keep]:
                old.unlink()


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

    resume: a run folder or checkpoint to continue exactly, or "auto" (continue the run named by
    --name, or CORPUS-CELL, if it has a last.pt; else start it). init_from: a checkpoint whose
    weights start a new run (fine-tuning), its vocabulary extended by the corpus's characters.
    given: the settings chosen explicitly (as the CLI knows them); the others then come from the
    run being resumed, or the model's shape from `init_from`. None: all of `config` is meant.
    """
    corpus_path = Path(config.corpus)
    notices: list[str] = []
    corpus = load_corpus(corpus_path, config.encoding, notices.append)  # ids, often memory-mapped
    device = resolve_device(config.device)  # fail on a bad device before creating any folder
    with process_group(device) as (ranks, device):
        # rank 0 alone decides which folder and checkpoint to use; the others are told
        resume_path = None
        if resume is not None:
            resume_path = ranks.on_main(lambda: resume_checkpoint(str(resume), config, corpus_path))

        start_from: dict | None = None
        if resume_path is not None:
            start_from = read_payload(resume_path)
            saved = TrainConfig.from_dict(start_from["train_config"])
            if given is not None:
                config = merged_config(saved, config, set(given))
            check_resumable(config, saved, resume_path)
            vocab = Vocab(start_from["vocab"])
            _check_same_corpus(start_from, corpus, vocab, resume_path)
            run_dir, fresh = resume_path.parent, False
        else:
            vocab = corpus.vocab
            if init_from is not None:
                start_from = read_payload(load_path(init_from))
                vocab = Vocab.from_text(start_from["vocab"] + vocab.chars)  # old chars plus new
                if given is not None:  # take the weights' shape unless a model flag says not
                    saved = TrainConfig.from_dict(start_from["train_config"])
                    config = replace(config, model=merged_config(saved, config, set(given)).model)
            elif given is not None:  # a new run: defaults that depend on the time budget
                native_bf16 = device.type == "cpu" and cpu_has_native_bf16()
                chosen = budget_defaults(config, set(given), native_bf16)
                if chosen.precision != config.precision:
                    notices.append(
                        "training with bf16 autocast: this CPU multiplies bf16 in hardware, so a "
                        "time budget gets further (--precision fp32 turns it off)"
                    )
                config = chosen
            if resume == "auto" and config.name is None:
                config = replace(config, name=default_name(corpus_path, config.model.cell))
            claimed = config  # the lambda must not see later rebindings
            run_dir, fresh = ranks.on_main(lambda: claim_run_dir(claimed, corpus_path)), True
        train_ids, val_ids = split_train_val(corpus.ids_in(vocab), config.val_frac)
        use_threads(config.threads)
        owner = ranks.is_main  # only rank 0 writes to the run folder
        try:
            with run_lock(run_dir) if owner else nullcontext():
                if owner:
                    for stale in run_dir.glob(".*.tmp"):  # half-written by a killed run
                        stale.unlink()
                trainer = Trainer(
                    config, vocab, train_ids, val_ids, run_dir, on_event, stop_requested,
                    ranks=ranks, device=device,
                )  # fmt: skip
                trainer.corpus_sha256 = corpus.sha256
                for notice in notices:
                    trainer.emit(Notice(notice))
                if resume_path is not None and start_from is not None:
                    trainer.restore(start_from)
                elif start_from is not None:
                    trainer.transplant(start_from)
                return trainer.run()
        finally:
            if owner and fresh and _holds_nothing(run_dir):  # a run that failed before saving
                (run_dir / LOCK).unlink(missing_ok=True)  # leaves nothing behind
                run_dir.rmdir()


def _holds_nothing(run_dir: Path) -> bool:
    return run_dir.is_dir() and all(p.name == LOCK for p in run_dir.iterdir())


def _check_same_corpus(payload: dict, corpus: EncodedCorpus, vocab: Vocab, path: Path) -> None:
    if payload.get("corpus_sha256") == corpus.sha256:
        return
    ours = corpus.vocab
    if ours.chars != vocab.chars:
        new = sorted(set(ours.chars) - set(vocab.chars))
        gone = sorted(set(vocab.chars) - set(ours.chars))
        detail = f"new characters {describe_chars(new)}" if new else ""
        detail += ("; " if new and gone else "") + (
            f"missing {describe_chars(gone)}" if gone else ""
        )
        raise CharnnError(
            f"cannot resume {path} on this corpus: its vocabulary differs ({detail}); start a new "
            "run from it with --init-from instead"
        )
    raise CharnnError(
        f"cannot resume {path}: this corpus is not the text the run was trained on (its SHA-256 "
        "differs); start a new run from it with --init-from instead"
    )
