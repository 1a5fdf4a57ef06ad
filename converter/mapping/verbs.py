"""The mapping verbs and the compiler that turns a mapping template into generated Python (see codegen.py).

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
from contextlib import ExitStack
from dataclasses import dataclass, field
from hashlib import sha1
from typing import Any, Callable

from converter.case.dates import iso_of
from converter.mapping.casepaths import is_list
from converter.mapping.codegen import Source
from converter.mapping.conditions import TEXT_OF, compile_condition, normalized, text_of
from converter.mapping.paths import Path, PathSyntaxError, each_hit, hit_list, parse_path, walk
from converter.mapping.terminology import Terminology, normalize

VERBS = ("$value", "$code", "$ct", "$date", "$quantity", "$ref", "$each", "$format", "$first")
VERB_OPTIONS: dict[str, tuple[str, ...]] = {
    "$value": ("as", "map", "default", "join"),
    "$code": ("table", "field", "system", "as"),
    "$ct": ("codelist", "unknown", "max_length"),
    "$date": ("part",),
    "$quantity": ("value", "unit", "table"),
    "$ref": ("rule",),
    "$each": ("item",),
    "$format": (),
    "$first": (),
}
NAMESPACE = uuid.UUID("6f1b2c1e-6a55-5c1f-9a63-0c4a5e2b7d10")
_NAMESPACE_BYTES = NAMESPACE.bytes
_VARIANT = {f"{n:x}": "89ab"[n & 3] for n in range(16)}  # a hex digit with the RFC 4122 variant bits set
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
    ref_index: Callable[[str, str | None], list[str]]  # (entity path, rule id) → "urn:uuid:<resource id>" of each
    refs: dict[tuple[str, str | None], list[str]] = field(default_factory=dict)  # what ref_index found so far
    reads: list[Any] = field(default_factory=list)  # every read, flat: where, origin, current output, where, …
    unmapped: list[dict[str, str]] = field(default_factory=list)
    current: Any = None  # the resource / row being built

    def touch(self, where: str, origin: Origin) -> None:
        """Record that ``where`` in the case fed ``origin`` of the current output."""
        self.reads.extend((where, origin, self.current))

    def flag(self, where: str, text: Any, origin: Origin, reason: str) -> None:
        """Record a fact that was kept as text (or dropped) because no verified code exists."""
        self.unmapped.append({"path": where, "text": str(text), "reason": reason,
                              "mapping": f"{origin.file}:{origin.line}", "rule": origin.rule, "target": origin.target})


def resource_key(item: Any, where: str) -> str:
    """The stable business key of an entity: its id, else its document path."""
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        return item["id"]
    return where


def resource_id(case_id: str, rule_id: str, key: str) -> str:
    """Deterministic resource id: UUIDv5 of case id + rule + key (``str(uuid.uuid5(NAMESPACE, …))``)."""
    h = sha1(_NAMESPACE_BYTES + f"{case_id}|{rule_id}|{key}".encode()).hexdigest()  # the first 32 digits are the UUID
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"  # version 5, RFC 4122 variant


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


@dataclass(frozen=True, slots=True)
class Part:
    """A compiled template node: the expression holding its value once its statements ran."""

    expr: str          # a local variable or a bound constant (None = nothing to emit)
    dynamic: bool      # False: the value is the constant ``value``, computed at compile time
    value: Any = None
    plain: bool = False  # the value is never an empty list or mapping (None or kept as it is)
    single: bool = False  # the value is never a list (a list template appends it, never extends by it)

    def keep(self) -> str:
        """The test for "a template keeps this value" (empty values are dropped)."""
        if self.plain:
            return f"{self.expr} is not None"
        return "{0} is not None and ({0} or ({0} != [] and {0} != {{}}))".format(self.expr)




@dataclass(slots=True)
class Compiler:
    """Compiles template nodes of one rule into the statements of a generated function (``src``)."""

    file: str
    rule: str
    terminology: Terminology
    collected: Collected
    scopes: tuple[tuple[str, ...], ...] = ()  # schema patterns of the scope chain (root first)
    src: Source | None = None                 # the function being generated

    def where(self, node: Any) -> tuple[int, int]:
        """Line and column (1-based) of a ruamel node."""
        lc = getattr(node, "lc", None)
        return (lc.line + 1, lc.col + 1) if lc is not None and lc.line is not None else (0, 0)

    def path(self, text: Any, node: Any, record: bool = True) -> Path:
        """Compile a source path, remembering it for the linter (unless ``record`` is False)."""
        line, col = self.where(node)
        try:
            p = parse_path(str(text))
        except PathSyntaxError as exc:
            raise CompileError(str(exc), line, col) from None
        if record:
            self.collected.paths.append((p, self.scopes, line, col))
        return p

    def start(self, kind: str, line: int) -> Source:
        """Begin a new generated function of this rule (``kind``: when, produce)."""
        empty = (True,) + (False,) * (len(self.scopes) - 1)
        self.src = Source(f"<mapping {self.file}:{line} rule {self.rule} {kind}>", len(self.scopes) - 1, empty)
        return self.src

    def condition(self, spec: Any, origin: Origin) -> str:
        """Generate a condition whose reads are recorded under ``origin``; returns its boolean variable."""
        src = self.src
        src.line(f"# {origin.file}:{origin.line} {origin.target}")
        return compile_condition(spec, src, src.const(origin, "O"))

    def compile(self, node: Any, target: str) -> Part:
        """Compile a template node into ``src``."""
        src = self.src
        if isinstance(node, dict):
            verbs = [k for k in node if isinstance(k, str) and k.startswith("$") and k != "$when"]
            cond = None
            if "$when" in node:
                line, col = self.where(node)
                try:
                    cond = self.condition(node["$when"], Origin(self.file, line, self.rule, f"{target} (condition)"))
                except (ValueError, PathSyntaxError) as exc:
                    raise CompileError(f"$when: {exc}", line, col) from None
                self._condition_paths(node["$when"], node)
            if len(verbs) > 1:
                line, col = self.where(node)
                raise CompileError(f"one verb per mapping, found {', '.join(verbs)}", line, col)
            if cond is None:
                return self._dict(node, verbs, target)
            out = src.var("r")
            src.line(f"{out} = None")
            with src.block(f"if {cond}:"):
                part = self._dict(node, verbs, target)
                src.line(f"{out} = {part.expr}")
            return Part(out, True, plain=part.plain or (not part.dynamic and _kept(part.value)),
                        single=part.single or (not part.dynamic and not isinstance(part.value, list)))
        if isinstance(node, list):
            parts = [self.compile(v, f"{target}[{i}]") for i, v in enumerate(node)]
            if not any(p.dynamic for p in parts):
                const_list: list[Any] = []
                for p in parts:
                    if isinstance(p.value, list):
                        const_list.extend(p.value)
                    elif p.value is not None:
                        const_list.append(p.value)
                value = const_list or None
                return Part(src.const(value), False, value, True)
            out = src.var("l")
            if len(parts) == 1 and parts[0].single:  # one element: a list of it, or nothing
                src.line(f"{out} = [{parts[0].expr}] if {parts[0].expr} is not None else None")
                return Part(out, True, plain=True)
            # the elements' statements were generated in order above; collect their values
            src.line(f"{out} = []")
            for p in parts:
                if not p.dynamic:
                    if isinstance(p.value, list):
                        src.line(f"{out}.extend({p.expr})")
                    elif p.value is not None:
                        src.line(f"{out}.append({p.expr})")
                    continue
                if not p.single:
                    with src.block(f"if isinstance({p.expr}, list):"):
                        src.line(f"{out}.extend({p.expr})")
                with src.block(f"{'if' if p.single else 'elif'} {p.expr} is not None:"):
                    src.line(f"{out}.append({p.expr})")
            src.line(f"{out} = {out} or None")
            return Part(out, True, plain=True)
        return Part(src.const(node), False, node, _kept(node), True)

    def _dict(self, node: dict[str, Any], verbs: list[str], target: str) -> Part:
        if not verbs:
            return self.obj(node, target)
        try:
            expr = self.verb(verbs[0], node, target)
        except CompileError as exc:  # keep going: every problem of a file is reported at once
            self.collected.errors.append(exc)
            return Part("None", True, plain=True, single=True)
        return Part(expr, True, plain=self._plain(verbs[0], node), single=self._single(verbs[0], node))

    def _plain(self, verb: str, node: dict[str, Any]) -> bool:
        """Whether a compiled verb's value is never an empty list or mapping (its keep test is ``is not None``)."""
        if verb in ("$format", "$first", "$each"):
            return True
        if verb == "$value" or (verb == "$date" and node.get("part", "date") != "date"):
            return False  # a value copied from the case may be anything
        return not self.path(node[verb], node, record=False).many  # a [] path gives a list, maybe empty

    def _single(self, verb: str, node: dict[str, Any]) -> bool:
        """Whether a compiled verb's value is never a list."""
        if verb in ("$each", "$first", "$value"):
            return False
        if verb == "$format":
            return True
        return self._plain(verb, node)  # a coded value, a date, a quantity or a reference unless over a [] path

    def body(self, node: Any, target: str, into: str, reserved: tuple[str, ...]) -> None:
        """Generate a rule's template so that its fields end up in the dict variable ``into`` (as
        ``into.update(template or {})`` would), written in place when it is a plain mapping of its own keys."""
        src = self.src
        if isinstance(node, dict) and not any(isinstance(k, str) and (k.startswith("$") or k in reserved) for k in node):
            part = self.obj(node, target, into)
            if part.expr == into:
                return
        else:
            part = self.compile(node, target)
        src.line(f"{into}.update({part.expr} or {{}})")

    def obj(self, node: dict[str, Any], target: str, into: str | None = None) -> Part:
        """A literal mapping: kept when constant, dropped when all its computed fields are empty.

        With ``into`` (a dict variable) a computed mapping is written there, and its constants taken out
        again when none of its computed fields is filled."""
        src = self.src
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
        parts = [(str(k), self.compile(v, f"{target}.{k}")) for k, v in node.items() if k != "$when"]
        if not any(p.dynamic for _, p in parts):  # a constant mapping is built once (outputs never mutate nested values)
            const = {k: p.value for k, p in parts if _kept(p.value)} or None
            return Part(src.const(const), False, const, True, True)
        out, filled = into or src.var("o"), src.var("f")
        constants = any(not p.dynamic and _kept(p.value) for _, p in parts)  # else: filled == not empty
        if into is None and not constants and len(parts) == 1:  # one computed field: a mapping of it, or nothing
            (k, p), = parts
            src.line(f"{out} = {{{k!r}: {p.expr}}} if {p.keep()} else None")
            return Part(out, True, plain=True, single=True)
        if into is None:
            src.line(f"{out} = {{}}")
        if constants:
            src.line(f"{filled} = False")
        for k, p in parts:
            if not p.dynamic:
                if _kept(p.value):  # constants are kept as values, not computed per output
                    src.line(f"{out}[{k!r}] = {p.expr}")
                continue
            with src.block(f"if {p.keep()}:"):
                src.line(f"{out}[{k!r}] = {p.expr}")
                if constants:
                    src.line(f"{filled} = True")
        if into is None:
            src.line(f"{out} = {out} if {filled} else None" if constants else f"{out} = {out} or None")
        elif constants:
            with src.block(f"if not {filled}:"):
                for k, p in parts:
                    if not p.dynamic and _kept(p.value):
                        src.line(f"del {out}[{k!r}]")
        return Part(out, True, plain=True, single=True)

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

    def verb(self, name: str, node: dict[str, Any], target: str) -> str:
        """Compile one verb node; returns the variable holding its value."""
        line, col = self.where(node)
        if name not in VERBS:
            raise CompileError(f"unknown verb {name!r}; expected one of {', '.join(VERBS)}", line, col)
        allowed = VERB_OPTIONS[name]
        extra = [k for k in node if k not in (name, "$when") and k not in allowed]
        if extra:
            hint = f"; {name} takes {', '.join(allowed)}" if allowed else f"; {name} takes no options"
            raise CompileError(f"unknown option(s) {', '.join(map(str, extra))} for {name}{hint}", line, col)
        origin = Origin(self.file, line, self.rule, target)
        self.src.line(f"# {self.file}:{line} {target} {name}")
        return getattr(self, "v_" + name[1:])(node[name], node, origin, line, col)

    def _gather(self, p: Path, origin: Origin, one: str, touch: bool = True) -> str:
        """Generate ``one`` (a format string over the value, its path) applied to every value at ``p``, each
        read recorded (unless ``one`` records its own reads); a list for ``[]`` paths, else the one value or None."""
        src = self.src
        out = src.var("r")
        src.line(f"{out} = {'[]' if p.many else 'None'}")
        with each_hit(src, p) as (v, w):
            if touch:
                src.line(f"touch(({w}, {src.const(origin, 'O')}, cur))")
            self._keep(out, p.many, one.format(v, w))
        return out

    def _keep(self, out: str, many: bool, expr: str) -> None:
        """Generate: ``out`` takes the value of ``expr`` (single-valued path), or gets it appended unless None."""
        src = self.src
        if not many:
            src.line(f"{out} = {expr}")
            return
        r = src.var("x")
        src.line(f"{r} = {expr}")
        with src.block(f"if {r} is not None:"):
            src.line(f"{out}.append({r})")

    def _text_of(self, text: str, v: str) -> None:
        """Generate: ``text`` = the text of the value ``v`` (a string as it is; a coded value's text)."""
        src = self.src
        src.line(f"{text} = {v} if type({v}) is str else {src.helper('_text', _text)}{TEXT_OF.format(v)}")

    # --- verbs ---------------------------------------------------------------------------------------

    def v_value(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> str:
        p = self.path(arg, node)
        kind = node.get("as")
        if kind not in (None, "text", "number", "integer"):
            raise CompileError(f"as: {kind!r}; expected text, number or integer", line, col)
        table = {normalize(str(k)): v for k, v in (node.get("map") or {}).items()}
        has_map = "map" in node
        default = node.get("default")
        joiner = node.get("join")

        def convert(v: Any, where: str, run: Run) -> Any:
            v = text_of(v)
            if has_map:
                key = normalized(str(v))
                if key not in table:
                    run.flag(where, v, origin, "value not in the mapping's map")
                    return None
                v = table[key]
            if kind == "text" and v is not None:
                return _text(v)
            if kind in ("number", "integer") and v is not None:
                try:
                    return int(v) if kind == "integer" else float(v)
                except (TypeError, ValueError):
                    run.flag(where, v, origin, f"not a {kind}")
                    return None
            return v

        src = self.src
        one = TEXT_OF[1:-1]  # text_of, inline
        if kind == "text" and not has_map:  # its text, a string as it is
            t = src.var("t")
            one = f"({t} if type({t} := ({one})) is str or {t} is None else {src.helper('_text', _text)}({t}))"
        elif has_map or kind is not None:
            one = src.const(convert, "F") + "({0}, {1}, run)"
        if not p.many:
            out = self._gather(p, origin, one)
            if default is not None:
                with src.block(f"if {out} is None:"):
                    src.line(f"{out} = {src.const(default)}")
            return out
        values = self._gather(p, origin, one)
        out = src.var("r")
        if joiner is None:
            src.line(f"{out} = {values} if {values} else {src.const(default)}")
        else:
            text = src.helper("_text", _text)
            src.line(f"{out} = {src.const(joiner)}.join({text}(v) for v in {values}) if {values} else {src.const(default)}")
        return out

    def v_code(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> str:
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
        def lookup(text: str) -> tuple[str | None, tuple[dict[str, str], ...], Any]:
            """(why it is flagged or None, its codings as FHIR Codings to copy, the wanted field of the first)."""
            table = terminology.tables.get(name)
            entry = table.lookup(text) if table is not None else None
            codings = [c for c in (entry.codings if entry else []) if system is None or c.system == system]
            reason = None
            if not codings:
                reason = f"{'unknown term' if entry is None else 'no approved code'} in table {name} (text kept, no code)"
            fhir = tuple({"system": c.system, "code": c.code, "display": c.display} if c.display else
                         {"system": c.system, "code": c.code} for c in codings)
            return reason, fhir, getattr(codings[0], want) if codings and want not in ("concept", "text") else None
        known = Memo(lookup)  # source text → lookup(text)
        if want == "text":
            result = "{text}"
        elif want != "concept":
            result = "{value}"
        elif as_coding:
            result = "dict({fhir}[0]) if {fhir} else None"
        else:
            result = "{{'coding': list(map(dict, {fhir})), 'text': {text}}} if {fhir} else {{'text': {text}}}"
        src = self.src
        memo, o = src.const(known, "M"), src.const(origin, "O")
        text, reason, fhir, value = src.var("t"), src.var("q"), src.var("c"), src.var("x")
        out = src.var("r")
        src.line(f"{out} = {'[]' if p.many else 'None'}")
        with each_hit(src, p) as (v, w):
            src.line(f"touch(({w}, {o}, cur))")
            self._text_of(text, v)
            src.line(f"{reason}, {fhir}, {value} = {memo}[{text}]")
            with src.block(f"if {reason} is not None:"):
                src.line(f"run.flag({w}, {text}, {o}, {reason})")
            self._keep(out, p.many, result.format(text=text, fhir=fhir, value=value))
        return out

    def v_ct(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> str:
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
        limit = node.get("max_length")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 8):
            raise CompileError(f"max_length: {limit!r}; expected a whole number of characters, at least 8 "
                               "(e.g. 40 for --TEST)", line, col)

        def lookup(text: str) -> Any:
            cl = terminology.codelists.get(name)
            return cl.lookup(text) if cl is not None else None
        known = Memo(lookup)  # source text → its term in the codelist (or None)

        def uncoded(text: str, where: str, run: Run) -> Any:
            cl = terminology.codelists.get(name)
            if cl is not None and cl.extensible and keep_text:
                if limit is not None and len(text) > limit:
                    short = shorten(text, limit)
                    run.flag(where, text, origin, f"not in extensible codelist {name}: text kept, shortened to "
                             f"{short!r} ({limit} characters at most; the full text goes where the mapping's supp "
                             "puts it, SDTMIG 4.5.3.1)")
                    return short
                run.flag(where, text, origin, f"not in extensible codelist {name}: text kept")
                return text
            if cl is not None and cl.extensible and derive:
                code = sponsor_code(text)
                run.flag(where, text, origin, f"not in extensible codelist {name}: sponsor code {code} derived "
                         "from the text (review, then declare it in cdisc-ct/sponsor/additions.csv)")
                return code
            run.flag(where, text, origin, f"not in non-extensible codelist {name}: left empty")
            return None

        src = self.src
        memo, o, text, term = src.const(known, "M"), src.const(origin, "O"), src.var("t"), src.var("m")
        out = src.var("r")
        src.line(f"{out} = {'[]' if p.many else 'None'}")
        with each_hit(src, p) as (v, w):
            src.line(f"touch(({w}, {o}, cur))")
            self._text_of(text, v)
            src.line(f"{term} = {memo}[{text}]")
            self._keep(out, p.many, f"{term}.submission_value if {term} is not None else "
                       f"{src.const(uncoded, 'F')}({text}, {w}, run)")
        return out

    def v_date(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> str:
        p = self.path(arg, node)
        part = node.get("part", "date")
        if part not in ("date", "text", "direction", "anchor"):
            raise CompileError(f"part: {part!r}; expected date, text, direction or anchor", line, col)

        def direction(v: Any) -> Any:
            if not isinstance(v, dict) or "anchor" not in v:
                return None
            return (v.get("direction") or ("after" if v.get("offset") or v.get("cycle") else "coincident")).upper()

        src = self.src
        if part == "date":  # a date as printed is a string: kept as it is; iso_of inline for a date object
            iso, t = src.helper("iso_of", iso_of), src.var("t")
            return self._gather(p, origin, f"{{0}} if type({{0}}) is str else ({t} if isinstance({{0}}, dict) and "
                                           f"type({t} := {{0}}.get('date')) is str else {iso}({{0}}))")
        if part in ("text", "anchor"):  # one field of a relative time
            return self._gather(p, origin, f"({{0}}.get({part!r}) if isinstance({{0}}, dict) else None)")
        return self._gather(p, origin, src.const(direction, "F") + "({0})")

    def v_quantity(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> str:
        p = self.path(arg, node)
        value_step = tuple(str(node.get("value", "value")).split("."))
        unit_step = tuple(str(node.get("unit", "unit")).split("."))
        name = node.get("table", "ucum")
        self.collected.tables.append((str(name), line, col))
        terminology = self.terminology

        def lookup(unit: Any) -> Any:
            table = terminology.tables.get(name)
            return table.lookup(unit) if table is not None else None
        known = Memo(lookup)  # unit text → its table entry (or None)

        def one(v: Any, where: str, run: Run) -> Any:
            number = _first_hit(v, value_step, where)[0]
            unit_hit = _first_hit(v, unit_step, where)
            if number is None:
                return None
            run.touch(f"{where}.{'.'.join(value_step)}", origin)
            out: dict[str, Any] = {"value": number}
            unit = unit_hit[0]
            if unit is not None:
                run.touch(unit_hit[1], origin)
                out["unit"] = unit
                entry = known[unit] if type(unit) is str else lookup(unit)
                if entry and entry.codings:
                    out["system"], out["code"] = entry.codings[0].system, entry.codings[0].code
                else:
                    run.flag(unit_hit[1], unit, origin, f"unit not in table {name} (kept as text, no UCUM code)")
            return out

        # a quantity records what it read itself (the value and unit fields, not the quantity object)
        return self._gather(p, origin, self.src.const(one, "F") + "({0}, {1}, run)", touch=False)

    def v_ref(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> str:
        p = self.path(arg, node)
        rule = node.get("rule")  # checked by the linter against the rule ids of the whole set
        src = self.src
        o, key = src.const(origin, "O"), src.const(rule)
        out, entity, urns, urn = src.var("r"), src.var("e"), src.var("u"), src.var("x")
        src.line(f"{out} = {'[]' if p.many else 'None'}")
        # each value: an entity id (read, resolved through the case's ids) or the entity itself; a single
        # value refers to the first target, a [] path to every target of every value
        with each_hit(src, p) as (v, w):
            with src.block(f"if isinstance({v}, str):"):
                src.line(f"{entity} = run.ids.get({v})")
                with src.block(f"if {entity} is not None:"):
                    src.line(f"touch(({w}, {o}, cur))")
            with src.block("else:"):
                src.line(f"{entity} = {w}")
            with src.block(f"if {entity} is not None:"):
                src.line(f"{urns} = refs.get(({entity}, {key}))")  # the case's targets, found once
                with src.block(f"if {urns} is None:"):
                    src.line(f"{urns} = run.ref_index({entity}, {key})")
                if p.many:
                    with src.block(f"for {urn} in {urns}:"):
                        src.line(f"{out}.append({{'reference': {urn}}})")
                else:
                    with src.block(f"if {urns}:"):
                        src.line(f"{out} = {{'reference': {urns}[0]}}")
        return out

    def v_each(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> str:
        p = self.path(arg, node)
        if "item" not in node:
            raise CompileError("$each needs 'item: <template for each element>'", line, col)
        if not p.many and is_list(scope_pattern(self.scopes, p)):
            p = Path(p.text, p.up, p.steps + ("[]",))  # `$each: staging` iterates the list, as for_each does
        src = self.src
        child = Compiler(self.file, self.rule, self.terminology, self.collected,
                         self.scopes + (scope_pattern(self.scopes, p),), src)
        base = 0 if p.up == -1 else src.depth - p.up
        empty = not p.steps and base >= 0 and src.empty_paths[base]
        out = src.var("l")
        src.line(f"{out} = []")
        with each_hit(src, p) as (v, w), src.level(empty) as d:
            src.line(f"i{d}, w{d} = {v}, {w}")
            r = child.compile(node["item"], origin.target).expr
            with src.block(f"if isinstance({r}, list):"):
                src.line(f"{out}.extend({r})")
            with src.block(f"elif {r} is not None:"):
                src.line(f"{out}.append({r})")
        src.line(f"{out} = {out} or None")
        return out

    def v_format(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> str:
        template = str(arg)
        paths = [self.path(m, node) for m in _PLACEHOLDER.findall(template)]
        pieces = _PLACEHOLDER.split(template)
        src = self.src
        o = src.const(origin, "O")
        text = src.helper("_text", _text)
        out = src.var("r")
        src.line(f"{out} = None")
        values: list[str] = []
        with ExitStack() as stack:  # each placeholder nests: a missing one leaves the result None
            for p in paths:
                s = src.var("s")
                if p.many:
                    hits = hit_list(src, p)
                    stack.enter_context(src.block(f"if {hits}:"))
                    with src.block(f"for _, w in {hits}:"):
                        src.line(f"touch((w, {o}, cur))")
                    src.line(f"{s} = ', '.join({text}{TEXT_OF.format('v')} for v, _ in {hits})")
                else:
                    v, w = stack.enter_context(each_hit(src, p))
                    src.line(f"touch(({w}, {o}, cur))")
                    src.line(f"{s} = {v} if type({v}) is str else str({v}) if type({v}) is int else {text}{TEXT_OF.format(v)}")
                values.append(s)
            joined = [values[i // 2] if i % 2 else repr(piece) for i, piece in enumerate(pieces) if i % 2 or piece]
            src.line(f"{out} = {' + '.join(joined) or repr('')}")
        return out

    def v_first(self, arg: Any, node: dict[str, Any], origin: Origin, line: int, col: int) -> str:
        if not isinstance(arg, list) or not arg:
            raise CompileError("$first takes a list of alternatives", line, col)
        src = self.src
        out = src.var("r")
        src.line(f"{out} = None")
        with ExitStack() as stack:  # each alternative is tried only when the ones before gave nothing
            for i, a in enumerate(arg):
                if src.unreachable:  # after a constant alternative: compiled (checked) but never run
                    self.compile(a, origin.target)
                    continue
                part = self.compile(a, origin.target)
                if not part.dynamic:
                    if _kept(part.value):
                        src.line(f"{out} = {part.expr}")
                        stack.enter_context(src.dead())
                    continue
                with src.block(f"if {part.keep()}:"):
                    src.line(f"{out} = {part.expr}")
                if i < len(arg) - 1:
                    stack.enter_context(src.block("else:"))
        return out


def _first_hit(value: Any, steps: tuple[str, ...], where: str) -> tuple[Any, str]:
    """The first (value, concrete path) of ``steps`` below ``value`` (as :func:`walk`), or (None, "")."""
    if "[]" in steps:
        return next(walk(value, steps, where), (None, ""))
    for step in steps:
        if not isinstance(value, dict) or step not in value:
            return None, ""
        value = value[step]
        where = f"{where}.{step}" if where else step
    return (value, where) if value is not None else (None, "")


class Memo(dict):  # type: ignore[type-arg]
    """A bounded memo of one compiled verb's lookups (terminology is fixed once a mapping set is loaded):
    ``memo[key]`` is ``compute(key)``, computed once."""

    __slots__ = ("compute",)
    SIZE = 1024  # texts per verb: a vocabulary fits; misspellings cannot grow it without bound

    def __init__(self, compute: Callable[[Any], Any]) -> None:
        super().__init__()
        self.compute = compute

    def __missing__(self, key: Any) -> Any:
        if len(self) >= self.SIZE:
            self.clear()
        value = self[key] = self.compute(key)
        return value


def _kept(value: Any) -> bool:
    """Whether a template keeps an element (empty values are dropped)."""
    return value is not None and value != [] and value != {}


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at the last word boundary when there is one."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return (text[:cut] if cut >= limit // 2 else text[:limit]).rstrip(" ,;:-(")


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
