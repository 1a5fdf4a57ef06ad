"""Conditions (``when:``) that decide whether a rule or an element applies.

Forms: ``{exists: path}``, ``{missing: path}``, ``{path: p, equals: v}``, ``{path: p, in: [..]}``,
``{path: p, matches: regex}``, ``{all: [...]}``, ``{any: [...]}``, ``{not: {...}}``. Comparisons use the
text of coded values and ignore case, spacing and dash variants.
"""

from __future__ import annotations

import re
from typing import Any

from converter.mapping.codegen import Source
from converter.mapping.paths import Path, each_hit, hit_list, parse_path
from converter.mapping.terminology import normalize

CONDITION_KEYS = ("exists", "missing", "path", "equals", "in", "matches", "all", "any", "not")


TEXT_OF = "({0}['text'] if isinstance({0}, dict) and 'text' in {0} else {0})"  # text_of(value), inline


def text_of(value: Any) -> Any:
    """The text of a coded value ({text: ...}) or the value itself (generated code uses ``TEXT_OF``)."""
    if isinstance(value, dict) and "text" in value:
        return value["text"]
    return value


def compile_condition(spec: Any, src: Source, origin: str) -> str:
    """Generate a condition into ``src``; returns the name of its boolean variable.

    Every value a condition reads is recorded (``touch``) under the origin bound as ``origin``; ``all`` and
    ``any`` stop at the first part that decides them, so later parts read nothing.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"a condition must be a mapping with one of {', '.join(CONDITION_KEYS)}")
    unknown = [k for k in spec if k not in CONDITION_KEYS]
    if unknown:
        raise ValueError(f"unknown condition key(s) {', '.join(map(str, unknown))}; expected one of {', '.join(CONDITION_KEYS)}")
    out = src.var("c")
    if "all" in spec or "any" in spec:
        parts = spec.get("all") or spec.get("any") or []
        every = "all" in spec
        src.line(f"{out} = {not every if parts else every}")
        _chain(parts, every, out, src, origin)
        return out
    if "not" in spec:
        inner = compile_condition(spec["not"], src, origin)
        src.line(f"{out} = not {inner}")
        return out
    if "exists" in spec or "missing" in spec:
        path = parse_path(str(spec.get("exists", spec.get("missing"))))
        found = _read(path, src, origin)
        if not path.many:
            src.line(f"{out} = {found} is {'not ' if 'exists' in spec else ''}None")
        else:
            src.line(f"{out} = {'bool' if 'exists' in spec else 'not '}({found})")
        return out
    if "path" not in spec:
        raise ValueError("a comparison needs 'path' and one of equals / in / matches")
    path = parse_path(str(spec["path"]))
    text = f"({{0}} if type({{0}}) is str else str{TEXT_OF})"  # str(text_of(value)), a string as it is
    if "equals" in spec:  # each test is a bool
        test = f"normalized{text} == {src.const(normalize(str(spec['equals'])))}"
    elif "in" in spec:
        test = f"normalized{text} in {src.const(frozenset(normalize(str(v)) for v in spec['in']))}"
    elif "matches" in spec:
        test = f"{src.const(re.compile(str(spec['matches']), re.IGNORECASE))}.search{text} is not None"
    else:
        raise ValueError("a comparison needs one of equals / in / matches beside 'path'")
    src.helper("normalized", normalized)
    found = _read(path, src, origin)
    if not path.many:
        src.line(f"{out} = {found} is not None and {test.format(found)}")
        return out
    src.line(f"{out} = False")
    with src.block(f"for v, _ in {found}:"):
        with src.block(f"if {test.format('v')}:"):
            src.line(f"{out} = True")
            src.line("break")
    return out


def _chain(parts: list[Any], every: bool, out: str, src: Source, origin: str) -> None:
    """``all``/``any``: each part is evaluated only while the result is still open."""
    if not parts:
        return
    part = compile_condition(parts[0], src, origin)
    if len(parts) == 1:
        src.line(f"{out} = {part}")
        return
    with src.block(f"if {'' if every else 'not '}{part}:"):
        _chain(parts[1:], every, out, src, origin)


def _read(path: Path, src: Source, origin: str) -> str:
    """Every hit of ``path``, each recorded as read; returns the name of the hit list, or for a single-valued
    path the name of its value (None when absent)."""
    if not path.many:
        if path.up != -1 and src.depth - path.up < 0:  # more ``../`` than enclosing items: never a value
            return "None"
        with each_hit(src, path) as (v, w):  # ``v`` stays None unless the path has a value
            src.line(f"touch(({w}, {origin}, cur))")
        return v
    hits = hit_list(src, path)
    with src.block(f"for _, w in {hits}:"):
        src.line(f"touch((w, {origin}, cur))")
    return hits


class _Normalized(dict):  # type: ignore[type-arg]
    """:func:`normalize` with a bounded memo (conditions and maps compare the same few texts again and again)."""

    __slots__ = ()
    SIZE = 8192

    def __missing__(self, text: str) -> str:
        if len(self) >= self.SIZE:
            self.clear()
        folded = self[text] = normalize(text)
        return folded


normalized = _Normalized().__getitem__
