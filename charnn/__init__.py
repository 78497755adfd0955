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
    "ModelConfig": "charnn.config.train",
    "TrainConfig": "charnn.config.train",
    "CharnnError": "charnn.errors",
    "Vocab": "charnn.text.vocab",
    "read_corpus": "charnn.text.vocab",
    "CharRNN": "charnn.nn.model",
    "train": "charnn.training.trainer",
    "TrainResult": "charnn.training.events",
    "LoadedModel": "charnn.checkpoints.format",
    "load_checkpoint": "charnn.checkpoints.format",
    "find_checkpoint": "charnn.checkpoints.format",
    "sample": "charnn.generation.sampler",
    "SampleConfig": "charnn.generation.sampler",
    "generate": "charnn.generation.sampler",
    "describe_checkpoint": "charnn.checkpoints.format",
    "evaluate": "charnn.evaluation.evaluator",
    "EvalResult": "charnn.evaluation.evaluator",
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
    from charnn.checkpoints.format import (
        LoadedModel,
        describe_checkpoint,
        find_checkpoint,
        load_checkpoint,
    )
    from charnn.config.train import ModelConfig, TrainConfig
    from charnn.errors import CharnnError
    from charnn.evaluation.evaluator import EvalResult, evaluate
    from charnn.generation.sampler import SampleConfig, generate, sample
    from charnn.nn.model import CharRNN
    from charnn.text.vocab import Vocab, read_corpus
    from charnn.training.events import TrainResult
    from charnn.training.trainer import train


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'charnn' has no attribute {name!r}")
