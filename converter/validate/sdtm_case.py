"""Per-case SDTM validation: one subject's rows checked where :meth:`StudyBuilder.add` left them.

:func:`validate_case` gives the issues that the subject-level checks of
:func:`~converter.validate.sdtm.validate_study` plus the XPT guards (``describe_dataset`` + ``check_xpt``) give
on the one-subject study of a case, without assembling that study. Each distinct value of a variable is judged
once, by those same detailed checks run on a single cell, and the verdict is remembered: a case then costs about
one dictionary lookup per cell. A case whose cells show anything beyond the common findings (a value outside an
extensible codelist, a Required variable left null) is checked again on the detailed path, so every issue keeps
its message, location and order.
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass
from itertools import chain, compress, repeat
from typing import Any, Callable

from converter.mapping.terminology import Terminology
from converter.sdtm import metadata
from converter.sdtm.build import StudyBuilder, _cell, _keys, sort_keys, variables_used
from converter.sdtm.model import Cell, Dataset, Variable
from converter.validate.issues import Issue, dataset_of
from converter.validate.sdtm import (_FULL_DATE, MAX_PER_CHECK, _check_cells, _check_ct, _check_rows_schema,
                                     _full_date, _norm, _Report, _row_schema, _Table, check_rules, check_study,
                                     check_subject, check_table, codelist_index, rules)
from converter.write.define_xml import describe_dataset, is_iso8601_variable, iso8601_data_type
from converter.write.xpt import _IBM_MAX, _IBM_MIN, MAX_CHAR, check_xpt

_NULL_RULES = frozenset({"sdtm.variable.required.null", "sdtm.dictionary.uncoded",
                         "sdtm.variable.required.unreported"})
_MEMO_LIMIT = 8192  # distinct values remembered per variable before its memo starts again (bounded memory)
_DIRTY = object()     # verdict: more than a common finding; the case takes the detailed path
_MISS = object()


@dataclass(frozen=True, slots=True)
class _Convert:
    """Verdict: the cell is not in its SDTM type yet (``1.0`` in a Char variable, ``""``); store ``value``."""

    value: Cell


@dataclass(frozen=True, slots=True)
class _Finding:
    """Verdict: exactly one common finding; ``schema`` ones come before the dataset's CT findings."""

    rule: str
    message: str
    schema: bool


class _Memo:
    """Verdicts on the values of one variable, and the values without a finding: ``text`` the text ones and
    null, ``typed`` every one as (type, value), so that ``1``, ``1.0`` and ``True`` stay apart."""

    __slots__ = ("verdicts", "text", "typed", "quick")

    def __init__(self, quick: Callable[[Any], bool] | None = None) -> None:
        self.quick = quick  # proves a value finding-free without the detailed checks (plain variables only)
        self.verdicts: dict[Any, Any] = {}
        self.text: set[Any] = set()
        self.typed: set[tuple[type, Any]] = set()

    def remember(self, key: Any, value: Any, verdict: Any) -> None:
        if len(self.verdicts) >= _MEMO_LIMIT:  # start again rather than grow without bound
            self.verdicts.clear()
            self.text.clear()  # in place: the layouts of the plans hold these sets
            self.typed.clear()
        self.verdicts[key] = verdict
        if verdict is None:
            self.typed.add((value.__class__, value))
            if value is None or value.__class__ is str:
                self.text.add(value)


_IGNORED = _Memo()  # the memo of a variable the dataset does not have: the one-subject study drops its values


def validate_case(rows: dict[str, list[dict[str, Cell]]], terminology: Terminology, study_id: str, *,
                  xpt: bool = True, max_per_check: int = MAX_PER_CHECK) -> list[Issue]:
    """The subject-level SDTM issues of one case's rows (as :meth:`StudyBuilder.add` returns them).

    Cells are normalised in place to their SDTM types (what :meth:`StudyBuilder.study` does to them anyway).
    With ``xpt`` the per-cell XPORT v5 / Define-XML guards apply too. Dataset-level facts (variable metadata
    and model notes, EX presence) are left to the study-level pass of ``validate_study(rows_checked=True)``.
    """
    compiled = _compiled(terminology)
    found = _fast(rows, compiled, study_id, xpt, max_per_check)
    if found is not None:
        return found
    return _detailed(rows, terminology, study_id, xpt, max_per_check)


def _detailed(rows: dict[str, list[dict[str, Cell]]], terminology: Terminology, study_id: str, xpt: bool,
              max_per_check: int) -> list[Issue]:
    """The same issues from the one-subject study itself (slow, used when a case has unusual findings)."""
    builder = StudyBuilder(study_id, terminology.ct_version)
    builder.rows = {name: list(table) for name, table in rows.items()}
    study = builder.study()
    issues = check_study(study, terminology, max_per_check=max_per_check, study_level=False)
    if xpt:
        for dataset in study.datasets.values():
            columns, guards = describe_dataset(dataset)
            issues += guards + check_xpt(dataset, columns)
    return issues


# --- compiled once per terminology -----------------------------------------------------------------------------

class _Compiled:
    """Per-dataset plans, per-variable verdict memos and XPT metadata verdicts for one terminology."""

    def __init__(self, terminology: Terminology):
        self.terminology = terminology
        self.codelists = codelist_index(terminology)
        self.plans: dict[str, _Plan | None] = {}
        self.memos: dict[tuple[Any, ...], _Memo] = {}
        self.columns_ok: dict[tuple[str, tuple[str, ...]], bool] = {}

    def plan(self, name: str) -> _Plan | None:
        if name not in self.plans:
            self.plans[name] = _Plan(name, self) if metadata.is_domain(name) else None
        return self.plans[name]

    def xpt_ok(self, name: str, variables: list[Variable], keys: list[str]) -> bool:
        """True when the dataset's metadata alone (names, labels, declared lengths) gives no XPT guard issue."""
        sig = (name, tuple(v.name for v in variables))
        if sig not in self.columns_ok:
            ds = Dataset(name, metadata.dataset_label(name), variables, [], keys)
            columns, found = describe_dataset(ds)
            self.columns_ok[sig] = not (found or check_xpt(ds, columns))
        return self.columns_ok[sig]


_COMPILED: list[_Compiled] = []


def _compiled(terminology: Terminology) -> _Compiled:
    if not _COMPILED or _COMPILED[0].terminology is not terminology:
        _COMPILED[:] = [_Compiled(terminology)]
    return _COMPILED[0]


_PLAIN = frozenset({"title", "x-rule", "x-class-variable", "type", "maxLength", "minLength"})


def _quick(variable: Variable, prop: dict[str, Any] | None, codes: tuple[str, ...],
           pattern: str | None) -> Callable[[Any], bool] | None:
    """For a variable without codelist, enum or const: a test that is True only for values that every check (row
    schema, CT, cells, XPT and Define-XML guards) accepts; None for other variables.

    ``pattern`` is the row schema's ISO 8601 pattern of the variable, if any (applied to printable ASCII only,
    where Python's and the schema validator's regular expressions agree).
    """
    if prop is None or codes or not set(prop) <= _PLAIN | {"$ref"}:
        return None
    kinds = _types(prop)
    iso = is_iso8601_variable(variable)
    if variable.type == "Char" and "string" in kinds and kinds <= {"string", "null"} and variable.length is None \
            and iso == bool(pattern) and iso == ("$ref" in prop):
        limit = min(prop.get("maxLength", MAX_CHAR), MAX_CHAR)
        if not iso:
            def text(value: Any) -> bool:
                return (value.__class__ is str and 0 < len(value) <= limit and value.isascii()
                        and value.isprintable() and not value.isspace())
            return text
        regex = re.compile(pattern or "")

        def date(value: Any) -> bool:
            return (value.__class__ is str and 0 < len(value) <= limit and value.isascii() and value.isprintable()
                    and not value.isspace() and regex.search(value) is not None
                    and all(_full_date(part) is not None for part in value.split("/") if _FULL_DATE.match(part))
                    and not iso8601_data_type(variable.name, [value])[1])
        return date
    if variable.type == "Num" and "number" in kinds and kinds <= {"number", "null"}:
        def number(value: Any) -> bool:
            return (value.__class__ is int or value.__class__ is float) and (
                value == 0 or _IBM_MIN <= abs(value) < _IBM_MAX)
        return number
    return None


def _types(prop: dict[str, Any]) -> set[str]:
    kind = prop.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


class _Layout:
    """The variables :meth:`_Plan.scan` judges in rows that hold a given set of variables (the Required ones
    too; not those the dataset does not have): Char ones by their text values, Num ones by (type, value)."""

    __slots__ = ("variables", "text", "text_gets", "text_clean", "typed", "typed_gets", "typed_clean")

    def __init__(self, plan: _Plan, names: list[str]):
        self.variables = [var for var in names if plan.memo(var) is not _IGNORED]
        numeric = {var for var in self.variables
                   if metadata.variable(plan.name, var, include_class=True).type == "Num"}  # type: ignore[union-attr]
        self.text = [var for var in self.variables if var not in numeric]
        self.typed = [var for var in self.variables if var in numeric]
        self.text_gets = [repeat(var) for var in self.text]  # endless: map(dict.get, rows, get) takes len(rows)
        self.typed_gets = [repeat(var) for var in self.typed]
        self.text_clean = [plan.memos[var].text for var in self.text]
        self.typed_clean = [plan.memos[var].typed for var in self.typed]


class _Plan:
    """One dataset's checks: which variables must be populated, the verdict memo of each variable, CT pairs."""

    def __init__(self, name: str, compiled: _Compiled):
        self.name = name
        self.compiled = compiled
        self.meta = metadata.domain_meta(name)
        self.label = metadata.dataset_label(name)
        schema = _row_schema(self.meta.source)
        self.schema = schema
        self.props: dict[str, Any] = schema["properties"]
        always = {v.name for v in self.meta.variables if v.core in ("Req", "Exp")}
        nonnull = {n for n, p in self.props.items() if "null" not in _types(p)}
        self.required = frozenset(nonnull & always)  # in every row of the one-subject study: null is a finding
        self.fast = not (nonnull - always)  # a non-nullable Perm variable: judged on the detailed path
        self.memos: dict[str, _Memo] = {}
        self.layouts: dict[frozenset[str], _Layout] = {}
        self.shapes: dict[frozenset[str], _Shape] = {}
        prefix = self.meta.prefix
        self.pairs = [(prefix + code[2:], prefix + text[2:]) for code, text in rules()["sdtm.ct.pair"].params["pairs"]]
        self.pair_memo: dict[tuple[str, Cell, Cell], bool] = {}
        # StudyBuilder.add sorts a dataset by these keys, as StudyBuilder.study() does (not SUPP-- and RELREC)
        self.sorted_by_add = bool(_keys()["keys"].get(name)) and self.meta.source not in ("SUPPQUAL", "RELREC")
        self.sort_keys = frozenset(_keys()["keys"].get(name) or ())

    def memo(self, var: str) -> _Memo:
        """The verdict memo of ``var``, shared by every dataset where the variable is checked the same way."""
        if var in self.memos:
            return self.memos[var]
        variable = metadata.variable(self.name, var, include_class=True)
        if variable is None:
            memo = _IGNORED
        else:
            prop = self.props.get(var)
            ref = prop.get("$ref", "").rpartition("/")[2] if prop else ""
            sig = (var, variable, json.dumps(prop, sort_keys=True), json.dumps(self.schema["$defs"].get(ref)),
                   self.meta.codelists.get(var, ()), metadata.codelist_codes(self.name, var),
                   self.meta.value_domains.get(var))
            memo = self.compiled.memos.get(sig)  # type: ignore[assignment]
            if memo is None:
                codes = self.meta.codelists.get(var, ()) + metadata.codelist_codes(self.name, var)
                pattern = (self.schema["$defs"].get(ref) or {}).get("pattern") if ref else None
                memo = self.compiled.memos[sig] = _Memo(_quick(variable, prop, codes, pattern))
        self.memos[var] = memo
        return memo

    def judge(self, var: str, value: Any) -> Any:
        """The verdict on one cell, from the detailed checks run on a one-cell table."""
        variable = metadata.variable(self.name, var, include_class=True)
        assert variable is not None
        cell = _cell(value, variable.type == "Num")
        if cell is not value:
            return _Convert(cell)
        if _norm(value) is not value:
            return _DIRTY  # blank text or NaN: the validator and the writers see it differently
        if value is not None:
            ds = Dataset(self.name, self.label, [variable], [{var: value}])
            columns, found = describe_dataset(ds)
            if found or check_xpt(ds, columns):
                return _DIRTY
        table = _Table(self.name, self.meta, [var], [{var: value}], {var: variable}, self.label)
        report = _Report(MAX_PER_CHECK)
        _check_rows_schema(table, report, self.compiled.codelists, set())
        _check_ct(table, report, self.compiled.codelists)
        _check_cells(table, report)
        if not report.issues:
            return None
        if len(report.issues) > 1:
            return _DIRTY
        issue = report.issues[0]
        if issue.rule == "sdtm.ct.extensible":
            return _Finding(issue.rule, issue.message, False)
        if issue.rule in _NULL_RULES:
            return _Finding(issue.rule, issue.message, True)
        return _DIRTY

    def verdict(self, memo: _Memo, var: str, value: Any) -> Any:
        """The remembered verdict on ``value`` (judged the first time)."""
        key = value if value is None or value.__class__ is str else (value.__class__, value)
        try:
            verdict = memo.verdicts.get(key, _MISS)
        except TypeError:  # a list: not a cell yet
            return self.judge(var, value)
        if verdict is _MISS:
            verdict = None if memo.quick is not None and memo.quick(value) else self.judge(var, value)
            memo.remember(key, value, verdict)
        return verdict

    def layout(self, present: frozenset[str]) -> _Layout:
        """How :meth:`scan` looks at rows holding the variables ``present`` (worked out once per set)."""
        layout = self.layouts.get(present)
        if layout is None:
            if len(self.layouts) >= _MEMO_LIMIT:
                self.layouts.clear()
            layout = self.layouts[present] = _Layout(self, sorted(present | self.required))
        return layout

    def scan(self, rows: list[dict[str, Cell]]) -> tuple[list[tuple[int, str, _Finding]], set[str], bool] | None:
        """Normalise and judge every cell, column by column and each distinct value once.

        A column whose distinct values are all known to be without a finding costs one set; the others are
        judged value by value. Returns the findings (row index, variable, finding) in row order, the variables
        with a value in some row and whether a sort key changed; None when the case needs the detailed path.
        """
        layout = self.layout(frozenset().union(*rows))
        try:
            text = list(map(set, map(map, _GETS, repeat(rows), layout.text_gets)))
            columns = [list(map(dict.get, rows, get)) for get in layout.typed_gets]
            typed = list(map(set, map(zip, map(map, _TYPES, columns), columns)))
        except TypeError:  # a list: not a cell yet
            check = layout.variables
            used: set[str] = set()
        else:
            used = set(compress(layout.text, map(_not, map(_EMPTY.issuperset, text))))
            used.update(compress(layout.typed, map(_not, map(_TYPED_EMPTY.issuperset, typed))))
            if all(map(set.issubset, text, layout.text_clean)) and all(map(set.issubset, typed, layout.typed_clean)):
                return [], used, False
            check = [var for var, ok in chain(zip(layout.text, map(set.issubset, text, layout.text_clean)),
                                              zip(layout.typed, map(set.issubset, typed, layout.typed_clean)))
                     if not ok]
            used.difference_update(check)
        findings: list[tuple[int, str, _Finding]] = []
        resorted = False
        for var in check:
            memo = self.memos[var]
            column = list(map(dict.get, rows, repeat(var)))
            distinct = _distinct(column)
            verdicts = [self.verdict(memo, var, value) for value in distinct]
            if any(v.__class__ is _Convert for v in verdicts):
                for value, verdict in zip(distinct, verdicts):
                    if verdict.__class__ is _Convert:
                        for index, cell in enumerate(column):
                            if _same(cell, value):
                                rows[index][var] = column[index] = verdict.value
                        resorted = resorted or (var in self.sort_keys and verdict.value is not None)
                distinct = _distinct(column)
                verdicts = [self.verdict(memo, var, value) for value in distinct]
            for value, verdict in zip(distinct, verdicts):
                if verdict is None:
                    continue
                if verdict is _DIRTY or verdict.__class__ is _Convert:
                    return None
                kind = value.__class__
                findings.extend((index, var, verdict) for index, cell in enumerate(column)
                                if cell is value or (cell.__class__ is kind and cell == value))  # _same, inlined
            if any(value is not None and value != "" for value in distinct):
                used.add(var)
        schema_rows = [index for index, _, finding in findings if finding.schema]
        if len(schema_rows) != len(set(schema_rows)):
            return None  # the order of several schema findings in one row is the schema validator's
        findings.sort(key=lambda f: f[0])
        return findings, used, resorted

    def shape(self, used: frozenset[str]) -> _Shape:
        """The dataset's variables and what :func:`_fast` needs of them when ``used`` have a value."""
        shape = self.shapes.get(used)
        if shape is None:
            if len(self.shapes) >= _MEMO_LIMIT:
                self.shapes.clear()
            shape = self.shapes[used] = _Shape(self, used)
        return shape

    def pairs_ok(self, table: _Table, pairs: list[tuple[str, str]]) -> bool:
        """No --TESTCD/--TEST pair of different CT terms (``sdtm.ct.pair``) in the table (``pairs``: its pairs)."""
        for code_var, name_var in pairs:
            rows = table.rows
            for code, text in set(zip(map(dict.get, rows, repeat(code_var)), map(dict.get, rows, repeat(name_var)))):
                key = (code_var, code, text)
                ok = self.pair_memo.get(key)
                if ok is None:
                    one = _Table(self.name, self.meta, [code_var, name_var], [{code_var: code, name_var: text}],
                                 {v: table.declared[v] for v in (code_var, name_var)}, self.label)
                    report = _Report(MAX_PER_CHECK)
                    _check_ct(one, report, self.compiled.codelists)
                    ok = not any(i.rule == "sdtm.ct.pair" for i in report.issues)
                    if len(self.pair_memo) >= _MEMO_LIMIT:
                        self.pair_memo.clear()
                    self.pair_memo[key] = ok
                if not ok:
                    return False
        return True


class _Shape:
    """A dataset's variables when ``used`` have a value (SDTMIG order), its keys, whether its metadata alone
    passes the XPT guards, whether every variable is Char, and its --TESTCD/--TEST pairs."""

    __slots__ = ("variables", "names", "keys", "declared", "order", "xpt_ok", "all_char", "pairs")

    def __init__(self, plan: _Plan, used: frozenset[str]):
        name = plan.name
        self.variables = list(variables_used(name, used))
        self.names = [v.name for v in self.variables]
        self.keys = [k for k in sort_keys(name, self.names) if k in self.names]
        self.declared = {v.name: v for v in self.variables}
        self.order = {n: i for i, n in enumerate(self.names)}
        self.xpt_ok = plan.compiled.xpt_ok(name, self.variables, self.keys)
        self.all_char = all(v.type == "Char" for v in self.variables)
        self.pairs = [(c, n) for c, n in plan.pairs if c in self.declared and n in self.declared]


# --- the fast path ---------------------------------------------------------------------------------------------

def _fast(rows: dict[str, list[dict[str, Cell]]], compiled: _Compiled, study_id: str, xpt: bool,
          max_per_check: int) -> list[Issue] | None:
    """The issues of a case whose cells show only common findings; None sends the case to the detailed path."""
    report = _Report(max_per_check)
    tables: dict[str, _Table] = {}
    unsorted: set[str] = set()  # datasets whose rows are not in the one-subject study's order
    for name in sorted(rows):
        plan = compiled.plan(name)
        data = rows[name]
        if plan is None or not plan.fast or not data:
            return None
        scanned = plan.scan(data)
        if scanned is None:
            return None
        findings, used, resorted = scanned
        if resorted or not plan.sorted_by_add:
            unsorted.add(name)
        shape = plan.shape(frozenset(used))
        if xpt:
            if not shape.xpt_ok:
                return None
            if shape.all_char and _has_blank_row(data, shape.names):
                return None  # a blank record: XPT warns about the last one
        table = _Table(name, plan.meta, shape.names, data, shape.declared, plan.label, shape.keys)
        if shape.pairs and not plan.pairs_ok(table, shape.pairs):
            return None
        tables[name] = table
        if findings:
            order = shape.order
            for index, var, finding in findings:
                if finding.schema:
                    report.add(finding.rule, finding.message, table.where(index, var), f"{name}.{var}")
            for index, var, finding in sorted((f for f in findings if not f[2].schema),
                                              key=lambda f: (order[f[1]], f[0])):
                report.add(finding.rule, finding.message, table.where(index, var), f"{name}.{var}")
        check_table(table, report, compiled.codelists, study_level=False, row_checks=False)
    check_subject(study_id, tables, report)
    check_rules(tables, report)
    issues = report.finish()
    if unsorted and any(dataset_of(i.location) in unsorted for i in issues):
        return None  # issue order and row numbers follow the study's sort: let the detailed path sort
    return issues


_TEXT = frozenset({str, type(None)})
_EMPTY = frozenset({None, ""})
_TYPED_EMPTY = frozenset({(type(None), None), (str, "")})
_GETS = repeat(dict.get)
_TYPES = repeat(type)
_not = operator.not_


def _has_blank_row(rows: list[dict[str, Cell]], names: list[str]) -> bool:
    """Some row has no value (None) in any of ``names``."""
    if names and None not in map(dict.get, rows, repeat(names[0])):
        return False  # the first variable has a value in every row
    return any(all(r.get(n) is None for n in names) for r in rows)


def _distinct(column: list[Any]) -> list[Any]:
    """The distinct cells of a column, ``1``, ``1.0`` and ``True`` kept apart; every cell when some is a list."""
    kinds = set(map(type, column))
    try:
        if len(kinds - _TEXT) <= 1:
            return list(set(column))
        return list({(cell.__class__, cell): cell for cell in column}.values())
    except TypeError:  # a list (not a cell yet): each judged on its own
        return column


def _same(cell: Any, value: Any) -> bool:
    """The same cell value (``1`` and ``1.0`` and ``True`` are different cells)."""
    return cell is value or (cell.__class__ is value.__class__ and cell == value)

