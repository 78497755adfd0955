"""Dynamic batching: one worker thread steps every running request together, one character a tick.

Requests arrive at any time. Between two ticks the worker admits the newly arrived ones (reading
each prime in one pass of the model) and drops those that finished or whose client went away;
each tick is then a single `Stepper.step` over every row of every running request:

    tick:  choose next characters  ->  hand out the pieces  ->  drop finished  ->  one step
    rows:  [ job A: 1 row | job B: 3 rows (num_samples=3) | job C: 1 row ]   (B=5, vocab)

A job's rows stay in the batch until the whole job ends, and each job draws from its own seeded
generator in the same order as `generation.sampler.generate`, so a job gives the text
`charnn sample` gives for the same settings and seed (the arithmetic of a larger batch can differ
in the last bits, which in rare cases changes a character).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from charnn.checkpoints.format import LoadedModel
from charnn.generation.penalty import RepetitionPenalty
from charnn.generation.sampler import SampleConfig, StopFilter, choose
from charnn.nn.stepper import Stepper

# what a job reports, from the worker thread: ("pieces", [(row, text), ...]) while streaming,
# then once ("end", Result)
Event = tuple[str, Any]
Until = Callable[[str], bool]  # ends a row early when it returns True for the row's text


@dataclass
class Result:
    texts: list[str]
    finish_reasons: list[str]  # "length", "stop" (a stop string), "until", "cancelled"
    seconds: float


@dataclass
class Job:
    """One request: `config.num_samples` rows sampled with one generator, seeded by config.seed."""

    config: SampleConfig
    deliver: Callable[[Event], None]  # called on the worker thread; must not block
    stream: bool = False  # deliver pieces as they come, not only the end
    until: Until | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    # the worker's bookkeeping
    rng: np.random.Generator = field(init=False)
    filters: list[StopFilter] = field(init=False)
    texts: list[str] = field(init=False)
    reasons: list[str | None] = field(init=False)
    penalty: RepetitionPenalty | None = field(init=False)  # its rows' recent text
    produced: int = 0
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        n = self.config.num_samples
        self.rng = np.random.default_rng(self.config.seed)
        self.filters = [StopFilter(self.config.stop, self.config.include_stop) for _ in range(n)]
        self.texts = [""] * n
        self.reasons = [None] * n
        penalty = self.config.repetition_penalty
        self.penalty = RepetitionPenalty(penalty, n) if penalty != 1 else None

    @property
    def rows(self) -> int:
        return self.config.num_samples

    def cancel(self) -> None:
        """Stop generating for this job (its client went away); safe from any thread."""
        self.cancelled.set()

    def result(self) -> Result:
        reasons = [r or "cancelled" for r in self.reasons]
        return Result(list(self.texts), reasons, time.perf_counter() - self.started)


class _StackedDraws:
    """Stands in for one generator when `choose` filters several jobs' rows in one call: each
    job's block of rows gets its own generator's draws, exactly as if chosen alone."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs

    def gumbel(self, size: tuple[int, int]) -> np.ndarray:
        vocab = size[1]
        return np.concatenate([job.rng.gumbel(size=(job.rows, vocab)) for job in self.jobs])


class Engine:
    """Owns the model and the worker thread; `submit` jobs from any thread."""

    def __init__(self, loaded: LoadedModel, max_rows: int = 64, prime_cache: int = 32) -> None:
        self.loaded = loaded
        self.vocab = loaded.vocab
        self.stepper = Stepper(loaded.model)
        self.max_rows = max_rows  # rows stepped together at most; later jobs wait their turn
        self.incoming: queue.Queue[Job | None] = queue.Queue()
        self.primes: OrderedDict[str, tuple[np.ndarray, list]] = OrderedDict()
        self.prime_cache = prime_cache
        self.thread = threading.Thread(target=self._run, name="charnn-generate", daemon=True)
        self.stopping = threading.Event()
        # read by /v1/health, written by the worker only
        self.active_rows = 0
        self.ticks = 0  # model steps taken
        self.rows_stepped = 0  # rows over all of them: rows_stepped / ticks is the mean batch
        self.waiting: list[Job] = []
        self.failure: BaseException | None = None  # what ended the worker, if not stop()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """End every job (their clients get what was generated so far) and the worker."""
        self.stopping.set()
        self.incoming.put(None)

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def submit(self, job: Job) -> None:
        if self.failure is not None:
            raise RuntimeError("the generation worker has failed") from self.failure
        if self.stopping.is_set():
            job.deliver(("end", job.result()))
            return
        self.incoming.put(job)

    # --- the worker thread ---------------------------------------------------------------

    def _run(self) -> None:
        jobs: list[Job] = []
        try:
            self._loop(jobs)
        except BaseException as err:  # end every request, not leave them waiting forever
            self.failure = err
            traceback.print_exc(file=sys.stderr)  # the operator's log
            for job in jobs + self.waiting:
                job.deliver(("end", job.result()))

    def _loop(self, jobs: list[Job]) -> None:
        """Ticks until stop(); `jobs` is kept current, for _run to end them on a failure."""
        logits = np.empty((0, len(self.vocab)), dtype=np.float32)
        state: list = []
        while True:
            logits, state = self._admit(jobs, logits, state, block=not jobs)
            if self.stopping.is_set():
                for job in jobs + self.waiting:
                    job.deliver(("end", job.result()))
                return
            ids, keep = self._choose_and_hand_out(jobs, logits)
            if not all(keep):
                rows = np.concatenate(
                    [np.full(j.rows, k) for j, k in zip(jobs, keep, strict=True)]
                ).astype(bool)
                jobs[:] = [j for j, k in zip(jobs, keep, strict=True) if k]
                ids, logits = ids[rows], logits[rows]
                state = _take_rows(state, rows)
            self.active_rows = len(ids)
            if jobs:
                logits, state = self.stepper.step(ids, state)
                self.ticks += 1
                self.rows_stepped += len(ids)

    def _admit(
        self, jobs: list[Job], logits: np.ndarray, state: list, block: bool
    ) -> tuple[np.ndarray, list]:
        """Add newly arrived jobs to `jobs` (waiting for one when idle) while there is room."""
        while True:
            if not self.waiting:
                try:
                    job = self.incoming.get(block=block and not self.stopping.is_set())
                except queue.Empty:
                    break
                if job is None:  # stop() wakes an idle worker
                    break
                self.waiting.append(job)
            rows = sum(j.rows for j in jobs)
            job = self.waiting[0]
            if jobs and rows + job.rows > self.max_rows:
                break
            self.waiting.pop(0)
            if job.cancelled.is_set():
                job.deliver(("end", job.result()))
                continue
            first_logits, first_state = self._prime(job.config.prime, job.rows)
            jobs.append(job)
            logits = np.concatenate([logits, first_logits])
            state = first_state if len(jobs) == 1 else _concat_rows(state, first_state)
            block = False
        return logits, state

    def _prime(self, prime: str, rows: int) -> tuple[np.ndarray, list]:
        """Logits (rows, vocab) after reading the prime, and the state; as generation.sampler reads
        it (no prime: as after a newline). Recent primes are cached: /generate asks for several
        completions of one text, and an editor asks again for the same text."""
        if prime not in self.primes:
            vocab, model = self.vocab, self.loaded.model
            start = prime or ("\n" if "\n" in vocab else vocab.chars[0])
            with torch.no_grad():
                ids = torch.as_tensor(vocab.encode(start))[None]
                out, torch_state = model(ids)
            self.primes[prime] = (
                out[0, -1:].float().numpy(),
                self.stepper.state_from_torch(torch_state),
            )
            if len(self.primes) > self.prime_cache:
                self.primes.popitem(last=False)
        self.primes.move_to_end(prime)
        logits, state = self.primes[prime]
        return np.repeat(logits, rows, axis=0), _repeat_rows(state, rows)

    def _choose_and_hand_out(
        self, jobs: list[Job], logits: np.ndarray
    ) -> tuple[np.ndarray, list[bool]]:
        """Next ids for every row; each job gets its new text; False for the jobs that ended."""
        ids = np.empty(len(logits), dtype=np.int64)
        starts = np.cumsum([0] + [j.rows for j in jobs])
        groups: dict[tuple, list[int]] = {}  # jobs with the same filtering choose in one call
        for k, job in enumerate(jobs):
            if job.penalty is not None:  # as charnn.generation.sampler.generate: before choosing
                block = slice(starts[k], starts[k + 1])
                logits[block] = job.penalty.adjust(logits[block])
            c = job.config
            groups.setdefault((c.temperature, c.top_k, c.top_p), []).append(k)
        for members in groups.values():
            rows = np.concatenate([np.arange(starts[k], starts[k + 1]) for k in members])
            group = [jobs[k] for k in members]
            ids[rows] = choose(logits[rows], group[0].config, _StackedDraws(group))  # type: ignore[arg-type]
        chars = self.vocab.chars
        keep = []
        for k, job in enumerate(jobs):
            if job.penalty is not None:
                job.penalty.append(ids[starts[k] : starts[k + 1]])
            keep.append(
                self._advance(job, [chars[i] for i in ids[starts[k] : starts[k + 1]].tolist()])
            )
        return ids, keep

    def _advance(self, job: Job, chars: list[str]) -> bool:
        """Feed one tick's characters to a job's rows; deliver; False when the job has ended."""
        job.produced += 1
        length = job.config.length
        pieces = []
        for row, char in enumerate(chars):
            if job.reasons[row] is not None:
                continue
            stop_filter = job.filters[row]
            piece = stop_filter.feed(char)
            if stop_filter.stopped is not None:
                job.reasons[row] = "stop"
            elif job.until is not None and job.until(job.texts[row] + piece + stop_filter.pending):
                piece += stop_filter.flush()
                job.reasons[row] = "until"
            elif job.produced == length:
                piece += stop_filter.flush()
                job.reasons[row] = "length"
            if piece:
                job.texts[row] += piece
                pieces.append((row, piece))
        cancelled = job.cancelled.is_set() or self.stopping.is_set()
        if job.stream and pieces and not cancelled:
            job.deliver(("pieces", pieces))
        if cancelled or all(r is not None for r in job.reasons):
            job.deliver(("end", job.result()))
            return False
        return True


def _concat_rows(a: list, b: list) -> list:
    if isinstance(a[0], tuple):
        return [
            (np.concatenate([h, h2]), np.concatenate([c, c2]))
            for (h, c), (h2, c2) in zip(a, b, strict=True)
        ]
    return [np.concatenate([h, h2]) for h, h2 in zip(a, b, strict=True)]


def _take_rows(state: list, rows: np.ndarray) -> list:
    if isinstance(state[0], tuple):
        return [(h[rows], c[rows]) for h, c in state]
    return [h[rows] for h in state]


def _repeat_rows(state: list, n: int) -> list:
    if isinstance(state[0], tuple):
        return [(np.repeat(h, n, axis=0), np.repeat(c, n, axis=0)) for h, c in state]
    return [np.repeat(h, n, axis=0) for h in state]
