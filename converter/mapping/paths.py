"""Source paths in mapping files: how a rule points into the case report.

* ``term`` / ``dose.value`` — relative to the item the rule is iterating over;
* ``/patient.sex`` — from the root of the case;
* ``../id`` — the enclosing item (for rules over nested lists such as ``therapy_lines[].agents[]``);
* ``treatments[].id`` — every element of a list (the result is a list);
* ``.`` — the item itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PathSyntaxError(ValueError):
    """A path that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Path:
    """A compiled source path."""

    text: str
    up: int                 # how many levels up (``../``); -1 = from the case root
    steps: tuple[str, ...]  # property names; "[]" = every list element

    many: bool = False      # True when the path can yield several values (it has "[]")
    dotted: str = ""        # the steps joined with "." (concrete path suffix of a single-valued path)

    def __post_init__(self) -> None:
        object.__setattr__(self, "many", "[]" in self.steps)
        object.__setattr__(self, "dotted", ".".join(self.steps))


def parse_path(text: str) -> Path:
    """Compile ``text``; raises :class:`PathSyntaxError` with what was expected."""
    raw = text.strip()
    if not raw:
        raise PathSyntaxError("empty path; expected a field name such as 'term' or '/patient.sex'")
    up = 0
    if raw.startswith("/"):
        up, raw = -1, raw[1:]
    else:
        while raw.startswith("../"):
            up, raw = up + 1, raw[3:]
        if raw == "..":
            up, raw = up + 1, "."
    steps: list[str] = []
    if raw not in (".", ""):
        for piece in raw.split("."):
            name, brackets = (piece[:-2], True) if piece.endswith("[]") else (piece, False)
            if not _NAME.match(name):
                raise PathSyntaxError(f"{piece!r} in {text!r} is not a field name; expected letters, digits and '_' (with '[]' for every element of a list)")
            steps.append(name)
            if brackets:
                steps.append("[]")
    return Path(text, up, tuple(steps))


def walk(value: Any, steps: tuple[str, ...], where: str) -> Iterator[tuple[Any, str]]:
    """Yield (value, concrete document path) for every match of ``steps`` below ``value``."""
    if not steps:
        if value is not None:
            yield value, where
        return
    head, rest = steps[0], steps[1:]
    if head == "[]":
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, rest, f"{where}[{i}]")
        return
    if isinstance(value, dict) and head in value:
        yield from walk(value[head], rest, f"{where}.{head}" if where else head)
