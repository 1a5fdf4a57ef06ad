"""Mapping files: loading with line numbers, and compiling each rule once."""

from __future__ import annotations

import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Callable

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import MappingStartEvent, ScalarEvent, SequenceStartEvent, StreamEndEvent
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver

try:
    from ruamel.yaml.cyaml import CParser
except ImportError:  # no ruamel.yaml.clib (e.g. PyPy): every file takes the pure-Python loader
    CParser = None

from converter.mapping.casepaths import with_lists
from converter.mapping.codegen import Source
from converter.mapping.paths import Path, PathSyntaxError, each_hit, parse_path, walk_code
from converter.mapping.terminology import Terminology
from converter.mapping.verbs import Collected, CompileError, Compiler, Origin


Chain = tuple[Any, ...]  # a scope chain: (root, "", item, its path, …) from the case root to the item


@dataclass(slots=True)
class Rule:
    """One compiled rule: which items it iterates, and what it emits for each.

    ``items``, ``when`` and ``produce`` are generated functions (:mod:`converter.mapping.codegen`):
    ``items(root, "", seen)`` lists the scope chain of every item (see :func:`_items`); ``when(run, *chain)``
    is the rule condition alone (for ``$ref``); ``produce(run, rule, chains, rid_of, resources,
    resource_rules, rows)`` runs the rule over those items, appending each FHIR resource (and this rule) or
    SDTM :class:`Row`.
    """

    id: str
    file: str
    line: int
    target: str                       # "fhir" | "sdtm"
    kind: str                         # FHIR resource type or SDTM domain
    for_each: Path
    pattern: str                      # schema pattern of the items, e.g. "therapy_lines[].agents[]"
    when: Callable[..., bool] | None
    items: Callable[..., list[Chain]]
    produce: Callable[..., None]
    profile: str = ""
    description: str = ""
    template: Any = None              # the raw template (documentation)


@dataclass(slots=True)
class Row:
    """One SDTM row a rule produced, before the SDTM builder adds keys and sequence numbers."""

    domain: str
    values: dict[str, Any]
    rule: Rule
    entity: str                           # business key of the source entity (its id or path)
    supp: list[tuple[str, str, Any, str]] = field(default_factory=list)  # (QNAM, QLABEL, QVAL, QORIG)
    related: list[str] = field(default_factory=list)  # entity ids this row is related to (RELREC)


@dataclass(slots=True)
class MappingFile:
    """One file of ``mappings/``: its rules, tests and raw document."""

    path: FsPath
    name: str            # relative name used in messages, e.g. "sdtm/ae.yaml"
    target: str
    kind: str
    description: str
    rules: list[Rule]
    tests: list[Any]
    doc: Any


@dataclass(slots=True)
class LoadProblem:
    """A problem found while loading a mapping file (becomes a lint issue)."""

    file: str
    line: int
    col: int
    message: str


def _yaml() -> YAML:
    y = YAML()
    y.allow_duplicate_keys = False
    y.constructor.add_constructor("tag:yaml.org,2002:timestamp", lambda self, node: self.construct_scalar(node))
    return y


class _Constructor(RoundTripConstructor):
    """ruamel's round-trip constructor with timestamps kept as text, as :func:`_yaml` loads them."""


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", lambda self, node: self.construct_scalar(node))

_PURE = object()  # what _c_load returns for a document only the pure-Python loader may read
_PARTS_WAYS = re.compile(  # text libyaml and ruamel's pure parser may read differently (see _c_load)
    "[!\t\r\x85\u2028\u2029]"      # tags; characters libyaml reads as spaces or line breaks, ruamel not
    "|^\ufeff?%|.\ufeff"            # directives; a BOM inside the text
    "|[|>][-+0-9]*#"                # a block scalar header with a comment not after a space
    "|(?:^|[\\s\\[{,:])[&*][A-Za-z0-9_-]*[^A-Za-z0-9_\\s,\\[\\]{}-]",  # anchor names libyaml cuts short
    re.DOTALL | re.MULTILINE)
_ANCHORS = re.compile(r"(?:^|[\s\[{,:])[&*]", re.MULTILINE)  # may hold an anchor or alias (see _c_load)


def _c_load(text: str) -> Any:
    """The document ``_yaml().load(text)`` gives, parsed by libyaml (ruamel's C parser), or ``_PURE``.

    libyaml builds the nodes (with the same line/column marks), ruamel's YAML 1.2 resolver tags them, and
    :meth:`_CLoader.plain` with ruamel's round-trip constructor turns them into the same objects, 8-10 times
    faster. Only what a YAML writer would read differs: comments and the fold points of ``>`` text are
    not kept. Where the two parsers are known to part ways the text is left to the pure loader (see
    ``_PARTS_WAYS``): a ``%`` directive (its YAML version changes the resolver), an explicit ``!tag`` (libyaml
    expands its handle), tabs, carriage returns, Unicode line breaks and inner BOMs (libyaml reads some of
    them as spaces or line breaks), empty plain values (libyaml marks them elsewhere) and tags other than
    the core schema's (see :meth:`_CLoader.document`). So does any text libyaml or the constructor fails on,
    so every error message and position stays the pure loader's. libyaml's composer drops anchors: a text
    that may hold one gets them back from a pass over libyaml's events (:func:`_anchors`).
    tests/test_mapping_yaml.py compares both loaders on every YAML file of the project, on edge cases and on
    random edits of the mapping files.
    """
    if CParser is None or _PARTS_WAYS.search(text):
        return _PURE
    loader = _CLoader(text)
    try:
        return loader.document(text)
    except Exception:  # noqa: BLE001 - any failure is reported by the pure loader, which re-reads the text
        return _PURE
    finally:
        loader.dispose()


_TAG = "tag:yaml.org,2002:"
_PLAIN_KEYS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
_CORE_TAGS = _PLAIN_KEYS | {_TAG + "map", _TAG + "seq"}  # and merge keys (<<)
_BOOLS = {"true": True, "false": False}  # YAML 1.2: what the resolver tags bool
_QUOTED_OR_PLAIN = (None, "", "'", '"')  # libyaml's plain style is ""


class _PartsWays(Exception):
    """A document libyaml and ruamel's pure parser may read differently (see :func:`_c_load`)."""


def _anchors(text: str) -> dict[tuple[int, int, type], str]:
    """Anchor names by where their node starts (line, column, node type), from libyaml's events; a name used
    twice raises :class:`_PartsWays` (which node an alias means then is the pure loader's business)."""
    kinds = {ScalarEvent: ScalarNode, MappingStartEvent: MappingNode, SequenceStartEvent: SequenceNode}
    out: dict[tuple[int, int, type], str] = {}
    names: set[str] = set()
    parser = CParser(text)
    try:
        while not isinstance(event := parser.get_event(), StreamEndEvent):
            anchor = getattr(event, "anchor", None)
            if anchor is not None and type(event) in kinds:
                if anchor in names:
                    raise _PartsWays
                names.add(anchor)
                out[(event.start_mark.line, event.start_mark.column, kinds[type(event)])] = anchor
    finally:
        parser.dispose()
    return out


if CParser is not None:
    class _CLoader(CParser, _Constructor, VersionedResolver):  # type: ignore[misc, valid-type]
        """libyaml's parser and composer feeding the round-trip constructor (see :func:`_c_load`)."""

        comment_handling = None  # what YAML() sets: comments are not kept (nothing reads them)
        processing_version = (1, 2)  # the pure loader's version without a %YAML directive

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            self._parser = self._composer = self
            _Constructor.__init__(self, loader=self)
            self.allow_duplicate_keys = False
            VersionedResolver.__init__(self, loadumper=self)

        def document(self, text: str) -> Any:
            """The one document of ``text`` (None when empty), its anchors put back (see :func:`_anchors`);
            :class:`_PartsWays` for a node with a tag other than the core schema's, an empty plain value (libyaml
            marks it at another position) or an anchor that cannot be put back."""
            node = self.get_single_node()
            if node is None:
                return None
            anchors = _anchors(text) if _ANCHORS.search(text) else {}
            todo, seen = [(node, False)], set()  # (node, whether it is a mapping key)
            while todo:
                item, is_key = todo.pop()
                if id(item) in seen:  # an alias: libyaml's composer gives the anchored node itself
                    if item.anchor is None:
                        raise _PartsWays
                    continue
                seen.add(id(item))
                if anchors:
                    item.anchor = anchors.pop((item.start_mark.line, item.start_mark.column, type(item)), None)
                if item.tag not in _CORE_TAGS and not (is_key and item.tag == _TAG + "merge"):
                    raise _PartsWays
                if type(item.value) is list:  # a sequence's items, a map's (key, value) pairs
                    for child in item.value:
                        if type(child) is tuple:
                            todo += ((child[0], True), (child[1], False))
                        else:
                            todo.append((child, False))
                elif not item.value and not item.style:
                    raise _PartsWays
            if anchors:  # an anchor no node starts at
                raise _PartsWays
            return self.plain(node)

        def plain(self, node: Any) -> Any:
            """What the round-trip constructor builds for ``node``, built directly for the common nodes: maps
            with scalar keys and sequences (positions, flow style), strings, booleans and nulls. Numbers, ``|``
            and ``>`` text, anchors, merge keys and complex keys go through the constructor itself."""
            tag = node.tag
            if node.anchor is not None:
                return self.construct_object(node, deep=True)
            if tag == _TAG + "map":
                if any(k.tag not in _PLAIN_KEYS or k.anchor is not None for k, _ in node.value):
                    return self.construct_object(node, deep=True)  # merge keys, complex keys, aliases
                data = CommentedMap()
                data._yaml_set_line_col(node.start_mark.line, node.start_mark.column)
                for key_node, value_node in node.value:
                    key = self.plain(key_node)
                    value = self.plain(value_node)
                    self.check_mapping_key(node, key_node, data, key, value)  # a duplicate raises
                    data._yaml_set_kv_line_col(key, [key_node.start_mark.line, key_node.start_mark.column,
                                                     value_node.start_mark.line, value_node.start_mark.column])
                    data[key] = value
            elif tag == _TAG + "seq":
                data = CommentedSeq()
                data._yaml_set_line_col(node.start_mark.line, node.start_mark.column)
                for idx, child in enumerate(node.value):
                    data.append(self.plain(child))
                    data._yaml_set_idx_line_col(idx, [child.start_mark.line, child.start_mark.column])
            elif tag == _TAG + "str" and node.style in _QUOTED_OR_PLAIN:
                return node.value
            elif tag == _TAG + "null":
                return None
            elif tag == _TAG + "bool" and node.value in _BOOLS:
                return _BOOLS[node.value]
            else:
                return self.construct_object(node, deep=True)
            self.set_collection_style(data, node)
            return data


def read_mapping_doc(path: FsPath, name: str, problems: list[LoadProblem]) -> Any:
    """Parse a mapping file with positions; syntax errors become problems."""
    try:
        text = path.read_text(encoding="utf-8")
        doc = _c_load(text)
        return _yaml().load(text) if doc is _PURE else doc
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems.append(LoadProblem(name, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0,
                                    f"YAML syntax error: {exc.problem or exc.context}"))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one lint problem, not a crash
        problems.append(LoadProblem(name, 0, 0, f"cannot read: {exc}"))
    return None


def pos(node: Any, key: Any = None) -> tuple[int, int]:
    """1-based line/column of a ruamel node, or of one of its keys."""
    lc = getattr(node, "lc", None)
    if lc is None:
        return 0, 0
    if key is not None:
        try:
            line, col = lc.key(key) if not isinstance(key, int) else lc.item(key)
            return line + 1, col + 1
        except (KeyError, IndexError, TypeError):
            pass
    return (lc.line + 1, lc.col + 1) if lc.line is not None else (0, 0)


def compile_file(path: FsPath, name: str, doc: Any, terminology: Terminology, collected: Collected,
                 problems: list[LoadProblem]) -> MappingFile | None:
    """Compile every rule of a mapping document; each problem is recorded with its line."""
    if not isinstance(doc, dict):
        problems.append(LoadProblem(name, 1, 1, "a mapping file is a mapping with target, rules…"))
        return None
    target = doc.get("target")
    kind = doc.get("resource") if target == "fhir" else doc.get("domain")
    rules: list[Rule] = []
    for i, spec in enumerate(doc.get("rules") or []):
        if not isinstance(spec, dict) or "id" not in spec:
            continue  # reported by the schema check
        before = len(collected.errors)
        try:
            rules.append(compile_rule(spec, name, str(target), str(kind), terminology, collected))
        except CompileError as exc:
            problems.append(LoadProblem(name, exc.line, exc.col, f"rule {spec.get('id')}: {exc}"))
        for exc in collected.errors[before:]:
            problems.append(LoadProblem(name, exc.line, exc.col, f"rule {spec.get('id')}: {exc}"))
    return MappingFile(path, name, str(target), str(kind), str(doc.get("description", "")), rules,
                       list(doc.get("tests") or []), doc)


def compile_rule(spec: dict[str, Any], file: str, target: str, kind: str, terminology: Terminology,
                 collected: Collected) -> Rule:
    """Compile one rule."""
    line, col = pos(spec)
    rule_id = str(spec["id"])
    try:
        for_each = parse_path(str(spec.get("for_each", ".")).lstrip("/") or ".")
    except PathSyntaxError as exc:
        raise CompileError(f"for_each: {exc}", *pos(spec, "for_each")) from None
    for_each = Path(for_each.text, for_each.up, with_lists(for_each.steps))
    if for_each.up > 0:
        raise CompileError("for_each starts at the case root: write 'adverse_events', not '../…'", *pos(spec, "for_each"))
    item_pattern = for_each.steps
    scopes = _scope_chain(item_pattern)
    compiler = Compiler(file, rule_id, terminology, collected, scopes)
    collected.paths.append((for_each, ((),), *pos(spec, "for_each")))
    when = None
    if "when" in spec:
        src = compiler.start("when", line)
        try:
            cond = compiler.condition(spec["when"], Origin(file, line, rule_id, f"{kind} (rule condition)"))
        except (ValueError, PathSyntaxError) as exc:
            raise CompileError(f"when: {exc}", *pos(spec, "when")) from None
        compiler._condition_paths(spec["when"], spec)
        when = src.build("when", cond)
    body_key = "resource" if target == "fhir" else "row"
    if body_key not in spec:
        raise CompileError(f"rule {rule_id} has no '{body_key}:' template", line, col)
    produce = _produce(spec, spec[body_key], target, kind, compiler, when is not None, line)
    pattern = "".join(("[]" if s == "[]" else (("." if i else "") + s)) for i, s in enumerate(item_pattern))
    pattern = pattern.replace(".[]", "[]")
    return Rule(rule_id, file, line, target, kind, for_each, pattern, when,
                _items(for_each.steps, pattern, f"<mapping {file}:{line} rule {rule_id} for_each>"), produce,
                str(spec.get("profile", "")), str(spec.get("description", "")), spec[body_key])


def _produce(spec: dict[str, Any], template: Any, target: str, kind: str, compiler: Compiler, conditional: bool,
             line: int) -> Callable[..., None]:
    """Generate ``produce``: for each item, the rule condition, then one FHIR resource or SDTM row (with its
    SUPP-- qualifiers and RELREC ids) from the template — the reads of each part recorded in order."""
    rule_id, file = compiler.rule, compiler.file
    src = compiler.start("produce", line)
    src.line(f"for {src.params()} in chains:")
    src.indent = 2
    if conditional:  # read while the previous output is still the current one
        src.line("cur = run.current")
        src.reads_here()
        cond = compiler.condition(spec["when"], Origin(file, line, rule_id, f"{kind} (rule condition)"))
        with src.block(f"if not {cond}:"):
            src.line("continue")
    item, where = f"i{src.depth}", f"w{src.depth}"
    own_id = src.const(Origin(file, line, rule_id, kind), "O")  # reading an item's id feeds the output itself
    src.line(f"key = {item}['id'] if isinstance({item}, dict) and isinstance({item}.get('id'), str) else {where}")
    if target == "fhir":
        src.line(f"rid = rid_of({src.const(rule_id)}, key)")
        src.line(f"run.current = cur = ({src.const(kind)}, rid)")
    else:
        src.line("values = {}")
        src.line("run.current = cur = values")
    with src.block(f"if isinstance({item}, dict) and 'id' in {item}:"):
        src.line(f"touch(({where} + '.id', {own_id}, cur))")
    src.reads_here()
    if target == "fhir":
        src.line(f"resource = {{'resourceType': {src.const(kind)}, 'id': rid}}")
        profile = str(spec.get("profile", ""))
        if profile:
            src.line(f"resource['meta'] = {{'profile': [{src.const(profile)}]}}")
        compiler.body(template, kind, "resource", ("resourceType", "id", "meta"))
        src.line("resources.append(resource)")
        src.line("resource_rules.append(rule)")
    else:
        compiler.body(template, kind, "values", ())
        src.line(f"row = {src.helper('Row', Row)}({src.const(kind)}, values, rule, key)")
        _supp(spec, kind, compiler, src)
        if "relrec" in spec:
            for text in spec["relrec"] if isinstance(spec["relrec"], list) else [spec["relrec"]]:
                with each_hit(src, compiler.path(text, spec)) as (v, w), src.block(f"if isinstance({v}, str):"):
                    src.line(f"row.related.append({v})")
                    src.line(f"touch(({w}, {own_id}, cur))")
        src.line("rows.append(row)")
    return src.build("produce", "", "run, rule, chains, rid_of, resources, resource_rules, rows")


def _supp(spec: dict[str, Any], kind: str, compiler: Compiler, src: Source) -> None:
    """Generate the SUPP-- qualifiers of a row: each value that is not empty, in the order of the mapping."""
    empty = src.const((None, "", []))
    for qnam, qspec in (spec.get("supp") or {}).items():
        if not isinstance(qspec, dict) or "value" not in qspec:
            raise CompileError(f"supp {qnam}: needs label and value", *pos(spec["supp"], qnam))
        value = compiler.compile(qspec["value"], f"SUPP{kind}.{qnam}").expr
        qualifier = (str(qnam), str(qspec.get("label", qnam)))
        with src.block(f"if {value} not in {empty}:"):
            src.line(f"row.supp.append(({src.const(qualifier[0])}, {src.const(qualifier[1])}, {value}, "
                     f"{src.const(str(qspec.get('origin', 'CRF')))}))")


def _items(steps: tuple[str, ...], pattern: str, filename: str) -> Callable[..., list[Chain]]:
    """Generate the item loop of a ``for_each`` path: one nested loop per list level (``..`` = enclosing item).

    ``items(root, "", seen)`` returns every item's scope chain and records it in ``seen`` (document path →
    (``pattern``, chain)), the entities ``$ref`` may point to."""
    groups: list[tuple[str, ...]] = []
    current: list[str] = []
    for step in steps:
        current.append(step)
        if step == "[]":
            groups.append(tuple(current))
            current = []
    if current:
        groups.append(tuple(current))
    src = Source(filename, 0, (True,))
    src.line("out = []")
    with ExitStack() as stack:
        for level, group in enumerate(groups):
            v, w = stack.enter_context(walk_code(src, f"i{level}", f"w{level}", group, level == 0))
            src.line(f"i{level + 1}, w{level + 1} = {v}, {w}")
        src.line(f"chain = ({src.params(len(groups))},)")
        src.line("out.append(chain)")
        src.line(f"seen[w{len(groups)}] = ({src.const(pattern)}, chain)")
    return src.build("items", "out", "i0, w0, seen")


def _scope_chain(steps: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Schema patterns of the scope chain of a for_each path (root, each list level, the item)."""
    chain: list[tuple[str, ...]] = [()]
    for i, step in enumerate(steps):
        if step == "[]":
            chain.append(steps[: i + 1])
    if steps and steps[-1] != "[]":
        chain.append(steps)
    return tuple(chain)
