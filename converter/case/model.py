"""The canonical case model: the validated document plus an index of its entities by id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass(slots=True)
class Case:
    """One case report after loading and checking.

    ``data`` is the document as JSON-compatible values (dates as ISO strings); ``source`` names the file
    (and record number for NDJSON/stdin) it came from; ``ids`` maps every entity id to its document path.
    """

    data: dict[str, Any]
    source: str
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        """The case id (SDTM subject, FHIR id seed)."""
        return self.data["case_id"]


def iter_entities(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object carrying an ``id``, with its dotted document path (``adverse_events[0]``)."""
    if isinstance(node, dict):
        if isinstance(node.get("id"), str) and path:
            yield path, node
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                yield from iter_entities(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, (dict, list)):
                yield from iter_entities(value, f"{path}[{i}]")


def split_path(path: str) -> list[str | int]:
    """``a.b[2].c`` → ``['a', 'b', 2, 'c']``."""
    parts: list[str | int] = []
    for piece in path.replace("]", "").split("."):
        name, *indexes = piece.split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indexes)
    return parts


def resolve_path(data: Any, path: str) -> Any:
    """The value at a dotted document path, or None."""
    node = data
    for part in split_path(path):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def join_path(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """``['a', 0, 'b']`` → ``a[0].b``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out
