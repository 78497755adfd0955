"""Dynamic batching: one worker thread generates every running request together.

The generating is generation.rows': one tick chooses every row's next character and steps the
model once over all of them. What the server adds is the scheduling: requests arrive at any
time on a queue; between two ticks the worker admits the newly arrived ones while there is room
(reading each prime in one pass, recent primes cached), hands each its pieces, and ends those
that finished or whose client went away. A request gives the text `charnn sample` gives for the
same settings and seed.
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

from charnn.checkpoints.loading import LoadedModel, label_weights_for
from charnn.config.sample import SampleConfig
from charnn.generation.prime import Primed, read_prime
from charnn.generation.rows import Generation, Piece, Rows, Until
from charnn.nn.stepper import Stepper

# what a job reports, from the worker thread: ("pieces", [(row, text), ...]) while streaming,
# then once ("end", Result)
Event = tuple[str, Any]


@dataclass
class Result:
    texts: list[str]
    finish_reasons: list[str]  # "length", "stop" (a stop string), "until", "cancelled"
    seconds: float


@dataclass
class Job:
    """One request: its generation, and how its events reach the client."""

    config: SampleConfig
    deliver: Callable[[Event], None]  # called on the worker thread; must not block
    stream: bool = False  # deliver pieces as they come, not only the end
    until: Until | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.perf_counter)
    generation: Generation = field(init=False)

    def __post_init__(self) -> None:
        self.generation = Generation(self.config, self.until)

    @property
    def rows(self) -> int:
        return self.generation.rows

    def cancel(self) -> None:
        """Stop generating for this job (its client went away); safe from any thread."""
        self.cancelled.set()

    def result(self) -> Result:
        generation = self.generation
        reasons = [reason or "cancelled" for reason in generation.reasons]
        return Result(list(generation.texts), reasons, time.perf_counter() - self.started)

    def end(self) -> None:
        self.deliver(("end", self.result()))


class Engine:
    """Owns the model and the worker thread; `submit` jobs from any thread."""

    def __init__(self, loaded: LoadedModel, max_rows: int = 64, prime_cache: int = 32) -> None:
        self.loaded = loaded
        self.stepper = Stepper(loaded.model)
        self.max_rows = max_rows  # rows stepped together at most; later jobs wait their turn
        self.incoming: queue.Queue[Job | None] = queue.Queue()
        self.primes: OrderedDict[tuple[str, str | None], Primed] = OrderedDict()
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
            job.end()
            return
        self.incoming.put(job)

    # --- the worker thread ---------------------------------------------------------------

    def _run(self) -> None:
        jobs: dict[int, Job] = {}  # by id() of its generation
        try:
            self._loop(jobs)
        except BaseException as err:  # end every request, not leave them waiting forever
            self.failure = err
            traceback.print_exc(file=sys.stderr)  # the operator's log
            for job in [*jobs.values(), *self.waiting]:
                job.end()

    def _loop(self, jobs: dict[int, Job]) -> None:
        """Ticks until stop(); `jobs` is kept current, for _run to end them on a failure."""
        rows = Rows(self.stepper, self.loaded.vocab)
        while True:
            self._admit(rows, jobs, block=not jobs)
            if self.stopping.is_set():
                for job in [*jobs.values(), *self.waiting]:
                    job.end()
                return
            for job in jobs.values():
                if job.cancelled.is_set():
                    job.generation.cancel()
            rows.drop_ended()
            for generation, pieces in rows.tick():
                self._hand_out(jobs[id(generation)], pieces)
            for key in [key for key, job in jobs.items() if job.generation.ended]:
                jobs.pop(key).end()
            self.active_rows = len(rows)  # the rows the tick stepped
            if rows.generations:
                self.ticks += 1
                self.rows_stepped += len(rows)

    def _hand_out(self, job: Job, pieces: list[Piece]) -> None:
        if job.stream and pieces and not job.cancelled.is_set():
            job.deliver(("pieces", pieces))

    def _admit(self, rows: Rows, jobs: dict[int, Job], block: bool) -> None:
        """Add newly arrived jobs (waiting for one when idle) while there is room."""
        while True:
            if not self.waiting:
                try:
                    job = self.incoming.get(block=block and not self.stopping.is_set())
                except queue.Empty:
                    break
                if job is None:  # stop() wakes an idle worker
                    break
                self.waiting.append(job)
            job = self.waiting[0]
            if jobs and len(rows) + job.rows > self.max_rows:
                break
            self.waiting.pop(0)
            if job.cancelled.is_set():
                job.end()
                continue
            rows.admit(job.generation, self._primed(job.config.prime, job.config.label))
            jobs[id(job.generation)] = job
            block = False

    def _primed(self, prime: str, label: str | None) -> Primed:
        """What reading the prime in its label leaves, as generation.prime reads it. Recent
        primes are cached: /generate asks for several completions of one text, and an editor
        asks again for the same text. (The label was checked with the request.)"""
        key = (prime, label)
        if key not in self.primes:
            loaded = self.loaded
            weights = label_weights_for(loaded.labels, label)
            self.primes[key] = read_prime(loaded.model, loaded.vocab, prime, self.stepper,
                                          weights)  # fmt: skip
            if len(self.primes) > self.prime_cache:
                self.primes.popitem(last=False)
        self.primes.move_to_end(key)
        return self.primes[key]
