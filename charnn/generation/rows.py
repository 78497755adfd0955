"""The rows in flight: every sample being generated, stepped together one character a tick.

`charnn sample` (generation.sampler) and the server's engine generate here; beam search, which
keeps its own rows (the best beams), shares the prime, the stepper and the row operations:

    tick:  choose next characters  ->  hand out the pieces  ->  drop what ended  ->  one step
    rows:  [ generation A: 1 row | generation B: 3 rows (num_samples=3) | C: 1 row ]  (B=5, vocab)

A `Generation` is one request's rows: its seeded draws, its repetition penalty, its stop strings
and the text so far. It draws from its own generator in the same order whatever else is in the
batch, so the same settings and seed give the same text alone or beside others (the arithmetic
of a larger batch can differ in the last bits, which in rare cases changes a character). Its
rows stay in the batch until the whole generation ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from charnn.config.sample import SampleConfig
from charnn.generation.choose import choose, filtering
from charnn.generation.penalty import RepetitionPenalty
from charnn.generation.prime import Primed
from charnn.nn.stepper import Stepper, StepperState, join_rows, take_rows
from charnn.text.vocab import Vocab

Piece = tuple[int, str]  # (row of its generation, text)
Until = Callable[[str], bool]  # ends a row early when it returns True for the row's text


class StopFilter:
    """Holds back text that might be the start of a stop string, and notices a complete one."""

    def __init__(self, stops: tuple[str, ...], include_stop: bool) -> None:
        self.stops = stops
        self.include_stop = include_stop
        self.pending = ""
        self.stopped: str | None = None

    def feed(self, char: str) -> str:
        """Take one generated character; return the text that is now safe to hand out."""
        if not self.stops:
            return char
        self.pending += char
        for stop in self.stops:
            if self.pending.endswith(stop):
                self.stopped = stop
                out = self.pending if self.include_stop else self.pending[: -len(stop)]
                self.pending = ""
                return out
        held = max(
            (n for s in self.stops for n in range(1, len(s)) if self.pending.endswith(s[:n])),
            default=0,
        )
        safe = len(self.pending) - held
        out, self.pending = self.pending[:safe], self.pending[safe:]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@dataclass
class Generation:
    """One request: `config.num_samples` rows drawn from one generator seeded by `config.seed`.
    A row ends at `config.length` characters (0: never), at a stop string, or where `until`
    says so; `cancel` ends the rest."""

    config: SampleConfig
    until: Until | None = None
    rng: np.random.Generator = field(init=False)
    filters: list[StopFilter] = field(init=False)
    texts: list[str] = field(init=False)
    reasons: list[str | None] = field(init=False)  # "length", "stop", "until", "cancelled"
    penalty: RepetitionPenalty | None = field(init=False)  # its rows' recent text
    produced: int = 0

    def __post_init__(self) -> None:
        n, config = self.config.num_samples, self.config
        self.rng = np.random.default_rng(config.seed)
        self.filters = [StopFilter(config.stop, config.include_stop) for _ in range(n)]
        self.texts = [""] * n
        self.reasons = [None] * n
        penalty = config.repetition_penalty  # 1 is no penalty: not even its arithmetic
        self.penalty = RepetitionPenalty(penalty, n) if penalty != 1 else None

    @property
    def rows(self) -> int:
        return self.config.num_samples

    @property
    def ended(self) -> bool:
        return all(reason is not None for reason in self.reasons)

    def cancel(self) -> None:
        """End every row still running (its text so far stays)."""
        self.reasons = [reason or "cancelled" for reason in self.reasons]

    def advance(self, chars: list[str]) -> list[Piece]:
        """Take one tick's characters, one per row; the text each running row hands out."""
        self.produced += 1
        pieces = []
        for row, char in enumerate(chars):
            if self.reasons[row] is not None:
                continue
            stop_filter = self.filters[row]
            piece = stop_filter.feed(char)
            if stop_filter.stopped is not None:
                self.reasons[row] = "stop"
            elif self.until is not None and self.until(
                self.texts[row] + piece + stop_filter.pending
            ):
                piece += stop_filter.flush()
                self.reasons[row] = "until"
            elif self.produced == self.config.length:
                piece += stop_filter.flush()
                self.reasons[row] = "length"
            if piece:
                self.texts[row] += piece
                pieces.append((row, piece))
        return pieces


class Rows:
    """Every generation in flight, as one batch: one row of logits and state per row."""

    def __init__(self, stepper: Stepper, vocab: Vocab) -> None:
        self.stepper = stepper
        self.vocab = vocab
        self.generations: list[Generation] = []
        self.logits = np.empty((0, len(vocab)), dtype=np.float32)
        self.state: StepperState = []
        self.bias: np.ndarray | None = None  # each row's label, for a conditioned model

    def __len__(self) -> int:
        return len(self.logits)

    def admit(self, generation: Generation, primed: Primed) -> None:
        """Add a generation's rows, each starting from what reading its prime left."""
        logits, state, bias = primed.rows(generation.rows)
        first = not self.generations
        self.state = state if first else join_rows(self.state, state)
        if bias is not None:
            self.bias = bias if first or self.bias is None else np.concatenate([self.bias, bias])
        self.logits = np.concatenate([self.logits, logits])
        self.generations.append(generation)

    def tick(self) -> list[tuple[Generation, list[Piece]]]:
        """Choose every row's next character, hand each generation its pieces, drop the
        generations that ended, and step the rest once."""
        ids = self._choose()
        chars = self.vocab.chars
        handed = []
        for generation, block in zip(self.generations, self._blocks(), strict=True):
            if generation.penalty is not None:
                generation.penalty.append(ids[block])
            pieces = generation.advance([chars[i] for i in ids[block].tolist()])
            handed.append((generation, pieces))
        self._keep(ids)
        return handed

    def drop_ended(self) -> None:
        """Drop the generations that ended between ticks (cancelled) without stepping."""
        keep = [not generation.ended for generation in self.generations]
        if not all(keep):
            rows = np.repeat(keep, [generation.rows for generation in self.generations])
            self.generations = [g for g, kept in zip(self.generations, keep, strict=True) if kept]
            self.logits, self.state = self.logits[rows], take_rows(self.state, rows)
            self.bias = None if self.bias is None else self.bias[rows]

    def _blocks(self) -> list[slice]:
        starts = np.cumsum([0] + [generation.rows for generation in self.generations])
        return [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]

    def _choose(self) -> np.ndarray:
        """Next ids for every row: each generation's penalty first, then one call per kind of
        filtering, each generation's rows given its own draws."""
        ids = np.empty(len(self.logits), dtype=np.int64)
        groups: dict[tuple, list[tuple[Generation, slice]]] = {}
        for generation, block in zip(self.generations, self._blocks(), strict=True):
            if generation.penalty is not None:
                self.logits[block] = generation.penalty.adjust(self.logits[block])
            groups.setdefault(filtering(generation.config), []).append((generation, block))
        vocab = self.logits.shape[1]
        for members in groups.values():
            rows = np.concatenate([np.arange(block.start, block.stop) for _, block in members])

            def noise(members: list[tuple[Generation, slice]] = members) -> np.ndarray:
                return np.concatenate([g.rng.gumbel(size=(g.rows, vocab)) for g, _ in members])

            ids[rows] = choose(self.logits[rows], members[0][0].config, noise)
        return ids

    def _keep(self, ids: np.ndarray) -> None:
        """Drop the generations that ended, then step the others' rows once."""
        keep = [not generation.ended for generation in self.generations]
        rows = np.repeat(keep, [generation.rows for generation in self.generations])
        self.generations = [g for g, kept in zip(self.generations, keep, strict=True) if kept]
        if not all(keep):
            ids, self.state = ids[rows], take_rows(self.state, rows)
            self.bias = None if self.bias is None else self.bias[rows]
        if self.generations:
            self.logits, self.state = self.stepper.step(ids, self.state, self.bias)
        else:
            self.logits, self.state, self.bias = self.logits[:0], [], None
