"""How to sample: the settings of one request for text, checked in the words of their fields."""

from __future__ import annotations

import math
from dataclasses import dataclass

from charnn.config.checks import check, check_types
from charnn.errors import literal

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
    # a conditioned model's label: "poems", or a mix "poems=0.7,letters=0.3" (None: "any")
    label: str | None = None

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
        if self.label is not None:
            label_weights(self.label)  # a clear error now for a mix that does not read

    def _check_beam(self, beam: int) -> None:
        check(beam >= 1, "{beam} must be at least 1")
        drawn = self.temperature != 1 or self.top_k is not None or self.top_p is not None
        check(not drawn, "{beam} searches for the likeliest text and draws nothing: leave out "
                         "{temperature}, {top_k} and {top_p}")  # fmt: skip
        check(self.num_samples == 1, "{beam} finds one text: leave out {num_samples}")
        check(self.length > 0, "{beam} needs a {length} above 0")


def label_weights(text: str) -> dict[str, float]:
    """ "poems" -> {"poems": 1.0}; "poems=0.7,letters=0.3" -> each label's share of the mix,
    summing to 1."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, equals, weight = (side.strip() for side in part.partition("="))  # "poems = 0.7"
        try:
            value = float(weight) if equals else 1.0  # "poems=" names no weight: refused
        except ValueError:
            value = math.nan
        check(bool(name) and math.isfinite(value) and value >= 0,
              f"{{label}} {literal(repr(text))} must be a label, or labels with weights such as "
              "poems=0.7,letters=0.3")  # fmt: skip
        weights[name] = weights.get(name, 0.0) + value
    largest = max(weights.values())
    check(largest > 0, f"{{label}} {literal(repr(text))}: the weights must not all be 0")
    scaled = {name: value / largest for name, value in weights.items()}  # no overflow in the sum
    total = sum(scaled.values())
    return {name: value / total for name, value in scaled.items()}
