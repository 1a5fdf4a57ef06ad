"""Conditions (``when:``) that decide whether a rule or an element applies.

Forms: ``{exists: path}``, ``{missing: path}``, ``{path: p, equals: v}``, ``{path: p, in: [..]}``,
``{path: p, matches: regex}``, ``{all: [...]}``, ``{any: [...]}``, ``{not: {...}}``. Comparisons use the
text of coded values and ignore case, spacing and dash variants.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from converter.mapping.paths import parse_path
from converter.mapping.terminology import normalize

CONDITION_KEYS = ("exists", "missing", "path", "equals", "in", "matches", "all", "any", "not")


def text_of(value: Any) -> Any:
    """The text of a coded value ({text: ...}) or the value itself."""
    if isinstance(value, dict) and "text" in value:
        return value["text"]
    return value


def compile_condition(spec: Any, resolve: Callable[[Any, Any], list[tuple[Any, str]]]) -> Callable[[Any], bool]:
    """Compile a condition; ``resolve(path, scope)`` evaluates a compiled path in a scope."""
    if not isinstance(spec, dict):
        raise ValueError(f"a condition must be a mapping with one of {', '.join(CONDITION_KEYS)}")
    unknown = [k for k in spec if k not in CONDITION_KEYS]
    if unknown:
        raise ValueError(f"unknown condition key(s) {', '.join(map(str, unknown))}; expected one of {', '.join(CONDITION_KEYS)}")
    if "all" in spec or "any" in spec:
        parts = [compile_condition(s, resolve) for s in spec.get("all") or spec.get("any") or []]
        return (lambda sc: all(p(sc) for p in parts)) if "all" in spec else (lambda sc: any(p(sc) for p in parts))
    if "not" in spec:
        inner = compile_condition(spec["not"], resolve)
        return lambda sc: not inner(sc)
    if "exists" in spec or "missing" in spec:
        path = parse_path(str(spec.get("exists", spec.get("missing"))))
        want = "exists" in spec
        return lambda sc: bool(resolve(path, sc)) == want
    if "path" not in spec:
        raise ValueError("a comparison needs 'path' and one of equals / in / matches")
    path = parse_path(str(spec["path"]))
    if "equals" in spec:
        target = normalize(str(spec["equals"]))
        return lambda sc: any(normalize(str(text_of(v))) == target for v, _ in resolve(path, sc))
    if "in" in spec:
        targets = {normalize(str(v)) for v in spec["in"]}
        return lambda sc: any(normalize(str(text_of(v))) in targets for v, _ in resolve(path, sc))
    if "matches" in spec:
        rx = re.compile(str(spec["matches"]), re.IGNORECASE)
        return lambda sc: any(rx.search(str(text_of(v))) for v, _ in resolve(path, sc))
    raise ValueError("a comparison needs one of equals / in / matches beside 'path'")
