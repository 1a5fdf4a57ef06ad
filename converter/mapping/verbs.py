"""The mapping verbs and the compiler that turns a mapping template into fast closures.

A template is plain YAML shaped like its target (a FHIR resource or an SDTM row). Literals are constants;
a mapping with one ``$verb`` key computes a value. The verbs are documented in docs/mapping-language.md:

``$value`` copy a value · ``$code`` look a term up in a terminology table · ``$ct`` CDISC CT submission
value · ``$date`` ISO 8601 date (partial kept) or relative timing · ``$quantity`` a UCUM quantity ·
``$ref`` a reference to another resource · ``$each`` repeat over a list · ``$format`` build a string ·
``$first`` the first non-empty alternative. Any mapping may carry ``$when`` (a condition).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from converter.case.dates import iso_of
from converter.mapping.casepaths import is_list
from converter.mapping.conditions import compile_condition, text_of
from converter.mapping.paths import Path, PathSyntaxError, parse_path, walk
from converter.mapping.terminology import Terminology, normalize

VERBS = ("$value", "$code", "$ct", "$date", "$quantity", "$ref", "$each", "$format", "$first")
VERB_OPTIONS: dict[str, tuple[str, ...]] = {
    "$value": ("as", "map", "default", "join"),
    "$code": ("table", "field", "system", "as"),
    "$ct": ("codelist", "unknown"),
    "$date": ("part",),
    "$quantity": ("value", "unit", "table"),
    "$ref": ("rule",),
    "$each": ("item",),
    "$format": (),
    "$first": (),
}
NAMESPACE = uuid.UUID("6f1b2c1e-6a55-5c1f-9a63-0c4a5e2b7d10")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_INDEX = re.compile(r"\[\d+\]")


class CompileError(ValueError):
    """A template problem found while compiling; ``line``/``col`` point into the mapping file."""

    def __init__(self, message: str, line: int, col: int):
        super().__init__(message)
        self.line, self.col = line, col


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an output element comes from in the mapping files."""

    file: str
    line: int
    rule: str
    target: str  # e.g. "AdverseEvent.event" or "AE.AETERM"


@dataclass(slots=True)
class Run:
    """Per-case state while rules are applied: what was read, what could not be coded, issues."""

    case_id: str
    data: dict[str, Any]
    ids: dict[str, str]
    terminology: Terminology
    ref_index: Callable[[str, str | None], list[str]]
    touched: list[tuple[str, Origin, Any]] = field(default_factory=list)
    unmapped: list[dict[str, str]] = field(default_factory=list)
    current: Any = None  # the resource / row being built

    def touch(self, where: str, origin: Origin) -> None:
        """Record that ``where`` in the case fed ``origin`` of the current output."""
        self.touched.append((where, origin, self.current))

    def flag(self, where: str, text: Any, origin: Origin, reason: str) -> None:
        """Record a fact that was kept as text (or dropped) because no verified code exists."""
        self.unmapped.append({"path": where, "text": str(text), "reason": reason,
                              "mapping": f"{origin.file}:{origin.line}", "rule": origin.rule, "target": origin.target})


@dataclass(slots=True)
class Scope:
    """The item a rule is looking at, its document path, and the enclosing item."""

    item: Any
    path: str
    parent: "Scope | None"
    run: Run


def resolve(path: Path, scope: Scope) -> list[tuple[Any, str]]:
    """Evaluate a compiled path in a scope: every (value, concrete path)."""
    base: Scope | None = scope
    if path.up == -1:
        while base.parent is not None:
            base = base.parent
    else:
        for _ in range(path.up):
            base = base.parent if base is not None else None
    if base is None:
        return []
    if path.many:
        return list(walk(base.item, path.steps, base.path))
    value = base.item  # fast path: plain field access, the common case
    for step in path.steps:
        if type(value) is not dict:
            return []
        value = value.get(step)
        if value is None:
            return []
    if not path.steps:
        return [] if value is None else [(value, base.path)]
    suffix = path.dotted
    return [(value, f"{base.path}.{suffix}" if base.path else suffix)]


def resource_key(item: Any, where: str) -> str:
    """The stable business key of an entity: its id, else its document path."""
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        return item["id"]
    return where


@lru_cache(maxsize=65536)
def resource_id(case_id: str, rule_id: str, key: str) -> str:
    """Deterministic resource id: UUIDv5 of case id + rule + key."""
    return str(uuid.uuid5(NAMESPACE, f"{case_id}|{rule_id}|{key}"))


def pattern_of(where: str) -> str:
    """``therapy_lines[5].agents[0]`` → ``therapy_lines[].agents[]``."""
    return _INDEX.sub("[]", where)


@dataclass(slots=True)
class Collected:
    """What a compile pass saw, for the linter and the documentation generator."""

    paths: list[tuple[Path, tuple[tuple[str, ...], ...], int, int]] = field(default_factory=list)
    tables: list[tuple[str, int, int]] = field(default_factory=list)
    codelists: list[tuple[str, int, int]] = field(default_factory=list)
    targets: list[tuple[str, str, str, int, int]] = field(default_factory=list)  # every template key: (target, "", "", line, col)
    errors: list["CompileError"] = field(default_factory=list)                   # problems found while compiling


@dataclass(slots=True)
class Compiler:
    """Compiles template nodes of one rule."""

    file: str
    rule: str
    terminology: Terminology
    collected: Collected
    scopes: tuple[tuple[str, ...], ...] = ()  # schema patterns of the scope chain (root first)

    def where(self, node: Any) -> tuple[int, int]:
        """Line and column (1-based) of a ruamel node."""
        lc = getattr(node, "lc", None)
        return (lc.line + 1, lc.col + 1) if lc is not None and lc.line is not None else (0, 0)

    def path(self, text: Any, node: Any) -> Path:
        """Compile a source path, remembering it for the linter."""
        line, col = self.where(node)
        try:
            p = parse_path(str(text))
        except PathSyntaxError as exc:
            raise CompileError(str(exc), line, col) from None
        self.collected.paths.append((p, self.scopes, line, col))
        return p

    def reading(self, origin: Origin) -> Callable[[Path, Scope], list[tuple[Any, str]]]:
        """A path resolver for conditions that records what it read (a field a condition tests is used)."""

        def read(path: Path, sc: Scope) -> list[tuple[Any, str]]:
            hits = resolve(path, sc)
            for _, where in hits:
                sc.run.touch(where, origin)
            return hits
        return read

    def compile(self, node: Any, target: str) -> tuple[Callable[[Scope], Any], bool]:
        """Compile a template node: (function of a scope, is-dynamic)."""
        if isinstance(node, dict):
            verbs = [k for k in node if isinstance(k, str) and k.startswith("$") and k != "$when"]
            cond = None
            if "$when" in node:
                line, col = self.where(node)
                try:
                    cond = compile_condition(node["$when"], self.reading(Origin(self.file, line, self.rule, f"{target} (condition)")))
                except (ValueError, PathSyntaxError) as exc:
                    raise CompileError(f"$when: {exc}", line, col) from None
                self._condition_paths(node["$when"], node)
            if len(verbs) > 1:
                line, col = self.where(node)
                raise CompileError(f"one verb per mapping, found {', '.join(verbs)}", line, col)
            if verbs:
                try:
                    fn = self.verb(verbs[0], node, target)
                except CompileError as exc:  # keep going: every problem of a file is reported at once
                    self.collected.errors.append(exc)
                    fn = _nothing
                dynamic = True
            else:
                fn, dynamic = self.obj(node, target)
            if cond is None:
                return fn, dynamic
            return (lambda sc: fn(sc) if cond(sc) else None), True
        if isinstance(node, list):
            parts = [self.compile(v, f"{target}[{i}]") for i, v in enumerate(node)]
            fns = [f for f, _ in parts]

            def lst(sc: Scope) -> Any:
                out: list[Any] = []
                for f in fns:
                    v = f(sc)
                    if isinstance(v, list):
                        out.extend(v)
                    elif v is not None:
                        out.append(v)
                return out or None
            if not any(d for _, d in parts):
                const_list = lst(None)  # type: ignore[arg-type]
                return (lambda sc: const_list), False
            return lst, True
        value = node
        return (lambda sc: value), False

    def obj(self, node: dict[str, Any], target: str) -> tuple[Callable[[Scope], Any], bool]:
        """A literal mapping: kept when constant, dropped when all its computed fields are empty."""
        lc = getattr(node, "lc", None)
        node = {k: v for k, v in node.items() if k != "$when"} if lc is None else node
        for k in node:
            if k == "$when":
                continue
            try:
                line, col = (lc.key(k)[0] + 1, lc.key(k)[1] + 1) if lc is not None else (0, 0)
            except (KeyError, TypeError):
                line, col = 0, 0
            self.collected.targets.append((f"{target}.{k}", "", "", line, col))
        parts = [(str(k), *self.compile(v, f"{target}.{k}")) for k, v in node.items() if k != "$when"]
        dynamic = any(d for _, _, d in parts)
        if not dynamic:  # a constant mapping is built once (outputs never mutate nested values)
            const = {k: v for k, f, _ in parts if (v := f(None)) is not None and v != [] and v != {}} or None
            return (lambda sc: const), False
        # constants are kept as values (no call per output), computed fields as functions
        items = [(k, None, f(None)) if not d else (k, f, None) for k, f, d in parts]

        def build(sc: Scope) -> Any:
            out: dict[str, Any] = {}
            filled = False
            for k, f, const in items:
                if f is None:
                    if const is not None and const != [] and const != {}:
                        out[k] = const
                    continue
                v = f(sc)
                if v is None or v == [] or v == {}:
                    continue
                out[k] = v
                filled = True
            return out if filled else None
        return build, dynamic

    def _condition_paths(self, spec: Any, node: Any) -> None:
        if isinstance(spec, dict):
            for key in ("exists", "missing", "path"):
                if key in spec:
                    self.path(spec[key], node)
            for key in ("all", "any"):
                for sub in spec.get(key) or []:
                    self._condition_paths(sub, node)
            if "not" in spec:
                self._condition_paths(spec["not"], node)

    def verb(self, name: str, node: dict[str, Any], target: str) -> Callable[[Scope], Any]:
        """Compile one verb node."""
        line, col = self.where(node)
        if name not in VERBS:
            raise CompileError(f"unknown verb {name!r}; expected one of {', '.join(VERBS)}", line, col)
        allowed = VERB_OPTIONS[name]
        extra = [k for k in node if k not in (name, "$when") and k not in allowed]
        if extra:
            hint = f"; {name} takes {', '.join(allowed)}" if allowed else f"; {name} takes no options"
            raise CompileError(f"unknown option(s) {', '.join(map(str, extra))} for {name}{hint}", line, col)
        origin = Origin(self.file, line, self.rule, target)
        arg = node[name]
        return getattr(self, "v_" + name[1:])(arg, node, origin, line, col)

    # --- verbs ---------------------------------------------------------------------------------------

    def v_value(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> Callable[[Scope], Any]:
        p = self.path(arg, node)
        kind = node.get("as")
        if kind not in (None, "text", "number", "integer"):
            raise CompileError(f"as: {kind!r}; expected text, number or integer", line, col)
        table = {normalize(str(k)): v for k, v in (node.get("map") or {}).items()}
        has_map = "map" in node
        default = node.get("default")
        joiner = node.get("join")

        def convert(v: Any, where: str, sc: Scope) -> Any:
            v = text_of(v)
            if has_map:
                key = normalize(str(v))
                if key not in table:
                    sc.run.flag(where, v, origin, "value not in the mapping's map")
                    return None
                v = table[key]
            if kind == "text" and v is not None:
                return _text(v)
            if kind in ("number", "integer") and v is not None:
                try:
                    return int(v) if kind == "integer" else float(v)
                except (TypeError, ValueError):
                    sc.run.flag(where, v, origin, f"not a {kind}")
                    return None
            return v

        def fn(sc: Scope) -> Any:
            values = []
            for v, where in resolve(p, sc):
                sc.run.touch(where, origin)
                c = convert(v, where, sc)
                if c is not None:
                    values.append(c)
            if not values:
                return default
            if p.many:
                return joiner.join(_text(v) for v in values) if joiner is not None else values
            return values[0]
        return fn

    def v_code(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> Callable[[Scope], Any]:
        p = self.path(arg, node)
        name = node.get("table")
        if not name:
            raise CompileError("$code needs 'table: <terminology table>'", line, col)
        self.collected.tables.append((str(name), line, col))
        want = node.get("field", "concept")
        if want not in ("concept", "code", "display", "system", "text"):
            raise CompileError(f"field: {want!r}; expected concept, code, display, system or text", line, col)
        system = node.get("system")
        as_coding = node.get("as") == "coding"
        terminology = self.terminology

        def one(v: Any, where: str, sc: Scope) -> Any:
            text = _text(text_of(v))
            table = terminology.tables.get(name)
            entry = table.lookup(text) if table is not None else None
            codings = [c for c in (entry.codings if entry else []) if system is None or c.system == system]
            if not codings:
                reason = "unknown term" if entry is None else "no approved code"
                sc.run.flag(where, text, origin, f"{reason} in table {name} (text kept, no code)")
            if want == "text":
                return text
            if want != "concept":
                return getattr(codings[0], want) if codings else None
            out = [{"system": c.system, "code": c.code, "display": c.display} if c.display else
                   {"system": c.system, "code": c.code} for c in codings]
            if as_coding:
                return out[0] if out else None
            return {"coding": out, "text": text} if out else {"text": text}

        return _gather(p, origin, one)

    def v_ct(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> Callable[[Scope], Any]:
        p = self.path(arg, node)
        name = node.get("codelist")
        if not name:
            raise CompileError("$ct needs 'codelist: <CDISC codelist, e.g. NY>'", line, col)
        self.collected.codelists.append((str(name), line, col))
        terminology = self.terminology
        unknown = node.get("unknown", "text")
        if unknown not in ("text", "empty", "derive"):
            raise CompileError(f"unknown: {unknown!r}; expected text (keep the printed text), empty, "
                               "or derive (a sponsor --TESTCD made from the text)", line, col)
        keep_text = unknown == "text"
        derive = unknown == "derive"

        def one(v: Any, where: str, sc: Scope) -> Any:
            cl = terminology.codelists.get(name)
            text = _text(text_of(v))
            term = cl.lookup(text) if cl is not None else None
            if term is not None:
                return term.submission_value
            if cl is not None and cl.extensible and keep_text:
                sc.run.flag(where, text, origin, f"not in extensible codelist {name}: text kept")
                return text
            if cl is not None and cl.extensible and derive:
                code = sponsor_code(text)
                sc.run.flag(where, text, origin, f"not in extensible codelist {name}: sponsor code {code} derived "
                            "from the text (review, then declare it in cdisc-ct/sponsor/additions.csv)")
                return code
            sc.run.flag(where, text, origin, f"not in non-extensible codelist {name}: left empty")
            return None
        return _gather(p, origin, one)

    def v_date(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> Callable[[Scope], Any]:
        p = self.path(arg, node)
        part = node.get("part", "date")
        if part not in ("date", "text", "direction", "anchor"):
            raise CompileError(f"part: {part!r}; expected date, text, direction or anchor", line, col)

        def one(v: Any) -> Any:
            if part == "date":
                return iso_of(v)
            if not isinstance(v, dict):
                return None
            if part == "text":
                return v.get("text")
            if part == "anchor":
                return v.get("anchor")
            if "anchor" not in v:
                return None
            return (v.get("direction") or ("after" if v.get("offset") or v.get("cycle") else "coincident")).upper()

        return _gather(p, origin, lambda v, where, sc: one(v))

    def v_quantity(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> Callable[[Scope], Any]:
        p = self.path(arg, node)
        value_step = tuple(str(node.get("value", "value")).split("."))
        unit_step = tuple(str(node.get("unit", "unit")).split("."))
        name = node.get("table", "ucum")
        self.collected.tables.append((str(name), line, col))
        terminology = self.terminology

        def one(v: Any, where: str, sc: Scope) -> Any:
            number = next(walk(v, value_step, where), (None, ""))[0]
            unit_hit = next(walk(v, unit_step, where), (None, ""))
            if number is None:
                return None
            sc.run.touch(f"{where}.{'.'.join(value_step)}", origin)
            out: dict[str, Any] = {"value": number}
            unit = unit_hit[0]
            if unit is not None:
                sc.run.touch(unit_hit[1], origin)
                out["unit"] = unit
                table = terminology.tables.get(name)
                entry = table.lookup(unit) if table is not None else None
                if entry and entry.codings:
                    out["system"], out["code"] = entry.codings[0].system, entry.codings[0].code
                else:
                    sc.run.flag(unit_hit[1], unit, origin, f"unit not in table {name} (kept as text, no UCUM code)")
            return out

        def fn(sc: Scope) -> Any:
            values = [r for v, where in resolve(p, sc) if (r := one(v, where, sc)) is not None]
            return values if p.many else (values[0] if values else None)
        return fn

    def v_ref(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> Callable[[Scope], Any]:
        p = self.path(arg, node)
        rule = node.get("rule")  # checked by the linter against the rule ids of the whole set

        def fn(sc: Scope) -> Any:
            refs = []
            for v, where in resolve(p, sc):
                entity_path = sc.run.ids.get(v) if isinstance(v, str) else where
                if entity_path is None:
                    continue
                if isinstance(v, str):  # an id reference is read; a referenced entity's own fields are not
                    sc.run.touch(where, origin)
                refs.extend({"reference": f"urn:uuid:{rid}"} for rid in sc.run.ref_index(entity_path, rule))
            return refs if p.many else (refs[0] if refs else None)
        return fn

    def v_each(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> Callable[[Scope], Any]:
        p = self.path(arg, node)
        if "item" not in node:
            raise CompileError("$each needs 'item: <template for each element>'", line, col)
        if not p.many and is_list(scope_pattern(self.scopes, p)):
            p = Path(p.text, p.up, p.steps + ("[]",))  # `$each: staging` iterates the list, as for_each does
        child = Compiler(self.file, self.rule, self.terminology, self.collected,
                         self.scopes + (scope_pattern(self.scopes, p),))
        item_fn, _ = child.compile(node["item"], origin.target)

        def fn(sc: Scope) -> Any:
            out = []
            for v, where in resolve(p, sc):
                r = item_fn(Scope(v, where, sc, sc.run))
                if isinstance(r, list):
                    out.extend(r)
                elif r is not None:
                    out.append(r)
            return out or None
        return fn

    def v_format(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> Callable[[Scope], Any]:
        template = str(arg)
        paths = [self.path(m, node) for m in _PLACEHOLDER.findall(template)]
        pieces = _PLACEHOLDER.split(template)

        def fn(sc: Scope) -> Any:
            values = []
            for p in paths:
                hits = resolve(p, sc)
                if not hits:
                    return None
                for _, where in hits:
                    sc.run.touch(where, origin)
                values.append(", ".join(_text(text_of(v)) for v, _ in hits))
            out = []
            for i, piece in enumerate(pieces):
                out.append(values[i // 2] if i % 2 else piece)
            return "".join(out)
        return fn

    def v_first(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> Callable[[Scope], Any]:
        if not isinstance(arg, list) or not arg:
            raise CompileError("$first takes a list of alternatives", line, col)
        fns = [self.compile(a, origin.target)[0] for a in arg]

        def fn(sc: Scope) -> Any:
            for f in fns:
                v = f(sc)
                if v is not None and v != [] and v != {}:
                    return v
            return None
        return fn


def _gather(p: Path, origin: Origin, one: Callable[[Any, str, Scope], Any]) -> Callable[[Scope], Any]:
    """A verb function: ``one`` applied to every value at ``p`` (each read recorded); a list for ``[]`` paths."""
    many = p.many

    def fn(sc: Scope) -> Any:
        values = []
        for v, where in resolve(p, sc):
            sc.run.touch(where, origin)
            r = one(v, where, sc)
            if r is not None:
                values.append(r)
        return values if many else (values[0] if values else None)
    return fn


def sponsor_code(text: str) -> str:
    """A deterministic sponsor test code for an unknown test: ≤ 8 characters A-Z/0-9, starting with a letter.

    Six characters from the words of the text plus two from a hash of it, so different texts do not collide.
    """
    words = re.findall(r"[A-Za-z0-9]+", text.upper()) or ["X"]
    each = max(1, 6 // len(words))
    stem = "".join(w[:each] for w in words)[:6]
    if not stem[0].isalpha():
        stem = ("X" + stem)[:6]
    digest = int(uuid.uuid5(NAMESPACE, normalize(text)).hex, 16)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return stem + alphabet[digest % 36] + alphabet[(digest // 36) % 36]


def _nothing(scope: Scope) -> None:
    """Stand-in for a template node that failed to compile (the file does not load; lint lists why)."""
    return None


def scope_pattern(scopes: tuple[tuple[str, ...], ...], p: Path) -> tuple[str, ...]:
    """The schema pattern a path leads to from the innermost scope."""
    if p.up == -1:
        return p.steps
    base = scopes[-1 - p.up] if len(scopes) > p.up else ()
    return base + p.steps


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
