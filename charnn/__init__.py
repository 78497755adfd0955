"""charnn: character-level recurrent text generation.

The public API is imported lazily so that `charnn --help` never pays for importing torch:

    import charnn
    result = charnn.train(charnn.TrainConfig(corpus="data/pydoc.txt", max_steps=200))
    model = charnn.load_checkpoint(result.best_path)
    print("".join(charnn.sample(model, length=200, prime="The ")))
    print(charnn.evaluate(model, "other.txt").bits_per_char)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "ModelConfig": "charnn.config",
    "TrainConfig": "charnn.config",
    "CharnnError": "charnn.errors",
    "Vocab": "charnn.vocab",
    "read_corpus": "charnn.vocab",
    "CharRNN": "charnn.model",
    "train": "charnn.trainer",
    "TrainResult": "charnn.events",
    "LoadedModel": "charnn.checkpoint",
    "load_checkpoint": "charnn.checkpoint",
    "find_checkpoint": "charnn.checkpoint",
    "sample": "charnn.sampler",
    "SampleConfig": "charnn.sampler",
    "generate": "charnn.sampler",
    "describe_checkpoint": "charnn.checkpoint",
    "evaluate": "charnn.evaluator",
    "EvalResult": "charnn.evaluator",
}

__all__ = [
    "CharRNN",
    "CharnnError",
    "EvalResult",
    "LoadedModel",
    "ModelConfig",
    "SampleConfig",
    "TrainConfig",
    "TrainResult",
    "Vocab",
    "__version__",
    "describe_checkpoint",
    "evaluate",
    "find_checkpoint",
    "generate",
    "load_checkpoint",
    "read_corpus",
    "sample",
    "train",
]

if TYPE_CHECKING:
    from charnn.checkpoint import (
        LoadedModel,
        describe_checkpoint,
        find_checkpoint,
        load_checkpoint,
    )
    from charnn.config import ModelConfig, TrainConfig
    from charnn.errors import CharnnError
    from charnn.evaluator import EvalResult, evaluate
    from charnn.events import TrainResult
    from charnn.model import CharRNN
    from charnn.sampler import SampleConfig, generate, sample
    from charnn.trainer import train
    from charnn.vocab import Vocab, read_corpus


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'charnn' has no attribute {name!r}")
