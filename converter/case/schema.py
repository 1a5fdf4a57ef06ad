"""Validate a case document against schemas/case-report.schema.json with friendly, located messages."""

from __future__ import annotations

from functools import cache
from typing import Any, Callable

import jsonschema_rs
import orjson

from converter.case.model import join_path
from converter.resources import schema_path
from converter.validate.issues import Issue, location_key

Locate = Callable[[list[str | int]], str]


@cache
def case_schema() -> dict[str, Any]:
    """The case-report JSON Schema."""
    return orjson.loads(schema_path("case-report.schema.json").read_bytes())


@cache
def _validator() -> Any:
    return jsonschema_rs.Draft202012Validator(case_schema())


def _expected(schema_path_parts: list[str | int]) -> str:
    """The ``x-expected`` hint of the innermost named definition the error went through."""
    defs = case_schema()["$defs"]
    hint = ""
    for part in schema_path_parts:
        if isinstance(part, str) and part in defs and "x-expected" in defs[part]:
            hint = defs[part]["x-expected"]
    return hint


def _ref_names(error: Any) -> list[str | int]:
    """The keyword path of the failing schema (it names the ``$defs`` entry it failed in)."""
    return list(error.schema_path)


def schema_issues(doc: dict[str, Any], locate: Locate) -> list[Issue]:
    """Every schema violation, with the document path and line:column."""
    validator = _validator()
    if validator.is_valid(doc):
        return []
    issues = []
    for err in validator.iter_errors(doc):
        path = list(err.instance_path)
        where = join_path(path) or "(document)"
        message = err.message
        hint = _expected(_ref_names(err))
        if "is not valid under any of the schemas" in message or "is not valid under any of the given schemas" in message:
            message = f"{_short(err.instance)} is not valid here"
        if hint and "required property" not in message and "Additional properties" not in message:
            message += f"; expected {hint}"
        issues.append(Issue("error", "case.schema", f"{where}: {message}", locate(path)))
    return sorted(set(issues), key=location_key)


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."
