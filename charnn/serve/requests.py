"""What a client may ask for: JSON bodies and query strings, checked into SampleConfigs.

Every problem becomes a `BadRequest` whose message names the field and what it must be; the
server answers it as a 4xx JSON error. Nothing here knows about HTTP.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, replace
from typing import Any

from charnn.checkpoints.loading import label_weights_for
from charnn.config.sample import SampleConfig
from charnn.errors import CharnnError
from charnn.generation.prime import check_prime
from charnn.text.vocab import Vocab

MAX_PRIME = 10_000  # characters; a prime is read in one pass that holds up every other request
MAX_SAMPLES = 16  # num_samples per request
MAX_BODY = 1 << 20  # bytes of a request body


class BadRequest(Exception):
    """The client's mistake, in one line; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_length: int = 2000


# field -> (accepted types, description for messages); bool is not accepted as a number
FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "prime": ((str,), "a string"),
    "length": ((int,), "an integer"),
    "temperature": ((int, float), "a number"),
    "top_k": ((int, type(None)), "an integer or null"),
    "top_p": ((int, float, type(None)), "a number or null"),
    "repetition_penalty": ((int, float), "a number"),
    "beam": ((int, type(None)), "an integer or null"),
    "stop": ((str, list), "a string or a list of strings"),
    "include_stop": ((bool,), "true or false"),
    "num_samples": ((int,), "an integer"),
    "seed": ((int, type(None)), "an integer or null"),
    "unknown": ((str,), '"error" or "skip"'),
    "stream": ((bool,), "true or false"),
    "label": ((str, type(None)), 'a label, or a mix such as "poems=0.7,letters=0.3"'),
}


@dataclass(frozen=True)
class SampleRequest:
    config: SampleConfig
    stream: bool


def parse_body(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise BadRequest(f"the request body is over {MAX_BODY} bytes", status=413)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(f"the body is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise BadRequest('the body must be a JSON object, such as {"prime": "The "}')
    return data


def sample_request(
    data: dict[str, Any], vocab: Vocab, limits: Limits, labels: tuple[str, ...] = ()
) -> SampleRequest:
    """Check a /v1/sample body field by field; unknown fields are refused, not ignored."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadRequest(
            f"unknown field {', '.join(map(repr, unknown))}; known: {', '.join(FIELDS)}"
        )
    for name, value in data.items():
        types, description = FIELDS[name]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise BadRequest(f"{name} must be {description}, not {json.dumps(value)[:40]}")
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"{name} must be a finite number")
    length = data.get("length", 200)
    if not 1 <= length <= limits.max_length:
        raise BadRequest(
            f"length must be from 1 to {limits.max_length} (the server's --max-length)"
        )
    num_samples = data.get("num_samples", 1)
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise BadRequest(f"num_samples must be from 1 to {MAX_SAMPLES}")
    stop = data.get("stop", [])
    stops = [stop] if isinstance(stop, str) else stop
    if not all(isinstance(s, str) and s for s in stops):
        raise BadRequest("stop must be a non-empty string or a list of non-empty strings")
    prime = data.get("prime", "")
    if len(prime) > MAX_PRIME:
        raise BadRequest(f"prime must be at most {MAX_PRIME} characters")
    seed = data.get("seed")
    try:
        config = SampleConfig(
            length=length,
            temperature=float(data.get("temperature", 1.0)),
            top_k=data.get("top_k"),
            top_p=data.get("top_p"),
            repetition_penalty=float(data.get("repetition_penalty", 1.0)),
            beam=data.get("beam"),
            prime=prime,
            stop=tuple(stops),
            include_stop=data.get("include_stop", False),
            num_samples=num_samples,
            seed=random.SystemRandom().randrange(2**32) if seed is None else seed,
            unknown=data.get("unknown", "error"),
            label=data.get("label"),
        )
        config = replace(config, prime=check_prime(prime, vocab, config.unknown))
        label_weights_for(labels, config.label)  # a label the model knows
    except CharnnError as err:  # settings are named by field: the JSON keys
        raise BadRequest(str(err)) from None
    if config.beam is not None and data.get("stream", False):
        raise BadRequest('beam search knows its text only at the end: send "stream": false')
    return SampleRequest(config, data.get("stream", False))


# --- torch-rnn-server's /generate ---------------------------------------------------------

SENTENCE_END = ".!?"
MIN_SPACES = 3  # its sampler ends at a sentence end only once it has seen this many spaces
MAX_WORDS = 20  # and its server keeps completions of 3 to 20 words
COMPLETION_CHARS = 140  # characters sampled for one completion at most
TEMPERATURES = (0.5, 0.6, 0.7, 0.8, 0.9)  # one drawn per completion
MAX_COMPLETIONS = 10
COMPLETION_ROUNDS = 8  # then /generate answers with the good completions it has, maybe fewer


def raw_query_value(query: str, name: str) -> str | None:
    """The still-encoded value of `name` in a query string: what torch-rnn-server echoes back
    as start_text, which rnn-writer decodes and compares with the text it sent."""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == name:
            return value
    return None


def start_text_prime(text: str, vocab: Vocab) -> str:
    """The prime torch-rnn-server makes of start_text: runs of white space become one space, and
    the text is lower-cased (here only when the model knows no capital letters); characters the
    model never saw are left out, since an editor sends whatever precedes the cursor."""
    text = re.sub(r"\s+", " ", text)
    if not any(c.isupper() for c in vocab.chars):
        text = text.lower()
    return "".join(c for c in text if c in vocab)


def completion_count(value: str | None) -> int:
    if value is None:
        return 1
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"n must be an integer, not {value[:40]!r}") from None
    if n < 1:
        raise BadRequest("n must be at least 1")
    return min(n, MAX_COMPLETIONS)  # as torch-rnn-server: at most 10


def sentence_ended(text: str) -> bool:
    """A completion ends at a sentence end once it has a few words (torch-rnn-server's rule)."""
    return text[-1:] in tuple(SENTENCE_END) and text.count(" ") >= MIN_SPACES


def good_completion(text: str) -> bool:
    return sentence_ended(text) and text.count(" ") + 1 <= MAX_WORDS
