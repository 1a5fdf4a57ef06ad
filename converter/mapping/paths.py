"""Source paths in mapping files: how a rule points into the case report.

* ``term`` / ``dose.value`` — relative to the item the rule is iterating over;
* ``/patient.sex`` — from the root of the case;
* ``../id`` — the enclosing item (for rules over nested lists such as ``therapy_lines[].agents[]``);
* ``treatments[].id`` — every element of a list (the result is a list);
* ``.`` — the item itself.
"""

from __future__ import annotations

import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from converter.mapping.codegen import Source

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


@contextmanager
def each_hit(src: Source, path: Path) -> Iterator[tuple[str, str]]:
    """Generate a loop over every (value, concrete path) of ``path`` in ``src``'s scope chain.

    Yields the names of the value and path variables for the loop body. A single-valued path becomes a
    chain of ``dict.get`` and one ``if``; its document path is built only when a value is found.
    """
    base = 0 if path.up == -1 else src.depth - path.up
    v, w = src.var("v"), src.var("at")
    if base < 0:  # more ``../`` than enclosing items: nothing
        with src.block(f"for {v}, {w} in ():"):
            yield v, w
        return
    item, where = f"i{base}", f"w{base}"
    if path.many:
        with walk_code(src, item, where, path.steps, src.empty_paths[base]) as (v, w):
            yield v, w
        return
    if path.steps and base <= src.params_depth and not src.unreachable:
        v = src.read(base, path.steps)  # a field of a level the function is given: read up front, once
    else:
        src.line(f"{v} = {item}")
        for step in path.steps:
            src.line(f"{v} = {v}.get({step!r}) if type({v}) is dict else None")
    with src.block(f"if {v} is not None:"):
        if not path.steps:
            src.line(f"{w} = {where}")
        elif src.empty_paths[base]:
            src.line(f"{w} = {path.dotted!r}")
        else:
            src.line(f"{w} = {where} + {'.' + path.dotted!r}")
        yield v, w


def hit_list(src: Source, path: Path) -> str:
    """Generate the list of every (value, concrete path) of ``path``; returns its variable name."""
    hits = src.var("h")
    src.line(f"{hits} = []")
    with each_hit(src, path) as (v, w):
        src.line(f"{hits}.append(({v}, {w}))")
    return hits


@contextmanager
def walk_code(src: Source, item: str, where: str, steps: tuple[str, ...], empty: bool) -> Iterator[tuple[str, str]]:
    """Generate :func:`walk` inline: nested loops over ``steps`` from the variable ``item`` (document path
    ``where``, known to be "" when ``empty``); yields the value and path variables of each match."""
    v = src.var("v")
    src.line(f"{v} = {item}")
    text = "" if empty else "{" + where + "}"  # the f-string of the concrete path, built once per match
    with ExitStack() as stack:
        for step in steps:
            if step == "[]":
                n, nxt = src.var("n"), src.var("v")
                stack.enter_context(src.block(f"if isinstance({v}, list):"))
                stack.enter_context(src.block(f"for {n}, {nxt} in enumerate({v}):"))
                v, text = nxt, text + "[{" + n + "}]"
            else:
                src.line(f"{v} = {v}.get({step!r}) if isinstance({v}, dict) else None")
                text = f"{text}.{step}" if text else step
        stack.enter_context(src.block(f"if {v} is not None:"))
        w = src.var("at")
        src.line(f"{w} = f{text!r}" if "{" in text else f"{w} = {text!r}")
        yield v, w
