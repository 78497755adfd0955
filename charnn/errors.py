"""The errors charnn reports to users: one line saying what is wrong and what to do."""

from __future__ import annotations

import string
from collections.abc import Callable


class CharnnError(Exception):
    """A problem with the user's input or files, reported as one line without a traceback."""


class SettingError(CharnnError):
    """A setting that cannot have the value it was given.

    The message names settings as `{field}` placeholders, so that each front end names them in
    its own words: Python by field (`temperature must be 0 (greedy) or more`), the command line
    by flag (`--temperature ...`), the server by JSON key.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self.settings = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        super().__init__(self.render(str))

    def render(self, name: Callable[[str], str]) -> str:
        return self.template.format(**{setting: name(setting) for setting in self.settings})


def literal(value: object) -> str:
    """`value` as text that a SettingError's template shows as it is (braces escaped)."""
    return str(value).replace("{", "{{").replace("}", "}}")
