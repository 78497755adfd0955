"""Bits per character: how many bits the model needs, on average, to encode each next character."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charnn.checkpoints.loading import LoadedModel, label_weights_for
from charnn.errors import CharnnError, SettingError, literal
from charnn.evaluation.scoring import model_on, total_nats
from charnn.text.corpus import EncodedCorpus, load_corpus, split_train_val
from charnn.text.reading import read_text
from charnn.text.sources import corpus_spec
from charnn.text.vocab import describe_chars


@dataclass(frozen=True)
class EvalResult:
    """How well a model predicts one text."""

    file: str
    chars: int  # characters in the text that the vocabulary has
    predicted: int  # characters scored (all but the first)
    unknown: int  # characters outside the vocabulary, left out and reported
    unknown_chars: str
    nats_per_char: float
    bits_per_char: float
    perplexity: float
    split: str | None = None  # "validation": the model's own held-out text, not a whole file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    loaded: LoadedModel,
    file: str | Path | None = None,
    *,
    encoding: str = "utf-8",
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
    label: str | None = None,
) -> EvalResult:
    """Evaluate a loaded model on a text file, or with no file on its own validation split (the
    text its training held out), each character given the text before it (see stream_nats). The
    model runs on `device` (on a copy if it is elsewhere), in eval mode, and is left as it was.
    `on_progress` hears the fraction of the text read, now and then. A conditioned model reads
    in `label` (default: a file in "any", its validation split each in its own label)."""
    ids, unknown, missing = ids_to_score(loaded, file, encoding)
    labels = score_labels(loaded, file, label, len(ids))
    name, split = (corpus_name(loaded), "validation") if file is None else (str(file), None)
    model = model_on(loaded.model, device)
    where = next(model.parameters()).device
    nats = total_nats(model, ids, where, on_progress, labels) / (len(ids) - 1)
    return EvalResult(
        file=name,
        chars=len(ids),
        predicted=len(ids) - 1,
        unknown=unknown,
        unknown_chars=missing,
        nats_per_char=nats,
        bits_per_char=nats / math.log(2),
        perplexity=math.exp(nats),
        split=split,
    )


def ids_to_score(
    loaded: LoadedModel, file: str | Path | None, encoding: str = "utf-8"
) -> tuple[np.ndarray, int, str]:
    """What a model is scored on: the ids of the characters of `file` it knows, how many it does
    not (left out) and which; with no file, its validation split."""
    if file is None:
        return validation_split(loaded)[0], 0, ""
    text = read_text(file, encoding)
    ids, unknown = loaded.vocab.encode_known(text)
    missing = loaded.vocab.unknown(text) if unknown else []
    if len(ids) < 2:  # a score is of characters predicted from the ones before them
        unknown_ones = f" (unknown: {describe_chars(missing)})" if missing else ""
        raise CharnnError(
            f"{file} has fewer than two characters the model knows{unknown_ones}: a score "
            "needs at least two"
        )
    return ids, unknown, "".join(missing)


def score_labels(
    loaded: LoadedModel, file: str | Path | None, label: str | None, n: int
) -> np.ndarray | None:
    """The label a conditioned model reads each of the `n` characters it scores in: `label`'s,
    else with no file each character's own (its validation split's); None: "any"."""
    if label is not None:
        return np.full(n, label_id(loaded, label))
    if file is None and loaded.labels:
        return validation_split(loaded)[1]
    return None


def corpus_name(loaded: LoadedModel) -> str:
    """The corpus a model trained on, as its run named it."""
    return ", ".join(loaded.train_config.corpus_paths)


def model_corpus(loaded: LoadedModel, purpose: str, remedy: str) -> EncodedCorpus:
    """The corpus a model trained on, encoded as its training encoded it (from the cache when
    the text has not changed). `purpose` and `remedy` word the error when it cannot be read
    (`remedy` may name settings as a SettingError's template does)."""
    config = loaded.train_config
    if not any(config.corpus_paths):  # a model made in Python, never trained from a file
        raise SettingError(f"{purpose}, and the model names no corpus: {remedy}")
    try:
        return load_corpus(corpus_spec(config), val_frac=config.val_frac)
    except CharnnError as err:
        inner = err.template if isinstance(err, SettingError) else literal(err)
        raise SettingError(
            f"{purpose}, and the model's corpus cannot be read ({inner}; a relative path "
            f"is read from the current folder): {remedy}"
        ) from None


FILE_REMEDY = "pass a FILE of held-out text to evaluate on (not the training corpus)"
# {by_label} reads nothing but the split: the remedy is to reach the corpus
CORPUS_REMEDY = "run it where the corpus the model trained on is found, unchanged"


def validation_split(
    loaded: LoadedModel, remedy: str = FILE_REMEDY
) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's validation split, and a labelled corpus's label of each character: the part
    of its corpus that training held out and measured it on, whole (a run's own evaluations may
    score a sample of it: eval_chars). Refused unless the corpus is, to its SHA-256, the text
    the model trained on; `remedy` ends the refusal."""
    purpose = "with no FILE the model is scored on its validation split"
    corpus = model_corpus(loaded, purpose, remedy)
    if loaded.corpus_sha256 != corpus.sha256:
        state = "has changed since" if loaded.corpus_sha256 else "cannot be checked against"
        raise SettingError(
            f"{literal(corpus_name(loaded))} {state} the text the model trained on, so its "
            f"validation split may not be the text held out: {remedy}"
        )
    ids = corpus.ids_in(loaded.vocab)  # the same text: the model knows every character
    val_frac, val_start = loaded.train_config.val_frac, corpus.val_start
    labels = corpus.label_ids
    if labels is not None:
        labels = split_train_val(labels, val_frac, val_start)[1]
    return split_train_val(ids, val_frac, val_start)[1], labels


def label_id(loaded: LoadedModel, label: str) -> int:
    """The id of one of a model's labels ("any": 0), for scoring a text in it."""
    weights = label_weights_for(loaded.labels, label)
    assert weights is not None
    if np.count_nonzero(weights) != 1:
        raise SettingError("{label}: evaluation reads a text in one label, not a mix")
    return int(np.flatnonzero(weights)[0])


@dataclass(frozen=True)
class LabelScores:
    """How well a conditioned model predicts one label's validation text: read in its own
    label, in "any", and in each other label (bits/char)."""

    label: str
    chars: int
    own: float
    any: float
    others: dict[str, float]

    @property
    def wrong(self) -> float:
        """The other labels' mean: how much the model leans on the label (own < wrong)."""
        return sum(self.others.values()) / len(self.others)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "wrong": self.wrong}


def evaluate_by_label(
    loaded: LoadedModel,
    *,
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] | None = None,
) -> list[LabelScores]:
    """Each label's validation text read in every label a conditioned model knows; a label with
    under two characters of it (nothing to predict) is left out."""
    if not loaded.labels:
        raise SettingError("{by_label} needs a model trained on labels; this one has none")
    ids, labels = validation_split(loaded, CORPUS_REMEDY)
    assert labels is not None
    model = model_on(loaded.model, device)
    where = next(model.parameters()).device
    names = ("any", *loaded.labels)
    readings = len(loaded.labels) * len(names)
    found: list[LabelScores] = []
    for k, name in enumerate(loaded.labels, start=1):
        text = ids[labels == k]
        if len(text) < 2:  # a score is of characters predicted from the ones before them
            continue
        bits = []
        for read_as in range(len(names)):
            done = (k - 1) * len(names) + read_as
            heard = None if on_progress is None else _part(on_progress, done, readings)
            nats = total_nats(model, text, where, heard, np.full(len(text), read_as))
            bits.append(nats / (len(text) - 1) / math.log(2))
        others = {names[j]: bits[j] for j in range(1, len(names)) if j != k}
        found.append(LabelScores(name, len(text), bits[k], bits[0], others))
    return found


def _part(on_progress: Callable[[float], None], done: int, of: int) -> Callable[[float], None]:
    return lambda fraction: on_progress((done + fraction) / of)
