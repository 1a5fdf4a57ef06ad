"""Run the ``tests:`` blocks written next to the mappings, with field-level diffs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from converter.case.loader import Record, check_document
from converter.case.model import Case
from converter.mapping.engine import MappingSet
from converter.mapping.rules import MappingFile, pos

BASE_CASE: dict[str, Any] = {"case_id": "mapping-test", "source": {"title": "mapping test"},
                             "patient": {"id": "patient", "sex": "not reported"}}


@dataclass(slots=True)
class TestOutcome:
    """One mapping test: where it is written and the differences found (empty = passed)."""

    file: str
    line: int
    name: str
    diffs: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when the outputs matched."""
        return not self.diffs


def _merge(base: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in fragment.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _plain(node: Any) -> Any:
    """ruamel's round-trip types (ScalarFloat, ScalarInt, CommentedMap…) as plain JSON values."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def diff(expected: Any, actual: Any, where: str) -> list[str]:
    """Differences between an expected subset and the actual value, one line per field."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        out: list[str] = []
        for key, value in expected.items():
            if key not in actual:
                if value is not None:
                    out.append(f"{where}.{key}: expected {value!r}, got nothing")
                continue
            out += diff(value, actual[key], f"{where}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {actual!r}"]
        out = []
        for i, value in enumerate(expected):
            if i >= len(actual):
                out.append(f"{where}[{i}]: expected {value!r}, got nothing")
            else:
                out += diff(value, actual[i], f"{where}[{i}]")
        return out
    if expected != actual and not (isinstance(expected, (int, float)) and isinstance(actual, (int, float)) and float(expected) == float(actual)):
        return [f"{where}: expected {expected!r}, got {actual!r}"]
    return []


def run_file_tests(mapping_set: MappingSet, mf: MappingFile) -> list[TestOutcome]:
    """Run every test of one mapping file."""
    outcomes = []
    for i, test in enumerate(mf.tests):
        line, _ = pos(mf.doc.get("tests"), i)
        outcome = TestOutcome(mf.name, line, str(test.get("name", f"test {i + 1}")))
        outcomes.append(outcome)
        doc = _merge(BASE_CASE, _plain(test.get("case") or {}))
        issues, ids = check_document(doc, Record(f"{mf.name}:{line}", "", "json"))
        errors = [f"{i.message}" for i in issues if i.severity == "error"]
        if errors:
            outcome.diffs = [f"the test case is not a valid case report: {e}" for e in errors]
            continue
        mapped = mapping_set.apply(Case(doc, f"{mf.name}:{line}", ids), frozenset({mf.target}))
        wanted_rule = test.get("rule")
        if mf.target == "fhir":
            actual = [r for r, rule in zip(mapped.resources, mapped.resource_rules)
                      if rule.file == mf.name and (not wanted_rule or rule.id == wanted_rule)]
        else:
            actual = [r.values | {f"SUPP.{q}": v for q, _, v, _ in r.supp} for r in mapped.rows
                      if r.rule.file == mf.name and (not wanted_rule or r.rule.id == wanted_rule)]
        expected = _plain(test.get("expect") or [])
        if len(actual) != len(expected):
            outcome.diffs.append(f"expected {len(expected)} output(s), got {len(actual)}")
        for n, (exp, act) in enumerate(zip(expected, actual), 1):
            outcome.diffs += diff(exp, act, f"output {n}")
    return outcomes


def run_tests(mapping_set: MappingSet) -> list[TestOutcome]:
    """Run the tests of every mapping file."""
    return [o for mf in mapping_set.files for o in run_file_tests(mapping_set, mf)]
