"""charnn: character-level recurrent text generation.

The public API is imported lazily so that `charnn --help` never pays for importing torch:

    import charnn
    result = charnn.train(charnn.TrainConfig(corpus="data/pydoc.txt", max_steps=200))
    model = charnn.load(result.best_path)
    print("".join(charnn.sample(model, length=200, prime="The ")))
    print(charnn.evaluate(model, "other.txt").bits_per_char)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "ModelConfig": "charnn.config.model",
    "ModelSpec": "charnn.config.model",
    "TrainConfig": "charnn.config.train",
    "RunConfig": "charnn.config.train",
    "SampleConfig": "charnn.config.sample",
    "CharnnError": "charnn.errors",
    "SettingError": "charnn.errors",
    "Vocab": "charnn.text.vocab",
    "read_corpus": "charnn.text.reading",
    "CharRNN": "charnn.nn.model",
    "train": "charnn.training.trainer",
    "TrainResult": "charnn.training.events",
    "LoadedModel": "charnn.checkpoints.loading",
    "load": "charnn.checkpoints.loading",
    "load_checkpoint": "charnn.checkpoints.loading",
    "find_checkpoint": "charnn.checkpoints.loading",
    "describe_checkpoint": "charnn.checkpoints.summary",
    "sample": "charnn.generation.sampler",
    "generate": "charnn.generation.sampler",
    "evaluate": "charnn.evaluation.evaluator",
    "EvalResult": "charnn.evaluation.evaluator",
}

__all__ = [
    "CharRNN",
    "CharnnError",
    "EvalResult",
    "LoadedModel",
    "ModelConfig",
    "ModelSpec",
    "RunConfig",
    "SampleConfig",
    "SettingError",
    "TrainConfig",
    "TrainResult",
    "Vocab",
    "describe_checkpoint",
    "evaluate",
    "find_checkpoint",
    "generate",
    "load",
    "load_checkpoint",
    "read_corpus",
    "sample",
    "train",
    "__version__",
]

if TYPE_CHECKING:
    from charnn.checkpoints.loading import LoadedModel, find_checkpoint, load, load_checkpoint
    from charnn.checkpoints.summary import describe_checkpoint
    from charnn.config.model import ModelConfig, ModelSpec
    from charnn.config.sample import SampleConfig
    from charnn.config.train import RunConfig, TrainConfig
    from charnn.errors import CharnnError, SettingError
    from charnn.evaluation.evaluator import EvalResult, evaluate
    from charnn.generation.sampler import generate, sample
    from charnn.nn.model import CharRNN
    from charnn.text.reading import read_corpus
    from charnn.text.vocab import Vocab
    from charnn.training.events import TrainResult
    from charnn.training.trainer import train


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'charnn' has no attribute {name!r}")
