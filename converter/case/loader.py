"""Read case files (YAML, JSON, NDJSON, stdin) into checked :class:`Case` objects with located errors.

Fast path: orjson / ruamel's C safe loader and a precompiled JSON Schema. Only when a document has a
problem is it parsed again with ruamel's round-trip loader to find line:column for each issue.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import orjson
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from converter.case.checks import coerce_years, semantic_issues
from converter.case.model import Case, iter_entities, join_path, split_path
from converter.case.schema import schema_issues
from converter.errors import CaseBridgeError, CaseError
from converter.validate.issues import Issue, has_errors

YAML_SUFFIXES = {".yaml", ".yml"}
JSON_SUFFIXES = {".json"}
NDJSON_SUFFIXES = {".ndjson", ".jsonl"}
CASE_SUFFIXES = YAML_SUFFIXES | JSON_SUFFIXES | NDJSON_SUFFIXES


@dataclass(frozen=True, slots=True)
class Record:
    """One case document as text, before parsing: where it came from and its format."""

    source: str       # file name, with ``#N`` for the N-th line of an NDJSON stream
    text: str
    fmt: str          # "yaml" | "json"
    line_offset: int = 0  # line of the record inside its file (NDJSON)
    error: tuple[Issue, ...] = ()  # the input could not be read at all (kept in input order)


@cache
def _safe_yaml() -> YAML:
    y = YAML(typ="safe")
    y.allow_duplicate_keys = False
    # Dates stay the strings the report printed: no timestamp resolution (2021-02-30 is reported, not crashed on).
    y.constructor.add_constructor("tag:yaml.org,2002:timestamp", lambda self, node: self.construct_scalar(node))
    return y


def _plain(node: Any) -> Any:
    """Mapping keys as strings (YAML allows ``1: x``; a case document's keys are names)."""
    if isinstance(node, dict):
        return {k if isinstance(k, str) else str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _decode(raw: bytes, source: str) -> str:
    if b"\x00" in raw[:4096]:
        raise CaseError(f"not a text file (binary content); expected a YAML or JSON case report", location=source,
                        rule="case.read")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CaseError(f"not UTF-8 text (byte {exc.start}); expected a UTF-8 YAML or JSON case report",
                        location=source, rule="case.read") from None


def read_records(path: str | Path, stdin: io.BufferedIOBase | None = None) -> Iterator[Record]:
    """Split one input (a file or ``-`` for stdin) into case records."""
    if str(path) == "-":
        raw = (stdin or sys.stdin.buffer).read()
        text = _decode(raw, "<stdin>")
        stripped = text.lstrip()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if stripped.startswith("{") and len(lines) > 1 and all(ln.lstrip().startswith("{") for ln in lines):
            yield from _ndjson_records("<stdin>", text)
        else:
            yield Record("<stdin>", text, "json" if _is_json(stripped) else "yaml")
        return
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix in NDJSON_SUFFIXES:  # streamed: memory does not grow with the size of the file
            with p.open("rb") as handle:
                yield from _ndjson_lines(str(p), handle)
            return
        raw = p.read_bytes()
    except OSError as exc:
        raise CaseError(f"cannot read file: {exc.strerror}", location=str(p), rule="case.read") from None
    yield Record(str(p), _decode(raw, str(p)), "json" if suffix in JSON_SUFFIXES else "yaml")


def _ndjson_lines(source: str, handle: io.BufferedIOBase) -> Iterator[Record]:
    """One record per non-empty line of an NDJSON file; a line that is not UTF-8 is that line's error only."""
    head = handle.peek(4096)[:4096] if hasattr(handle, "peek") else b""
    if b"\x00" in head:
        _decode(head, source)  # raises: not a text file
    for n, raw in enumerate(handle, 1):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            yield Record(f"{source}#{n}", "", "json", n - 1, error=(Issue(
                "error", "case.read", f"line {n} is not UTF-8 text (byte {exc.start}); expected one JSON case "
                "report per line", f"{source}:{n}"),))
            continue
        if line.strip():
            yield Record(f"{source}#{n}", line, "json", n - 1)


def _is_json(text: str) -> bool:
    """True when stdin text is JSON (YAML flow mappings also start with '{')."""
    if not text.startswith("{"):
        return False
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _ndjson_records(source: str, text: str) -> Iterator[Record]:
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield Record(f"{source}#{n}", line, "json", n - 1)


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: a repeated key is an error, as it is in YAML (stdlib json: orjson cannot tell)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _key_location(record: Record, key: str) -> str:
    """file:line:col of the second occurrence of a JSON key."""
    needle = json.dumps(key)
    first = record.text.find(needle)
    second = record.text.find(needle, first + 1) if first >= 0 else -1
    at = second if second >= 0 else max(first, 0)
    line = record.text.count("\n", 0, at) + 1
    col = at - (record.text.rfind("\n", 0, at) + 1) + 1
    return f"{record.source}:{line + record.line_offset}:{col}"


_NOT_COMPACT = object()


def _compact_json(text: str) -> Any:
    """The document, when ``text`` is exactly orjson's compact serialisation of it; else ``_NOT_COMPACT``.

    Such a text holds no repeated key (orjson would have kept one, and its output would differ), and
    orjson reads it as ``json.loads`` does. This is the fast way to read what orjson-based writers produce
    (``benchmarks/gen.py``, NDJSON exports); any other text takes the checking parser.
    """
    try:
        doc = orjson.loads(text)
        same = orjson.dumps(doc) == text.encode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, UnicodeEncodeError):
        return _NOT_COMPACT
    return doc if same else _NOT_COMPACT


def parse_record(record: Record) -> Any:
    """Parse a record's text; syntax errors become a located :class:`CaseError`."""
    if not record.text.strip():
        raise CaseError("empty document; expected a case report (a mapping with case_id, source, patient…)",
                        location=f"{record.source}:1:1", rule="case.read")
    if record.fmt == "json":
        doc = _compact_json(record.text)
        if doc is not _NOT_COMPACT:
            return doc
        try:
            return json.loads(record.text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            line = record.line_offset + exc.lineno
            raise CaseError(f"JSON syntax error: {exc.msg}", location=f"{record.source}:{line}:{exc.colno}",
                            rule="case.syntax") from None
        except _DuplicateKey as exc:
            raise CaseError(f"JSON syntax error: duplicate key {exc.key!r} (each key once per object)",
                            location=_key_location(record, exc.key), rule="case.syntax") from None
    try:
        return _plain(_safe_yaml().load(record.text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{record.source}:{mark.line + 1}:{mark.column + 1}" if mark else record.source
        problem = exc.problem or exc.context or "invalid YAML"
        if "constructor" in problem or "tag" in problem:
            problem = f"{problem} (only plain YAML is accepted: no language-specific tags)"
        raise CaseError(f"YAML syntax error: {problem}", location=where, rule="case.syntax") from None
    except (YAMLError, ValueError, TypeError) as exc:
        raise CaseError(f"YAML error: {exc}", location=record.source, rule="case.syntax") from None


@cache
def _rt_yaml() -> YAML:
    y = YAML()
    y.constructor.add_constructor("tag:yaml.org,2002:timestamp", lambda self, node: self.construct_scalar(node))
    return y


class Locator:
    """Finds line:column of document paths, parsing the record again with positions only when needed."""

    def __init__(self, record: Record):
        self.record = record
        self._doc: Any = None

    def _tree(self) -> Any:
        if self._doc is None:
            try:
                self._doc = _rt_yaml().load(self.record.text)
            except Exception:  # noqa: BLE001 - positions are a nicety; the record already parsed once
                self._doc = {}
        return self._doc

    def __call__(self, path: str | list[str | int]) -> str:
        parts = split_path(path) if isinstance(path, str) else list(path)
        node, line, col = self._tree(), 0, 0
        for part in parts:
            try:
                lc = node.lc
                if isinstance(part, int):
                    line, col = lc.item(part)
                else:
                    line, col = lc.key(part)
                node = node[part]
            except (AttributeError, KeyError, IndexError, TypeError):
                break
        return f"{self.record.source}:{line + 1 + self.record.line_offset}:{col + 1}"


def check_document(doc: Any, record: Record) -> tuple[list[Issue], dict[str, str]]:
    """Schema and semantic issues of a parsed document, located; and its id → path index."""
    locate = Locator(record)
    if doc is None:
        return [Issue("error", "case.read", "empty document (only comments or '---'); expected a case report (a mapping with case_id, source, patient…)",
                      f"{record.source}:1:1")], {}
    if not isinstance(doc, dict):
        kind = type(doc).__name__ if doc is not None else "nothing"
        return [Issue("error", "case.type", f"the document is a {kind}; expected a mapping (case_id, source, patient…)",
                      f"{record.source}:1:1")], {}
    coerce_years(doc)
    issues = schema_issues(doc, locate)
    ids: dict[str, str] = {}
    if not has_errors(issues):
        issues += semantic_issues(doc, locate, ids)
    return issues, ids


def load_record(record: Record) -> Case:
    """Parse and check one record; raises :class:`CaseError` with every located issue."""
    doc = parse_record(record)
    issues, ids = check_document(doc, record)
    if has_errors(issues):
        raise CaseError(issues)
    return Case(doc, record.source, ids)


def load_case(path: str | Path) -> Case:
    """Load and check one case file (YAML or JSON)."""
    records = list(read_records(path))
    if len(records) != 1:
        raise CaseError(f"expected one case, found {len(records)}", location=str(path), rule="case.read")
    return load_record(records[0])


def iter_input_paths(inputs: list[str]) -> Iterator[str]:
    """Expand files, directories (recursively, case files by suffix, sorted) and globs; ``-`` is stdin.

    A glob that matches no file, or a folder without case files, raises :class:`CaseBridgeError` (rule
    ``usage.input``) when it is reached: it is a mistake on the command line, not an empty batch. A plain
    file name is passed on as it is (reading it reports a missing file).
    """
    for item in inputs:
        if item == "-":
            yield item
            continue
        p = Path(item)
        if p.is_dir():
            found = [str(f) for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in CASE_SUFFIXES]
            if not found:
                raise CaseBridgeError(f"folder {item!r} holds no case files ({', '.join(sorted(CASE_SUFFIXES))})",
                                      location=item, rule="usage.input")
            yield from found
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path().glob(item)) if not p.is_absolute() else sorted(Path(p.anchor).glob(str(p.relative_to(p.anchor))))
            found = [str(f) for f in matches if f.is_file()]
            if not found:
                raise CaseBridgeError(f"no file matches {item!r}", location=item, rule="usage.input")
            yield from found
        else:
            yield item


__all__ = ["Record", "read_records", "parse_record", "check_document", "load_record", "load_case",
           "iter_input_paths", "iter_entities", "join_path"]
