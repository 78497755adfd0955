"""What the units track and how the gates are used: feature search, saturation, colouring.

After Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks":
some cells of a character-level LSTM switch on inside quotes, count along a line or follow
bracket depth; and how often a gate is saturated (< 0.1 or > 0.9) tells how the network uses
its memory.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import asdict, dataclass

import numpy as np

from charnn.errors import SettingError, literal
from charnn.inspect.trace import Trace

GATE_NAMES = ("forget", "input", "output", "update", "reset")
LEFT, RIGHT = 0.1, 0.9  # a gate below LEFT is left-saturated (shut), above RIGHT right (open)
NAMED_FEATURES = ("quotes", "line-position", "brackets")
OPENERS, CLOSERS = "([{", ")]}"


def feature(text: str, name: str) -> np.ndarray:
    """A property of the text after each character, (T,) floats.

    quotes: 1 from an opening double quote up to its closing one (which reads 0, like the
    state after it); line-position: characters read since the last newline; brackets: the
    nesting depth of ( [ {; anything else is a regular expression, 1 inside its matches.
    """
    values = np.zeros(len(text))
    if name == "quotes":
        inside = False
        for t, char in enumerate(text):
            if char in '"“”':
                inside = char == "“" or (char == '"' and not inside)
            values[t] = inside
    elif name == "line-position":
        position = 0
        for t, char in enumerate(text):
            position = 0 if char == "\n" else position + 1
            values[t] = position
    elif name == "brackets":
        depth = 0
        for t, char in enumerate(text):
            depth += (char in OPENERS) - (char in CLOSERS)
            depth = max(depth, 0)
            values[t] = depth
    else:
        try:
            pattern = re.compile(name)
        except re.error as err:
            raise SettingError(
                f"{{find}} {literal(repr(name))} is neither {', '.join(NAMED_FEATURES)} nor a "
                f"regular expression ({literal(err)})"
            ) from None
        for match in pattern.finditer(text):
            values[match.start() : match.end()] = 1.0
    if values.std() == 0:
        raise SettingError(
            f"{{find}} {literal(name)}: the feature never changes in this text, so no unit can "
            "follow it; use a text where it does"
        )
    return values


@dataclass(frozen=True)
class UnitScore:
    layer: int
    what: str
    unit: int
    score: float  # Pearson correlation with the feature, in [-1, 1]


def rank_units(
    trace: Trace,
    target: np.ndarray,
    whats: tuple[str, ...] | None = None,
    layers: tuple[int, ...] | None = None,
) -> list[UnitScore]:
    """Every unit of the chosen kinds and layers, by |correlation| with `target`, best first."""
    centred_target = (target - target.mean()) / target.std()
    scores = []
    for what in whats or tuple(trace.values):
        values = trace.values[what].astype(np.float64)  # (layers, T, H)
        centred = values - values.mean(axis=1, keepdims=True)
        spread = centred.std(axis=1)  # (layers, H)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.einsum("lth,t->lh", centred, centred_target) / len(target) / spread
        r = np.nan_to_num(r)  # a unit that never changes follows nothing
        for layer in layers or range(trace.layers):
            scores += [UnitScore(layer, what, u, float(r[layer, u])) for u in range(r.shape[1])]
    return sorted(scores, key=lambda s: -abs(s.score))


@dataclass(frozen=True)
class Saturation:
    layer: int
    gate: str
    left: float  # fraction of (character, unit) pairs with the gate below LEFT
    right: float  # ... above RIGHT
    left_per_unit: list[float]
    right_per_unit: list[float]


def saturation(trace: Trace) -> list[Saturation]:
    """For each layer and gate, how often it is shut (< 0.1) and open (> 0.9)."""
    found = []
    for gate in GATE_NAMES:
        if gate not in trace.values:
            continue
        for layer, values in enumerate(trace.values[gate]):  # values (T, H)
            left, right = values < LEFT, values > RIGHT
            found.append(
                Saturation(
                    layer,
                    gate,
                    float(left.mean()),
                    float(right.mean()),
                    left.mean(axis=0).tolist(),
                    right.mean(axis=0).tolist(),
                )
            )
    return found


def colour_scale(values: np.ndarray, what: str) -> np.ndarray:
    """Values mapped to [-1, 1] for a diverging colour scale: gates around 0.5, hidden states
    in tanh's range, the cell state (unbounded) by its largest magnitude in the text, the
    mogrifier's scaling of h around 1 (which leaves h as it was)."""
    if what in GATE_NAMES:
        return np.clip(2.0 * values - 1.0, -1.0, 1.0)
    if what == "mogrify":
        return np.clip(values - 1.0, -1.0, 1.0)
    if what == "cell":
        return values / max(float(np.abs(values).max()), 1e-9)
    return np.clip(values, -1.0, 1.0)


def rgb(scaled: float) -> tuple[int, int, int]:
    """White at 0, red towards +1, blue towards -1."""
    fade = int(round(255 * (1.0 - abs(scaled))))
    return (255, fade, fade) if scaled >= 0 else (fade, fade, 255)


def shown_char(char: str) -> str:
    return {"\n": "⏎", "\t": "⇥"}.get(char, char)


def render_html(
    trace: Trace,
    what: str,
    layer: int,
    unit: int,
    title: str,
    ranking: list[UnitScore] | None = None,
    saturations: list[Saturation] | None = None,
) -> str:
    """A self-contained page: each character a coloured <span> carrying its value (data-v) and
    the model's top next characters (data-next); hovering shows both."""
    values = trace.unit(what, layer, unit)
    scaled = colour_scale(values, what)
    spans = []
    for t, char in enumerate(trace.text):
        r, g, b = rgb(float(scaled[t]))
        guesses = json.dumps([[c, round(p, 4)] for c, p in trace.next_chars[t]], ensure_ascii=False)
        spans.append(
            f'<span class="c" style="background:rgb({r},{g},{b})" data-v="{values[t]:.4f}" '
            f'data-next="{html.escape(guesses)}">{html.escape(shown_char(char))}</span>'
            + ("<br>" if char == "\n" else "")
        )
    parts = [
        _PAGE_HEAD.format(title=html.escape(title)),
        f"<h1>{html.escape(title)}</h1>",
        f"<p>layer {layer}, unit {unit}, {what}: red is high, blue low; hover a character.</p>",
        f'<div class="text">{"".join(spans)}</div>',
    ]
    if ranking:
        rows = "".join(
            f"<tr><td>{s.layer}</td><td>{s.what}</td><td>{s.unit}</td><td>{s.score:+.3f}</td></tr>"
            for s in ranking
        )
        parts.append(
            "<h2>Units that follow the feature</h2><table><tr><th>layer</th><th>what</th>"
            f"<th>unit</th><th>correlation</th></tr>{rows}</table>"
        )
    if saturations:
        parts.append(_saturation_html(saturations))
    parts.append(_PAGE_TAIL)
    return "\n".join(parts)


def _saturation_html(saturations: list[Saturation]) -> str:
    """A table, and per gate and layer a scatter of units: x left-, y right-saturated."""
    rows = "".join(
        f"<tr><td>{s.layer}</td><td>{s.gate}</td><td>{s.left:.3f}</td><td>{s.right:.3f}</td></tr>"
        for s in saturations
    )
    size, pad = 160, 20
    plots = []
    for s in saturations:
        dots = "".join(
            f'<circle cx="{pad + x * size:.1f}" cy="{pad + (1 - y) * size:.1f}" r="2"/>'
            for x, y in zip(s.left_per_unit, s.right_per_unit, strict=True)
        )
        plots.append(
            f'<figure><svg class="sat" width="{size + 2 * pad}" height="{size + 2 * pad}">'
            f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad + size}" y2="{pad + size}"/>{dots}</svg>'
            f"<figcaption>layer {s.layer} {s.gate}: x left-saturated, y right-saturated"
            "</figcaption></figure>"
        )
    return (
        f"<h2>Gate saturation (left &lt; {LEFT}, right &gt; {RIGHT})</h2><table><tr>"
        "<th>layer</th><th>gate</th><th>left</th><th>right</th></tr>"
        f'{rows}</table><div class="plots">{"".join(plots)}</div>'
    )


def to_json(
    trace: Trace,
    what: str,
    layer: int,
    unit: int,
    ranking: list[UnitScore] | None,
    saturations: list[Saturation] | None,
) -> dict:
    values = trace.unit(what, layer, unit)
    found: dict = {"layer": layer, "unit": unit, "what": what}
    found["chars"] = list(trace.text)
    found["values"] = [round(float(v), 6) for v in values]
    if ranking is not None:
        found["find"] = [asdict(s) for s in ranking]
    if saturations is not None:
        found["saturation"] = [
            {"layer": s.layer, "gate": s.gate, "left": s.left, "right": s.right}
            for s in saturations
        ]
    return found


_PAGE_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
.text {{ font-family: monospace; font-size: 15px; line-height: 1.6; }}
.c {{ white-space: pre; cursor: default; }}
#tip {{ position: fixed; background: #222; color: #eee; padding: 6px 9px; font: 13px monospace;
        border-radius: 4px; pointer-events: none; display: none; white-space: pre; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
.plots {{ display: flex; flex-wrap: wrap; }}
svg.sat rect {{ fill: none; stroke: #999; }} svg.sat line {{ stroke: #ddd; }}
svg.sat circle {{ fill: #c33; fill-opacity: 0.5; }}
figcaption {{ font-size: 12px; max-width: 200px; }}
</style></head><body>"""

_PAGE_TAIL = """<div id="tip"></div>
<script>
const tip = document.getElementById("tip");
document.querySelectorAll(".c").forEach(el => {
  el.addEventListener("mousemove", e => {
    const next = JSON.parse(el.dataset.next)
      .map(([c, p]) => JSON.stringify(c) + "  " + p.toFixed(3)).join("\\n");
    tip.textContent = "value " + el.dataset.v + "\\nnext:\\n" + next;
    tip.style.left = (e.clientX + 14) + "px"; tip.style.top = (e.clientY + 14) + "px";
    tip.style.display = "block";
  });
  el.addEventListener("mouseleave", () => { tip.style.display = "none"; });
});
</script></body></html>
"""
