"""Settings from text: durations such as 5m or 1h30m, and TOML configuration files."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from charnn.errors import CharnnError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hms]?)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(text: str) -> float:
    """'90s', '5m', '1h', '1h30m' or a plain number of seconds -> seconds."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned.replace(" ", ""):
        raise CharnnError(f"cannot read duration {text!r}: use forms like 90s, 5m, 1h or 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise CharnnError(f"duration {text!r} must be longer than zero")
    return seconds


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file, keys as Python names (`hidden-size` -> `hidden_size`).

    TOML is data: nothing in the file is ever executed.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise CharnnError(f"config file not found: {path}") from None
    except OSError as err:
        raise CharnnError(f"cannot read config file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise CharnnError(f"{path} is not valid TOML: {err}") from None
    nested = [key for key, value in data.items() if isinstance(value, dict)]
    if nested:
        raise CharnnError(
            f"{path}: tables are not options ({', '.join(nested)}); write `key = value`"
        )
    return {key.replace("-", "_"): value for key, value in data.items()}
