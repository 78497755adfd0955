"""Planning a run: the settings left as None get values chosen for this budget and this machine.

One function decides them, for the CLI and the Python API alike; a setting given a value is never
changed. Measured on tinyshakespeare with a 2-core CPU (bench/RESULTS.md): within about a minute
a 2x256 LSTM takes enough steps to win and weight decay does not help; given a few minutes a
2x384 one does, with weight decay; given ten, 2x512 with dropout. Within any budget, where the
CPU multiplies bf16 in hardware, bf16 autocast takes about 1.2-1.4x the steps in the same time
and reached lower bits/char.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from charnn.config import FALLBACK, TrainConfig

LONG_BUDGET = 180.0  # seconds: from here on a wider model wins, with weight decay
LONGER_BUDGET = 480.0  # ...and from here on a still wider one, with dropout against overfitting
LONG_WEIGHT_DECAY = 0.1


@dataclass(frozen=True)
class Plan:
    config: TrainConfig  # every setting decided
    chosen: dict[str, Any]  # what the plan set to other than its FALLBACK value, by name
    why: str  # what the choice rests on

    @property
    def notice(self) -> str | None:
        """One line for the user, when the plan changed anything from the fallbacks."""
        if not self.chosen:
            return None
        what = ", ".join(
            f"{value} autocast" if name == "precision" else f"{name.replace('_', ' ')} {value}"
            for name, value in self.chosen.items()
        )
        return f"planned for {self.why}: {what} (a flag given explicitly wins)"


def plan_run(config: TrainConfig, native_bf16: bool = False) -> Plan:
    """Decide every setting left as None; `native_bf16`: the training CPU multiplies bf16 in
    hardware (charnn.devices.cpu_has_native_bf16), so bf16 autocast gets further in a budget."""
    budget = config.time_budget
    wanted: dict[str, Any] = {}
    reasons = []
    if budget is not None:
        reasons.append(f"a {_duration(budget)} budget")
        if native_bf16:
            wanted["precision"] = "bf16"
            reasons.append("a CPU that multiplies bf16 in hardware")
        if budget >= LONG_BUDGET:
            wanted["hidden_size"] = 512 if budget >= LONGER_BUDGET else 384
            wanted["weight_decay"] = LONG_WEIGHT_DECAY
        if budget >= LONGER_BUDGET:
            wanted["dropout"] = 0.2
    model_names = {"hidden_size", "dropout"}
    unset = {name for name in FALLBACK if _value(config, name, model_names) is None}
    chosen = {name: value for name, value in wanted.items() if name in unset}
    model = replace(config.model, **{k: v for k, v in chosen.items() if k in model_names})
    planned = replace(
        config, model=model, **{k: v for k, v in chosen.items() if k not in model_names}
    )
    return Plan(planned.complete(), chosen, " on ".join(reasons) or "no time budget")


def _value(config: TrainConfig, name: str, model_names: set[str]) -> Any:
    return getattr(config.model if name in model_names else config, name)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return (
        f"{minutes}m{secs:02d}s" if minutes and secs else f"{minutes}m" if minutes else f"{secs}s"
    )
