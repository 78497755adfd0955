"""Bits per character: how many bits the model needs, on average, to encode each next character."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charnn.checkpoints.loading import LoadedModel
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
) -> EvalResult:
    """Evaluate a loaded model on a text file, or with no file on its own validation split (the
    text its training held out), each character given the text before it (see stream_nats). The
    model runs on `device` (on a copy if it is elsewhere), in eval mode, and is left as it was.
    `on_progress` hears the fraction of the text read, now and then."""
    ids, unknown, missing = ids_to_score(loaded, file, encoding)
    name, split = (corpus_name(loaded), "validation") if file is None else (str(file), None)
    model = model_on(loaded.model, device)
    nats = total_nats(model, ids, next(model.parameters()).device, on_progress) / (len(ids) - 1)
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
        return validation_ids(loaded), 0, ""
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


def validation_ids(loaded: LoadedModel) -> np.ndarray:
    """The model's validation split: the part of its corpus that training held out and measured
    it on, whole (a run's own evaluations may score a sample of it: --eval-chars). Refused
    unless the corpus is, to its SHA-256, the text the model trained on."""
    remedy = "pass a FILE of held-out text to evaluate on (not the training corpus)"
    purpose = "with no FILE the model is scored on its validation split"
    corpus = model_corpus(loaded, purpose, remedy)
    if loaded.corpus_sha256 != corpus.sha256:
        state = "has changed since" if loaded.corpus_sha256 else "cannot be checked against"
        raise SettingError(
            f"{literal(corpus_name(loaded))} {state} the text the model trained on, so its "
            f"validation split may not be the text held out: {remedy}"
        )
    ids = corpus.ids_in(loaded.vocab)  # the same text: the model knows every character
    return split_train_val(ids, loaded.train_config.val_frac, corpus.val_start)[1]
