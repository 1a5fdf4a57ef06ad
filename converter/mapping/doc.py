"""A readable specification of a mapping set — Markdown and one self-contained HTML page — for sign-off."""

from __future__ import annotations

import html
from typing import Any, Iterator

from converter.mapping.engine import MappingSet
from converter.mapping.rules import MappingFile, pos
from converter.mapping.verbs import VERBS

Row = tuple[str, str, str, str, str, int]  # target, verb, source, terminology, condition, line


def _rows(node: Any, target: str, cond: str = "") -> Iterator[Row]:
    if isinstance(node, dict):
        here = cond
        if "$when" in node:
            here = (cond + " and " if cond else "") + _cond(node["$when"])
        verb = next((k for k in node if k in VERBS), None)
        if verb:
            line = pos(node)[0]
            arg = node[verb]
            term = node.get("table") or node.get("codelist") or ""
            extra = f"map {dict(node['map'])}" if "map" in node else ""
            if verb in ("$each", "$first"):
                yield target, verb, str(arg) if verb == "$each" else "", "", here, line
                sub = node.get("item") if verb == "$each" else arg
                yield from _rows(sub, target, here)
                return
            yield target, verb, str(arg), str(term) or extra, here, line
            return
        for key, value in node.items():
            if key != "$when":
                yield from _rows(value, f"{target}.{key}", here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _rows(value, f"{target}[{i}]", cond)
    else:
        yield target, "constant", repr(node), "", cond, 0


def _cond(spec: Any) -> str:
    if not isinstance(spec, dict):
        return str(spec)
    parts = []
    for key in ("exists", "missing"):
        if key in spec:
            parts.append(f"{key} {spec[key]}")
    if "path" in spec:
        for op in ("equals", "in", "matches"):
            if op in spec:
                parts.append(f"{spec['path']} {op} {spec[op]}")
    for key in ("all", "any"):
        if key in spec:
            parts.append("(" + f" {key[:-1] if key == 'all' else 'or'} ".join(_cond(s) for s in spec[key]) + ")")
    if "not" in spec:
        parts.append(f"not {_cond(spec['not'])}")
    return " and ".join(parts)


def file_rows(mf: MappingFile) -> list[tuple[str, list[Row]]]:
    """Each rule of a file with its specification rows."""
    out = []
    for rule, spec in zip(mf.rules, [r for r in mf.doc.get("rules", []) if isinstance(r, dict) and "id" in r]):
        rows = list(_rows(rule.template, rule.kind))
        for qnam, q in (spec.get("supp") or {}).items():
            rows += list(_rows(q.get("value"), f"SUPP{rule.kind}.{qnam} ({q.get('label', '')})"))
        out.append((rule.id, rows))
    return out


def markdown(mapping_set: MappingSet) -> str:
    """The specification as Markdown."""
    lines = ["# CaseBridge mapping specification", "",
             f"Mapping set `{mapping_set.folder}` · SHA-256 `{mapping_set.digest[:16]}…` · CDISC CT {mapping_set.terminology.ct_version or '—'}", ""]
    for mf in mapping_set.files:
        lines += [f"## {mf.name} — {mf.target.upper()} {mf.kind}", "", mf.description.strip(), ""]
        specs = {str(r["id"]): r for r in mf.doc.get("rules", []) if isinstance(r, dict) and "id" in r}
        for rule_id, rows in file_rows(mf):
            spec = specs[rule_id]
            head = f"### rule `{rule_id}` — for each `{spec.get('for_each', '(case)')}`"
            lines += [head, ""]
            if spec.get("description"):
                lines += [str(spec["description"]).strip(), ""]
            if spec.get("when"):
                lines += [f"Only when: {_cond(spec['when'])}", ""]
            if spec.get("profile"):
                lines += [f"Profile: `{spec['profile']}`", ""]
            lines += ["| target | verb | source | terminology / codelist | condition | line |", "|---|---|---|---|---|---|"]
            for target, verb, source, term, cond, line in rows:
                cells = [target, verb, source, term, cond, f"{mf.name}:{line}" if line else ""]
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def html_page(mapping_set: MappingSet) -> str:
    """The specification as one self-contained HTML page (no external assets)."""
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>CaseBridge mapping specification</title>",
           "<style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;width:100%;margin:0 0 1.5em}"
           "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}th{background:#f3f3f3}"
           "code{background:#f6f6f6}h2{border-bottom:2px solid #444;margin-top:2em}</style></head><body>",
           "<h1>CaseBridge mapping specification</h1>",
           f"<p>Mapping set <code>{html.escape(str(mapping_set.folder))}</code> · SHA-256 <code>{mapping_set.digest[:16]}…</code>"
           f" · CDISC CT {html.escape(mapping_set.terminology.ct_version or '—')}</p>"]
    for mf in mapping_set.files:
        out.append(f"<h2>{html.escape(mf.name)} — {mf.target.upper()} {html.escape(mf.kind)}</h2><p>{html.escape(mf.description)}</p>")
        specs = {str(r["id"]): r for r in mf.doc.get("rules", []) if isinstance(r, dict) and "id" in r}
        for rule_id, rows in file_rows(mf):
            spec = specs[rule_id]
            out.append(f"<h3>rule <code>{html.escape(rule_id)}</code> — for each <code>{html.escape(str(spec.get('for_each', '(case)')))}</code></h3>")
            if spec.get("when"):
                out.append(f"<p>Only when: {html.escape(_cond(spec['when']))}</p>")
            out.append("<table><tr><th>target</th><th>verb</th><th>source</th><th>terminology / codelist</th><th>condition</th><th>line</th></tr>")
            for target, verb, source, term, cond, line in rows:
                cells = [target, verb, source, term, cond, f"{mf.name}:{line}" if line else ""]
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
