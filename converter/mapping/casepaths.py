"""Source paths checked against the case-report schema (for the linter and for ``for_each``)."""

from __future__ import annotations

from typing import Any

from converter.case.schema import case_schema


def _expand(node: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> list[dict[str, Any]]:
    """A schema node with its $ref / oneOf / anyOf / allOf branches flattened."""
    out = [node]
    if depth > 10:
        return out
    if "$ref" in node:
        out += _expand(defs[node["$ref"].rsplit("/", 1)[-1]], defs, depth + 1)
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(key, []):
            out += _expand(branch, defs, depth + 1)
    return out


def _nodes(pattern: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[str]]:
    schema = case_schema()
    defs = schema["$defs"]
    nodes = [schema]
    for step in pattern:
        nxt: list[dict[str, Any]] = []
        for node in (n for base in nodes for n in _expand(base, defs)):
            if step == "[]":
                if isinstance(node.get("items"), dict):
                    nxt.append(node["items"])
            elif step in node.get("properties", {}):
                nxt.append(node["properties"][step])
        if not nxt:
            return [], sorted({k for base in nodes for n in _expand(base, defs) for k in n.get("properties", {})})
        nodes = nxt
    return [n for base in nodes for n in _expand(base, defs)], []


def case_fields(pattern: tuple[str, ...]) -> tuple[bool, list[str]]:
    """Whether a pattern exists in the case schema, and the field names available where it stops."""
    nodes, names = _nodes(pattern)
    return bool(nodes), names


def with_lists(steps: tuple[str, ...]) -> tuple[str, ...]:
    """Insert ``[]`` after every step that is a list in the schema (``therapy_lines.agents`` → ``therapy_lines[].agents[]``)."""
    out: list[str] = []
    for step in steps:
        if step == "[]":
            if not out or out[-1] != "[]":
                out.append(step)
            continue
        out.append(step)
        nodes, _ = _nodes(tuple(out))
        if nodes and any(n.get("type") == "array" for n in nodes):
            out.append("[]")
    return tuple(out)


def is_list(pattern: tuple[str, ...]) -> bool:
    """True when the pattern names a list in the case schema."""
    nodes, _ = _nodes(pattern)
    return any(n.get("type") == "array" for n in nodes)
