"""Semantic checks beyond the schema: unique ids, resolving references, real dates, end ≥ start, percentages.

Which fields are references and which are dates is read from the case schema (``$ref`` to ``idref`` /
``date``), so adding a field to the schema needs no change here.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, Callable, Iterator

from converter.case.dates import check_real, iso_of, precedes
from converter.case.model import iter_entities, join_path, split_path
from converter.case.schema import case_schema
from converter.validate.issues import Issue

Locate = Callable[[list[str | int]], str]
Pattern = tuple[str, ...]  # property names, "[]" for array items

_PERIODS = (("start", "end"), ("onset", "end"))


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
    for pattern in field_patterns("isodate"):
        for path, value in values_at(doc, pattern):
            if isinstance(value, int) and not isinstance(value, bool) and 1000 <= value <= 2999:
                parent = doc
                for part in path[:-1]:
                    parent = parent[part]
                parent[path[-1]] = str(value)


def semantic_issues(doc: dict[str, Any], locate: Locate, ids: dict[str, str]) -> list[Issue]:
    """Issues the schema cannot express; fills ``ids`` (entity id → document path)."""
    issues: list[Issue] = []

    def err(path: tuple[str | int, ...] | list[str | int], rule: str, message: str) -> None:
        issues.append(Issue("error", rule, f"{join_path(list(path)) or '(document)'}: {message}", locate(list(path))))

    for path, entity in iter_entities(doc):
        eid = entity["id"]
        if eid in ids:
            err(split_path(path) + ["id"], "case.id.duplicate", f"id {eid!r} is already used at {ids[eid]}; ids must be unique in a case")
        else:
            ids[eid] = path
    for pattern in field_patterns("idref"):
        kinds = reference_kinds().get(pattern)
        for path, value in values_at(doc, pattern):
            if not isinstance(value, str):
                continue
            if value not in ids:
                err(path, "case.reference", f"refers to {value!r}, which no entity of this case has as id")
            elif kinds and _INDEX.sub("[]", ids[value]) not in kinds:
                err(path, "case.reference.kind", f"refers to {value!r} ({ids[value]}); expected the id of one of "
                    f"{', '.join(kinds)}")
    for pattern in field_patterns("isodate"):
        for path, value in values_at(doc, pattern):
            if isinstance(value, str) and (problem := check_real(value)):
                err(path, "case.date", problem)
    _check_periods(doc, (), err)
    for pattern in field_patterns("quantity"):
        for path, value in values_at(doc, pattern):
            if isinstance(value, dict) and value.get("unit") == "%" and not 0 <= value.get("value", 0) <= 100:
                err(path + ("value",), "case.range", f"{value['value']}% is outside 0-100")
    for pattern in field_patterns("range"):
        for path, value in values_at(doc, pattern):
            low, high = value.get("low"), value.get("high")
            if low is not None and high is not None and low > high:
                err(path, "case.range", f"reference range low {low} is above high {high}")
    for path, scoring in values_at(doc, ("pathology", "[]", "scoring")):
        if scoring.get("system") in ("TPS", "percent positive") and not 0 <= scoring.get("value", 0) <= 100:
            err(path + ("value",), "case.range", f"{scoring['system']} {scoring['value']} is outside 0-100")
        if scoring.get("system") == "H-score" and not 0 <= scoring.get("value", 0) <= 300:
            err(path + ("value",), "case.range", f"H-score {scoring['value']} is outside 0-300")
    return issues


def _check_periods(node: Any, path: tuple[str | int, ...], err: Callable[..., None]) -> None:
    """End not before start, wherever an object has both with calendar dates."""
    if isinstance(node, dict):
        for start_key, end_key in _PERIODS:
            start, end = iso_of(node.get(start_key)), iso_of(node.get(end_key))
            if start and end and not check_real(start) and not check_real(end) and precedes(start, end):
                err(path + (end_key,), "case.period", f"ends ({end}) before it starts ({start_key} {start})")
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                _check_periods(value, path + (key,), err)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_periods(value, path + (i,), err)
