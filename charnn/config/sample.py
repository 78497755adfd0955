"""How to sample: the settings of one request for text, checked in the words of their fields."""

from __future__ import annotations

from dataclasses import dataclass

from charnn.config.checks import check, check_types

UNKNOWN = ("error", "skip")  # what to do with prime characters the model never saw
MAX_SEED = 2**63 - 1  # NumPy's generators take any whole number of at least 0


@dataclass(frozen=True)
class SampleConfig:
    """How to sample. `length` 0 means no limit (until a stop string, or forever)."""

    length: int = 500
    temperature: float = 1.0  # 0: always the most likely character
    top_k: int | None = None  # keep only the k most likely characters
    top_p: float | None = None  # keep the smallest set whose probability reaches p (nucleus)
    prime: str = ""
    stop: tuple[str, ...] = ()  # a sample ends when one of these appears
    include_stop: bool = False  # keep the stop string at the end of the sample
    num_samples: int = 1
    seed: int | None = None
    unknown: str = "error"  # prime characters outside the vocabulary: "error" or "skip"
    repetition_penalty: float = 1.0  # above 1 discounts copying recent text (generation.penalty)
    beam: int | None = None  # beam search of this width for the likeliest text

    def __post_init__(self) -> None:
        if isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
        check_types(self)
        check(self.length >= 0, "{length} must be 0 (no limit) or more")
        check(self.temperature >= 0, "{temperature} must be 0 (greedy) or more")
        check(self.top_k is None or self.top_k >= 1, "{top_k} must be at least 1")
        check(self.top_p is None or 0 < self.top_p <= 1, "{top_p} must be in (0, 1]")
        check(self.num_samples >= 1, "{num_samples} must be at least 1")
        check(all(self.stop), "{stop} strings must not be empty")
        check(self.unknown in UNKNOWN, f"{{unknown}} must be one of {', '.join(UNKNOWN)}")
        check(self.repetition_penalty >= 1, "{repetition_penalty} must be at least 1 (1: none)")
        check(self.seed is None or 0 <= self.seed <= MAX_SEED,
              f"{{seed}} must be from 0 to {MAX_SEED}")  # fmt: skip
        if self.beam is not None:
            self._check_beam(self.beam)

    def _check_beam(self, beam: int) -> None:
        check(beam >= 1, "{beam} must be at least 1")
        drawn = self.temperature != 1 or self.top_k is not None or self.top_p is not None
        check(not drawn, "{beam} searches for the likeliest text and draws nothing: leave out "
                         "{temperature}, {top_k} and {top_p}")  # fmt: skip
        check(self.num_samples == 1, "{beam} finds one text: leave out {num_samples}")
        check(self.length > 0, "{beam} needs a {length} above 0")
