"""Lint a mapping folder: every problem at once, each with file:line:column and what to write instead."""

from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path as FsPath
from typing import Any

import jsonschema
import orjson

from converter.mapping.casepaths import case_fields
from converter.mapping.engine import MappingSet, digest_files
from converter.mapping.rules import LoadProblem, compile_file, pos, read_mapping_doc
from converter.mapping.terminology import load_terminology
from converter.mapping.verbs import Collected, scope_pattern
from converter.resources import mappings_dir, schema_path
from converter.validate.issues import Issue, location_key


@cache
def _mapping_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(orjson.loads(schema_path("mapping.schema.json").read_bytes()))


@cache
def _fhir_definitions() -> dict[str, Any]:
    path = schema_path("fhir/r4-subset.schema.json")
    return orjson.loads(path.read_bytes()).get("definitions", {}) if path.is_file() else {}


def fhir_element_problem(target: str) -> str | None:
    """Why a dotted FHIR element path (``Observation.component[0].code``) is not in R4, or None."""
    defs = _fhir_definitions()
    if not defs:
        return None
    parts = [p.split("[")[0] for p in target.split(".")]
    type_name, rest = parts[0], parts[1:]
    if type_name not in defs:
        return f"{type_name} is not a FHIR R4 resource type CaseBridge can emit"
    node = defs[type_name]
    for i, part in enumerate(rest):
        props = node.get("properties", {})
        if part not in props:
            close = difflib.get_close_matches(part, [p for p in props if not p.startswith("_")], 3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            return f"{'.'.join([type_name, *rest[:i + 1]])}: {part!r} is not an element of {_name(node, type_name)}{hint}"
        sub = props[part]
        sub = sub.get("items", sub) if sub.get("type") == "array" else sub
        ref = sub.get("$ref", "")
        name = ref.rsplit("/", 1)[-1]
        if name in ("ResourceList",) or not name:
            return None
        node = defs.get(name, {})
        node = {**node, "_name": name}
    return None


def _name(node: dict[str, Any], default: str) -> str:
    return node.get("_name", default)


def sdtm_variable_problem(domain: str, variable: str) -> str | None:
    """Why a variable is not allowed in an SDTMIG 3.4 domain, or None."""
    try:
        from converter.sdtm.metadata import is_variable, variables
    except ImportError:
        return None
    if is_variable(domain, variable, include_class=True):
        return None
    names = [v.name for v in variables(domain)]
    close = difflib.get_close_matches(variable, names, 3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"{variable} is not a variable of {domain} in SDTMIG 3.4{hint}"


def lint_folder(folder: FsPath | None = None) -> tuple[MappingSet, list[Issue]]:
    """Load, check and compile every mapping file; returns the set (usable when no errors) and all issues."""
    folder = FsPath(folder) if folder else mappings_dir()
    issues: list[Issue] = []
    terminology = load_terminology(folder / "terminology")
    for file, line, message in terminology.problems:
        issues.append(Issue("error", "mapping.terminology", message, f"{file}:{line}:1"))
    files = []
    sources = sorted([*folder.glob("fhir/*.yaml"), *folder.glob("sdtm/*.yaml")])
    if not sources:
        issues.append(Issue("error", "mapping.empty", "no mapping files (expected fhir/*.yaml and sdtm/*.yaml)", str(folder)))
    seen_rules: dict[str, str] = {}
    for path in sources:
        name = path.relative_to(folder).as_posix()
        problems: list[LoadProblem] = []
        doc = read_mapping_doc(path, name, problems)
        collected = Collected()
        if doc is not None:
            for err in _mapping_validator().iter_errors(doc):
                node, key = _node_at(doc, list(err.absolute_path))
                line, col = pos(node, key)
                where = ".".join(str(p) for p in err.absolute_path) or "(file)"
                problems.append(LoadProblem(name, line, col, f"{where}: {err.message}"))
            if not any(p.message.startswith("(file)") for p in problems):
                mf = compile_file(path, name, doc, terminology, collected, problems)
                if mf is not None:
                    files.append(mf)
                    for rule in mf.rules:
                        if rule.id in seen_rules:
                            problems.append(LoadProblem(name, rule.line, 1, f"rule id {rule.id!r} is already used in {seen_rules[rule.id]}"))
                        seen_rules[rule.id] = name
                    _check_collected(mf.target, mf.kind, collected, terminology, name, problems)
        issues += [Issue("error", "mapping.lint", p.message, f"{p.file}:{p.line}:{p.col}") for p in problems]
    rule_ids = set(seen_rules)
    all_paths = [*sources, *sorted((folder / "terminology").rglob("*.csv")), *sorted((folder / "terminology").rglob("*.yaml")),
                 *sorted(folder.glob("sdtm/*.csv"))]  # sdtm/ascii.csv: how SDTM text is written in ASCII
    mapping_set = MappingSet(folder, files, terminology, digest_files(all_paths) if all_paths else "")
    mapping_set.index()
    _check_rule_refs(mapping_set, rule_ids, issues)
    return mapping_set, sorted(issues, key=location_key)


def _check_rule_refs(mapping_set: MappingSet, rule_ids: set[str], issues: list[Issue]) -> None:
    for f in mapping_set.files:
        doc_refs = _find_rule_refs(f.doc)
        for rule_name, line, col in doc_refs:
            if rule_name not in rule_ids:
                close = difflib.get_close_matches(rule_name, sorted(rule_ids), 3)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                issues.append(Issue("error", "mapping.lint", f"$ref rule {rule_name!r} does not exist{hint}", f"{f.name}:{line}:{col}"))


def _find_rule_refs(node: Any) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    if isinstance(node, dict):
        if "$ref" in node and "rule" in node:
            out.append((str(node["rule"]), *pos(node, "rule")))
        for v in node.values():
            out += _find_rule_refs(v)
    elif isinstance(node, list):
        for v in node:
            out += _find_rule_refs(v)
    return out


def _node_at(doc: Any, path: list[Any]) -> tuple[Any, Any]:
    node, key = doc, None
    for part in path:
        try:
            child = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(child, (dict, list)):
            node, key = child, None
        else:
            key = part
            break
    return node, key


def _check_collected(target: str, kind: str, collected: Collected, terminology: Any, name: str,
                     problems: list[LoadProblem]) -> None:
    for p, scopes, line, col in collected.paths:
        pattern = scope_pattern(scopes, p) if scopes else p.steps
        if p.up > len(scopes) - 1 and p.up != -1:
            problems.append(LoadProblem(name, line, col, f"source path {p.text!r} goes up {p.up} level(s) but the rule is only {len(scopes) - 1} list level(s) deep"))
            continue
        ok, names = case_fields(pattern)
        if not ok:
            close = difflib.get_close_matches(p.steps[-1] if p.steps else "", names, 3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            problems.append(LoadProblem(name, line, col, f"source path {p.text!r} is not in the case-report schema; {hint}fields available there: {', '.join(names) or '(none)'}"))
    for table, line, col in collected.tables:
        if table not in terminology.tables:
            close = difflib.get_close_matches(table, sorted(terminology.tables), 3)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; tables: {', '.join(sorted(terminology.tables))}"
            problems.append(LoadProblem(name, line, col, f"unknown terminology table {table!r} (no terminology/{table}.csv){hint}"))
    for codelist, line, col in collected.codelists:
        if codelist not in terminology.codelists:
            close = difflib.get_close_matches(codelist, sorted(terminology.codelists), 3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            problems.append(LoadProblem(name, line, col, f"unknown CDISC codelist {codelist!r} (no terminology/cdisc-ct/{codelist}.csv){hint}"))
    for element, _verb, _src, line, col in collected.targets:
        if target == "fhir":
            problem = fhir_element_problem(element)
        else:
            head, _, var = element.partition(".")
            problem = None if head.startswith("SUPP") or "." in var else sdtm_variable_problem(kind, var)
        if problem:
            problems.append(LoadProblem(name, line, col, problem))
