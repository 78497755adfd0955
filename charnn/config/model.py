"""The network's settings: embedding -> recurrent stack -> linear decoder.

`ModelConfig` is what a user asks for: a setting left as None is planned for the run
(training.plan). `ModelSpec` is a model as built, every setting decided: what `CharRNN` takes
and what a checkpoint stores. Its defaults are what an unplanned setting becomes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from charnn.config.checks import check, check_types, known_fields
from charnn.errors import literal

CELLS = ("rnn", "rnn-relu", "lstm", "gru", "peephole", "cifg", "mogrifier")
# The dropout before the decoder, as a share of the dropout between layers: half beat one rate
# for both on two corpora (docs/experiments.md#regularisation)
DECODER_DROPOUT_SHARE = 0.5


@dataclass(frozen=True)
class ModelConfig:
    """The model a user asks for; None: planned for the run."""

    vocab_size: int = 0  # filled in from the corpus
    cell: str = "lstm"  # rnn (tanh) | rnn-relu | lstm | gru | peephole | cifg | mogrifier
    layers: int = 2
    hidden_size: int | None = None  # units per layer
    embed_size: int | None = None  # planned from the vocabulary's size
    dropout: float | None = None  # between layers
    decoder_dropout: float | None = None  # before the decoder; None: a share of `dropout`
    # regularisation of the AWD-LSTM family (Merity et al. 2017):
    weight_drop: float | None = None  # DropConnect on the hidden-to-hidden weights, per batch
    embed_dropout: float = 0.0  # whole characters' embeddings dropped, one mask per batch
    locked_dropout: bool = False  # the dropout before the decoder keeps one mask per sequence
    # LSTM-family forget-gate bias at the start (char-rnn uses 1.0); None keeps PyTorch's
    # initialisation, which reached lower bits/char within short budgets
    forget_bias: float | None = None
    # the mogrifier's rounds of x and h gating each other before each step: the paper's 5
    # (Melis et al. 2020); 0 is the LSTM. Other cells ignore it
    mogrifier_rounds: int = 5
    # a model conditioned on labels (styles, authors, languages): each has a learned embedding,
    # label_size wide, that joins the character's at every step; one more, "any", stands for
    # none (0 labels: an unconditioned model)
    labels: int = 0
    label_size: int = 16

    def __post_init__(self) -> None:
        check_types(self)
        check(
            self.cell in CELLS,
            f"{{cell}} must be one of {', '.join(CELLS)}, not {literal(repr(self.cell))}",
        )
        check(self.layers >= 1, "{layers} must be at least 1")
        check(self.hidden_size is None or self.hidden_size >= 1, "{hidden_size} must be at least 1")
        check(self.embed_size is None or self.embed_size >= 1, "{embed_size} must be at least 1")
        check(self.labels >= 0, "{labels} must be 0 (none) or more")
        check(self.mogrifier_rounds >= 0, "{mogrifier_rounds} must be 0 (the LSTM) or more")
        check(self.label_size >= 1, "{label_size} must be at least 1")
        for name in ("dropout", "decoder_dropout", "weight_drop", "embed_dropout"):
            rate = getattr(self, name)
            check(rate is None or 0.0 <= rate < 1.0, f"{{{name}}} must be in [0, 1)")


@dataclass(frozen=True)
class ModelSpec(ModelConfig):
    """A model as built: every setting decided. The defaults are those of a run with no plan."""

    hidden_size: int = 256
    embed_size: int = 64  # characters are few; a small embedding saves input-projection time
    dropout: float = 0.0
    decoder_dropout: float = 0.0
    weight_drop: float = 0.0

    @classmethod
    def of(cls, request: ModelConfig, **chosen: Any) -> ModelSpec:
        """`request` with the plan's `chosen` values, every other unset setting at its default,
        and the decoder's dropout, unless given, DECODER_DROPOUT_SHARE of the dropout between
        layers (all of it in a one-layer model, where it is the only dropout)."""
        values = {f.name: getattr(request, f.name) for f in fields(ModelConfig)} | chosen
        decided = {name: value for name, value in values.items() if value is not None}
        if "decoder_dropout" not in decided:
            decided["decoder_dropout"] = decoder_dropout(
                decided.get("dropout", 0.0), request.layers
            )
        return cls(**decided)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """A model as a checkpoint saved it, from this version or an older one (which may leave
        the decoder's dropout unset: it followed the dropout then)."""
        known = known_fields(ModelConfig, data)
        known.setdefault("decoder_dropout", known.get("dropout"))  # before it: one rate for both
        return cls.of(ModelConfig(**known))


def decoder_dropout(dropout: float, layers: int) -> float:
    return dropout * DECODER_DROPOUT_SHARE if layers > 1 else dropout
