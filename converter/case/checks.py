"""Semantic checks beyond the schema: unique ids, resolving references, real dates, end ≥ start, percentages.

Which fields are references and which are dates is read from the case schema (``$ref`` to ``idref`` /
``date``), so adding a field to the schema needs no change here.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, Callable, Iterator

from converter.case.dates import check_real, iso_of, precedes
from converter.case.model import join_path
from converter.case.schema import case_schema
from converter.validate.issues import Issue

Locate = Callable[[list[str | int]], str]
Pattern = tuple[str, ...]  # property names, "[]" for array items

_PERIOD_STARTS = ("start", "onset")  # keys that start a period ended by "end"


_INDEX = re.compile(r"\[\d+\]")


@cache
def reference_kinds() -> dict[Pattern, tuple[str, ...]]:
    """Reference fields whose schema names the kinds of entity they may point to (``x-ref``)."""
    return {pattern: kinds for pattern, kinds in _walk_refs("idref") if kinds}


@cache
def field_patterns(def_name: str) -> tuple[Pattern, ...]:
    """Document patterns of every field whose schema is ``$ref: #/$defs/<def_name>``."""
    return tuple(sorted({pattern for pattern, _ in _walk_refs(def_name)}))


def _walk_refs(def_name: str) -> list[tuple[Pattern, tuple[str, ...]]]:
    """(pattern, x-ref kinds) of every field whose schema refers to ``def_name``."""
    schema = case_schema()
    defs = schema["$defs"]
    found: list[tuple[Pattern, tuple[str, ...]]] = []

    def walk(node: Any, pattern: Pattern, depth: int) -> None:
        if not isinstance(node, dict) or depth > 12:
            return
        ref = node.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name == def_name:
                found.append((pattern, tuple(node.get("x-ref", ()))))
                return
            walk(defs[name], pattern, depth + 1)
        for key in ("oneOf", "anyOf", "allOf"):
            for branch in node.get(key, []):
                walk(branch, pattern, depth + 1)
        for prop, sub in node.get("properties", {}).items():
            walk(sub, pattern + (prop,), depth + 1)
        if isinstance(node.get("items"), dict):
            walk(node["items"], pattern + ("[]",), depth + 1)

    walk(schema, (), 0)
    return found


def values_at(doc: Any, pattern: Pattern, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every (path, value) matching a pattern."""
    if not pattern:
        yield prefix, doc
        return
    head, rest = pattern[0], pattern[1:]
    if head == "[]":
        if isinstance(doc, list):
            for i, item in enumerate(doc):
                yield from values_at(item, rest, prefix + (i,))
    elif isinstance(doc, dict) and head in doc:
        yield from values_at(doc[head], rest, prefix + (head,))


def coerce_years(doc: dict[str, Any]) -> None:
    """A bare year written unquoted in YAML (``onset: 2014``) is read as the date "2014", not rejected."""
    _coerce(doc, _field_trie())


def _year(value: Any) -> bool:
    """An integer that reads as a year (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1000 <= value <= 2999


def _coerce(node: Any, trie: _Trie) -> None:
    """Follow the trie's branches that exist in ``node``; replace integer years at date fields."""
    if isinstance(node, dict):
        for key in trie.dated:
            if key in node and _year(node[key]):
                node[key] = str(node[key])
        for key, sub in trie.deeper:
            if key in node and isinstance(value := node[key], (dict, list)):
                _coerce(value, sub)
    elif isinstance(node, list) and (sub := trie.items) is not None:
        dated = sub.self_dated
        for i, value in enumerate(node):
            if dated and _year(value):
                node[i] = str(value)
            elif isinstance(value, (dict, list)):
                _coerce(value, sub)


_KINDS = ("idref", "isodate", "quantity", "range")
_SCORING = ("pathology", "[]", "scoring")


class _Trie:
    """One node of the trie of checked field patterns (see ``_field_trie``), with what a walk needs ready."""

    __slots__ = ("kinds", "children", "items", "dated", "deeper", "self_dated")

    def __init__(self) -> None:
        self.kinds: list[tuple[str, int]] = []      # (kind, rank) of the patterns ending here
        self.children: dict[str, _Trie] = {}        # property name → node
        self.items: _Trie | None = None             # the node of this list's items ("[]")
        self.dated: tuple[str, ...] = ()            # properties that are dates
        self.deeper: tuple[tuple[str, _Trie], ...] = ()  # properties with patterns below them
        self.self_dated = False                     # this node is a date field

    def _finish(self) -> None:
        self.self_dated = any(kind == "isodate" for kind, _ in self.kinds)
        for child in self.children.values():
            child._finish()
        if self.items is not None:
            self.items._finish()
        self.dated = tuple(key for key, c in self.children.items() if c.self_dated)
        self.deeper = tuple((key, c) for key, c in self.children.items() if c.children or c.items is not None)


@cache
def _field_trie() -> _Trie:
    """Every checked field pattern as a trie (property or "[]" → child); a node lists (kind, rank) pairs.

    The rank is the pattern's place in ``field_patterns(kind)``, so issues come out in the order the
    per-pattern checks have always listed them.
    """
    root = _Trie()
    for kind in _KINDS + ("scoring",):
        patterns = (_SCORING,) if kind == "scoring" else field_patterns(kind)
        for rank, pattern in enumerate(patterns):
            node = root
            for step in pattern:
                if step == "[]":
                    node.items = node = node.items or _Trie()
                else:
                    node = node.children.setdefault(step, _Trie())
            node.kinds.append((kind, rank))
    root._finish()
    return root


# issue order: duplicate ids, references, dates, periods, quantities, ranges, scorings
_SCALARS = frozenset({str, int, float, bool, type(None)})  # JSON leaves: nothing to walk into
_ORDER = {"id": 0, "idref": 1, "isodate": 2, "period": 3, "quantity": 4, "range": 5, "scoring": 6}


def semantic_issues(doc: dict[str, Any], locate: Locate, ids: dict[str, str]) -> list[Issue]:
    """Issues the schema cannot express; fills ``ids`` (entity id → document path).

    One walk over the document, guided by a trie of the schema's checked fields (ids, references, dates,
    quantities, ranges, scorings) and checking every period on the way.
    """
    found: list[tuple[int, int, int, tuple[str | int, ...], str, str]] = []  # (order, rank, seq, path, rule, message)
    references: list[tuple[int, tuple[str | int, ...], str]] = []

    def err(kind: str, rank: int, path: tuple[str | int, ...], rule: str, message: str) -> None:
        found.append((_ORDER[kind], rank, len(found), path, rule, message))

    def check(kind: str, rank: int, path: tuple[str | int, ...], value: Any) -> None:
        if kind == "idref":
            if isinstance(value, str):
                references.append((rank, path, value))
        elif kind == "isodate":
            if isinstance(value, str) and (problem := check_real(value)):
                err(kind, rank, path, "case.date", problem)
        elif kind == "quantity":
            if isinstance(value, dict) and value.get("unit") == "%" and not 0 <= value.get("value", 0) <= 100:
                err(kind, rank, path + ("value",), "case.range", f"{value['value']}% is outside 0-100")
        elif kind == "range":
            low, high = value.get("low"), value.get("high")
            if low is not None and high is not None and low > high:
                err(kind, rank, path, "case.range", f"reference range low {low} is above high {high}")
        else:
            _check_scoring(value, path, lambda p, r, m: err(kind, rank, p, r, m))

    def walk_dict(node: dict[str, Any], path: tuple[str | int, ...], trie: _Trie | None) -> None:
        if path and isinstance(eid := node.get("id"), str):
            if eid in ids:
                err("id", 0, path + ("id",), "case.id.duplicate",
                    f"id {eid!r} is already used at {ids[eid]}; ids must be unique in a case")
            else:
                ids[eid] = join_path(path)
        if "end" in node:
            for start_key in _PERIOD_STARTS:
                if start_key not in node:
                    continue
                start, end = iso_of(node[start_key]), iso_of(node["end"])
                if start and end and not check_real(start) and not check_real(end) and precedes(start, end):
                    err("period", 0, path + ("end",), "case.period", f"ends ({end}) before it starts ({start_key} {start})")
        children = trie.children if trie is not None else None
        for key, value in node.items():
            sub = children.get(key) if children is not None else None
            if sub is not None and sub.kinds:
                where = path + (key,)
                for kind, rank in sub.kinds:
                    check(kind, rank, where, value)
            if value.__class__ in _SCALARS:
                continue
            if isinstance(value, dict):
                walk_dict(value, path + (key,), sub)
            elif isinstance(value, list):
                walk_list(value, path + (key,), sub)

    def walk_list(node: list[Any], path: tuple[str | int, ...], trie: _Trie | None) -> None:
        sub = trie.items if trie is not None else None
        kinds = sub.kinds if sub is not None else None
        for i, value in enumerate(node):
            if kinds:
                for kind, rank in kinds:
                    check(kind, rank, path + (i,), value)
            if value.__class__ in _SCALARS:
                continue
            if isinstance(value, dict):
                walk_dict(value, path + (i,), sub)
            elif isinstance(value, list):
                walk_list(value, path + (i,), sub)

    walk_dict(doc, (), _field_trie())
    kinds_of = reference_kinds()
    patterns = field_patterns("idref")
    for rank, path, value in references:  # after the walk: a reference may point forward
        if value not in ids:
            err("idref", rank, path, "case.reference", f"refers to {value!r}, which no entity of this case has as id")
        elif (kinds := kinds_of.get(patterns[rank])) and _INDEX.sub("[]", ids[value]) not in kinds:
            err("idref", rank, path, "case.reference.kind", f"refers to {value!r} ({ids[value]}); expected the id of one of "
                f"{', '.join(kinds)}")
    found.sort(key=lambda f: f[:3])
    return [Issue("error", rule, f"{join_path(list(path)) or '(document)'}: {message}", locate(list(path)))
            for _, _, _, path, rule, message in found]


def _check_scoring(scoring: Any, path: tuple[str | int, ...], err: Callable[[tuple[str | int, ...], str, str], None]) -> None:
    """TPS / percent positive within 0-100, H-score within 0-300."""
    if scoring.get("system") in ("TPS", "percent positive") and not 0 <= scoring.get("value", 0) <= 100:
        err(path + ("value",), "case.range", f"{scoring['system']} {scoring['value']} is outside 0-100")
    if scoring.get("system") == "H-score" and not 0 <= scoring.get("value", 0) <= 300:
        err(path + ("value",), "case.range", f"H-score {scoring['value']} is outside 0-300")
