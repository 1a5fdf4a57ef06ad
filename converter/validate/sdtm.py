"""SDTM conformance checks (SDTMIG 3.4, CDISC CT) for a :class:`~converter.sdtm.model.Study`.

Every rule is a row of ``schemas/sdtm/rules.json`` (id, severity, title, the CORE / SDTMIG / Pinnacle 21
rule ids it corresponds to, parameters). Row-level rules are keywords of the generated per-domain JSON
Schemas (``schemas/sdtm/domains/<DATASET>.schema.json``; their ``x-rule`` annotation names the rule each
keyword implements), evaluated with ``jsonschema_rs`` compiled once per schema. Cross-record rules of the
kinds ``record_implies``, ``subject_implies`` and ``record_matches_subject`` are interpreted from their
parameters; the rest (references, --SEQ, --DY, controlled terminology against the run's terminology) is
plain code below, keyed by rule id.

Locations: ``AE`` (dataset), ``AE.AETOXGR`` (variable), ``AE[USUBJID=X,AESEQ=1].AETOXGR`` (cell).
:func:`read_sdtm_folder` turns XPT / Dataset-JSON files made elsewhere into a Study; unreadable files
become issues.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, cast

import jsonschema_rs

from converter.mapping.terminology import Codelist, Terminology
from converter.resources import schema_path
from converter.sdtm import metadata
from converter.sdtm.model import Cell, Dataset, Study, Variable
from converter.validate.issues import Issue, Severity

RULES_FILE = "sdtm/rules.json"
MAX_PER_CHECK = 25
_DATASET_NAME = re.compile(r"^[A-Z][A-Z0-9]{1,7}$")
_VAR_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,7}$")
_FULL_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_SPONSOR_FILE = "mappings/terminology/cdisc-ct/sponsor/additions.csv"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of ``schemas/sdtm/rules.json``."""

    id: str
    severity: Severity
    title: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@cache
def rules() -> dict[str, Rule]:
    """The rule table by id."""
    doc = json.loads(schema_path(RULES_FILE).read_text(encoding="utf-8"))
    return {r["id"]: Rule(r["id"], cast(Severity, r["severity"]), r["title"], r["kind"], r.get("params", {}))
            for r in doc["rules"]}


@cache
def _row_schema(source: str) -> dict[str, Any]:
    return json.loads(schema_path(f"sdtm/domains/{source}.schema.json").read_text(encoding="utf-8"))


@cache
def _rows_validator(source: str) -> jsonschema_rs.Validator:
    """The row schema of an SDTMIG table wrapped as ``array of rows``, compiled once."""
    return jsonschema_rs.validator_for({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array",
                                        "items": _row_schema(source)})


# --- small helpers ---------------------------------------------------------------------------------------------

def _norm(value: Any) -> Cell:
    """SDTM null is JSON null: empty/blank strings and NaN become None."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _text(value: Cell) -> str:
    """A value as SDTM text (``1.0`` → ``1``), used for keys and IDVARVAL matching."""
    if value.__class__ is str:
        return value.strip()  # type: ignore[union-attr]
    if value.__class__ is int:
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value).strip()


def _texts(cells: Iterable[Cell]) -> Iterator[str]:
    """``_text`` of each cell (whole columns of integers or of text at C speed)."""
    column = list(cells)
    kinds = set(map(type, column))
    if kinds == {int}:
        return map(str, column)
    if kinds == {str}:
        return map(str.strip, column)
    return map(_text, column)


def _show(value: Cell) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else _text(value)


def _full_date(value: Cell) -> dt.date | None:
    """The calendar date of a complete ``YYYY-MM-DD``… value; None for anything else."""
    return _full_date_text(value) if isinstance(value, str) else None


@lru_cache(maxsize=8192)  # dates recur within a study and across cases
def _full_date_text(value: str) -> dt.date | None:
    m = _FULL_DATE.match(value)
    if not m:
        return None
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def _study_day(date: dt.date, reference: dt.date) -> int:
    delta = (date - reference).days
    return delta + 1 if delta >= 0 else delta


def _matches(row: dict[str, Cell], condition: dict[str, Any]) -> bool:
    for var, want in condition.items():
        value = row.get(var)
        if isinstance(want, dict):
            if (value is not None) != bool(want.get("present")):
                return False
        elif value != want:
            return False
    return True


def _describe(condition: dict[str, Any]) -> str:
    parts = [f"{v} {'present' if w.get('present') else 'null'}" if isinstance(w, dict) else f"{v} = {w!r}"
             for v, w in condition.items()]
    return " and ".join(parts) or "any record"


@dataclass
class _Table:
    """One dataset prepared for checking: normalized rows, columns, metadata."""

    name: str
    meta: metadata.DomainMeta | None
    columns: list[str]
    rows: list[dict[str, Cell]]  # a row may lack a column (null); per-case rows may hold variables not in columns
    declared: dict[str, Variable]
    label: str = ""
    keys: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.meta.prefix if self.meta else self.name[:2]

    @property
    def domain(self) -> str:
        return self.meta.domain if self.meta else self.name[:2]

    def key_vars(self) -> list[str]:
        """Variables that identify a row in locations."""
        cols = set(self.columns)
        if self.meta and self.meta.source == "SUPPQUAL":
            wanted = ["USUBJID", "IDVAR", "IDVARVAL", "QNAM"]
        elif self.name == "RELREC":
            wanted = ["RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "RELID"]
        elif f"{self.prefix}SEQ" in cols or self.name == "DM":
            wanted = ["USUBJID", "POOLID", "SPDEVID", f"{self.prefix}PARMCD", f"{self.prefix}SEQ"]
        else:
            wanted = list(self.keys)
        return [v for v in wanted if v in cols]

    def where(self, index: int, variable: str = "") -> str:
        """``AE[USUBJID=X,AESEQ=1].AETOXGR``; ``AE[row=3]`` when no key variable is populated."""
        row = self.rows[index]
        parts = [f"{k}={_text(row[k])}" for k in self.key_vars() if row.get(k) is not None]
        key = ",".join(parts) or f"row={index + 1}"
        return f"{self.name}[{key}]" + (f".{variable}" if variable else "")


class _Report:
    """Collects issues, at most ``cap`` cell-level issues per (rule, dataset, variable), then one summary."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.issues: list[Issue] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self.rules = rules()

    def add(self, rule_id: str, message: str, location: str, group: str | None = None) -> None:
        rule = self.rules[rule_id]
        if group is not None:
            self.counts[(rule_id, group)] += 1
            if self.counts[(rule_id, group)] > self.cap:
                return
        self.issues.append(Issue(rule.severity, rule_id, message, location))

    def finish(self) -> list[Issue]:
        for (rule_id, group), n in sorted(self.counts.items()):
            if n > self.cap:
                self.issues.append(Issue(self.rules[rule_id].severity, rule_id,
                                         f"{n - self.cap} more of this in {group} (first {self.cap} listed): "
                                         f"{self.rules[rule_id].title}", group))
        return self.issues


# --- the validator ---------------------------------------------------------------------------------------------

def validate_study(study: Study, terminology: Terminology, *, max_per_check: int = MAX_PER_CHECK,
                   rows_checked: bool = False) -> list[Issue]:
    """Check every dataset of ``study`` against SDTMIG 3.4, the CT in ``terminology`` and the cross-domain rules.

    ``max_per_check`` bounds the cell-level issues listed per rule and variable (a summary issue counts the
    rest), so large data sets give readable reports. ``rows_checked=True`` runs only the study-level checks
    (dataset and variable metadata, DM uniqueness across subjects, EX presence) for a study assembled from
    cases whose subjects were each validated already (:func:`converter.validate.sdtm_case.validate_case`).
    """
    if rows_checked:
        check = StudyCheck(terminology, max_per_check=max_per_check)
        for ds in study.datasets.values():
            check.add(ds)
        return check.finish()
    return check_study(study, terminology, max_per_check=max_per_check)


class CheckFound(NamedTuple):
    """What a :class:`StudyCheck` found (picklable): issues in order, cell-level counts, dataset names."""

    issues: list[Issue]
    counts: Counter[tuple[str, str]]
    names: set[str]


class StudyCheck:
    """``validate_study(rows_checked=True)`` a dataset at a time, so each can be let go once it is checked.

    :meth:`add` the datasets in the study's order, then :meth:`finish` for every issue in the same order.
    """

    def __init__(self, terminology: Terminology, *, max_per_check: int = MAX_PER_CHECK):
        self.report = _Report(max_per_check)
        self.codelists = codelist_index(terminology)
        self.names: set[str] = set()

    def found(self) -> CheckFound:
        """What the datasets added so far raised, for :meth:`merge` into another check of the same study."""
        return CheckFound(self.report.issues, self.report.counts, self.names)

    def merge(self, found: CheckFound) -> None:
        """Take what another check of the same study found; its datasets come next in the study's order.

        The cap of every cell-level check is per dataset and variable, so checking datasets apart (in other
        processes) and merging them in order gives the issues one check of them all gives.
        """
        self.report.issues += found.issues
        self.report.counts.update(found.counts)
        self.names |= found.names

    def add(self, ds: Dataset) -> list[Issue]:
        """Run the study-level checks of one dataset; returns the issues it raised (its summaries come at the end)."""
        before = len(self.report.issues)
        table = _prepare(ds, copy_rows=False)
        self.names.add(table.name)
        check_table(table, self.report, self.codelists, study_level=True, subject_level=False)
        return self.report.issues[before:]

    def add_parts(self, parts: Iterable[Dataset]) -> list[Issue] | None:
        """:meth:`add` of one dataset given a part of its rows at a time, in the dataset's order.

        Only DM's check reads every part (a USUBJID with two records); its rows must be sorted by STUDYID,
        USUBJID with one STUDYID, so that a repeated USUBJID follows its twin. Returns None, and keeps nothing,
        when that does not hold: the dataset must then be added whole.
        """
        mark = self.mark()
        previous: Cell = None  # the USUBJID of the row before
        study: Cell = None
        for number, part in enumerate(parts):
            if part.name.upper() != "DM":
                return self.add(part)  # nothing else depends on the rows
            if not number and part.keys[:2] != ["STUDYID", "USUBJID"]:
                self.rollback(mark)
                return None
            study = part.rows[0].get("STUDYID") if not number and part.rows else study
            if any(row.get("STUDYID") != study for row in part.rows):
                self.rollback(mark)
                return None
            if not number:
                self.add(part)  # the checks of the dataset, and a USUBJID twice in this part
            else:
                table = _prepare(part, copy_rows=False)
                for index, row in enumerate(table.rows):
                    usubjid = _norm(row.get("USUBJID"))
                    if usubjid is not None and usubjid == previous:
                        self.report.add("sdtm.dm.unique", f"USUBJID {usubjid!r} has more than one DM record",
                                        table.where(index, "USUBJID"), "DM.USUBJID")
                    previous = usubjid
            if part.rows:
                previous = _norm(part.rows[-1].get("USUBJID"))
        return self.report.issues[mark[0]:]

    def mark(self) -> tuple[int, Counter[tuple[str, str]], set[str]]:
        """Where the check is now, for :meth:`rollback`."""
        return len(self.report.issues), Counter(self.report.counts), set(self.names)

    def rollback(self, mark: tuple[int, Counter[tuple[str, str]], set[str]]) -> None:
        """Forget every dataset added since ``mark`` (:meth:`mark`), and its issues."""
        del self.report.issues[mark[0]:]
        self.report.counts, self.names = Counter(mark[1]), set(mark[2])

    def finish(self) -> list[Issue]:
        """Every issue of the datasets added, plus the study-wide ones (EX presence, per-check summaries)."""
        if "EX" not in self.names:
            self.report.add("sdtm.ex.absent", rules()["sdtm.ex.absent"].title, "EX")
        return self.report.finish()


def check_study(study: Study, terminology: Terminology, *, max_per_check: int = MAX_PER_CHECK,
                study_level: bool = True, subject_level: bool = True) -> list[Issue]:
    """:func:`validate_study` with the two groups of checks chosen separately.

    Subject-level checks are everything one subject's records can show (cell values, CT, --SEQ, SUPP--/RELREC
    references, --DY, record and subject implications); study-level checks are dataset and variable metadata,
    DM uniqueness and EX presence.
    """
    report = _Report(max_per_check)
    tables = {t.name: t for t in (_prepare(ds, copy_rows=subject_level) for ds in study.datasets.values())}
    codelists = codelist_index(terminology)
    for table in tables.values():
        check_table(table, report, codelists, study_level=study_level, subject_level=subject_level)
    if subject_level:
        check_subject(study.study_id, tables, report)
    if study_level and "EX" not in tables:
        report.add("sdtm.ex.absent", rules()["sdtm.ex.absent"].title, "EX")
    if subject_level:
        check_rules(tables, report)
    return report.finish()


def codelist_index(terminology: Terminology) -> dict[str, Codelist]:
    """The run's codelists by C-code."""
    return {cl.code: cl for cl in terminology.codelists.values()}


def _prepare(ds: Dataset, copy_rows: bool = True) -> _Table:
    name = ds.name.upper()
    meta = metadata.domain_meta(name) if metadata.is_domain(name) else None
    columns = [v.name for v in ds.variables]
    extra = set().union(*ds.rows).difference(columns)
    if extra:
        for row in ds.rows:
            columns.extend(k for k in row if k not in columns)
    rows = [{c: _norm(r.get(c)) for c in columns} for r in ds.rows] if copy_rows else ds.rows
    return _Table(name, meta, columns, rows, {v.name: v for v in ds.variables}, ds.label, list(ds.keys))


def check_table(t: _Table, report: _Report, codelists: dict[str, Codelist], *, study_level: bool = True,
                subject_level: bool = True, row_checks: bool = True) -> None:
    """The checks of one dataset; ``row_checks=False`` leaves out schema, CT and cell checks (done elsewhere)."""
    skip_type: set[str] = set()
    if study_level:
        if not _DATASET_NAME.match(t.name):
            report.add("sdtm.dataset.name", f"dataset name {t.name!r} is not 2-8 upper-case letters/digits", t.name)
        if not t.label or len(t.label) > 40:
            report.add("sdtm.dataset.label", f"dataset label {t.label!r} must have 1-40 characters", t.name)
        if t.meta is None:
            report.add("sdtm.dataset.unknown", f"{t.name} is not an SDTMIG 3.4 dataset: only generic checks apply",
                       t.name)
        if not t.rows:
            report.add("sdtm.dataset.empty", f"{t.name} has no records", t.name)
        skip_type = _check_variables(t, report)
    if subject_level and row_checks:
        if not study_level:  # types are otherwise checked (and reported) by _check_variables
            skip_type = _wrong_types(t)
        if t.meta is not None:
            _check_rows_schema(t, report, codelists, skip_type)
            _check_ct(t, report, codelists)
        _check_cells(t, report)
    _check_seq(t, report, subject_level)
    if subject_level and t.name == "RELREC":
        _check_relrec_local(t, report)
    if subject_level and t.meta is not None and t.meta.source == "SUPPQUAL":
        _check_supp_local(t, report)


def _wrong_types(t: _Table) -> set[str]:
    """Declared variables whose type differs from SDTMIG's (their type errors are reported once, per variable)."""
    if t.meta is None:
        return set()
    out = set()
    for name, declared in t.declared.items():
        expected = t.meta.variable(name) or metadata.class_variable(t.name, name)
        if expected is not None and declared.type != expected.type:
            out.add(name)
    return out


def _check_variables(t: _Table, report: _Report) -> set[str]:
    """Names, labels, membership, types, Req/Exp presence and order. Returns variables whose type is wrong."""
    skip_type: set[str] = set()
    for name in t.columns:
        where = f"{t.name}.{name}"
        declared = t.declared.get(name)
        if not _VAR_NAME.match(name):
            report.add("sdtm.variable.name", f"variable name {name!r} is not 1-8 upper-case letters/digits/_", where)
        if declared and len(declared.label) > 40:
            report.add("sdtm.variable.label.length", f"label of {name} has {len(declared.label)} characters", where)
        if t.meta is None:
            continue
        ig = t.meta.variable(name)
        model = None if ig else metadata.class_variable(t.name, name)
        if ig is None and model is None:
            report.add("sdtm.variable.unknown",
                       f"{name} is not a variable of {t.meta.source} in SDTMIG 3.4 (nor an allowed "
                       f"{t.meta.domain_class} class variable)", where)
            continue
        if model is not None:
            report.add("sdtm.variable.model", f"{name} is not listed for {t.meta.source} in SDTMIG 3.4; the SDTM "
                       f"model allows it in {t.meta.domain_class} class domains", where)
        expected = ig or model
        if declared and declared.type != expected.type:
            report.add("sdtm.variable.type", f"{name} is {declared.type}; SDTMIG 3.4 type is {expected.type}", where)
            skip_type.add(name)
        if ig and declared and declared.label and declared.label != ig.label:
            report.add("sdtm.variable.label.mismatch",
                       f"label of {name} is {declared.label!r}; SDTMIG 3.4 label is {ig.label!r}", where)
    if t.meta is None:
        return skip_type
    present = set(t.columns)
    for var in t.meta.variables:
        if var.name in present:
            continue
        if var.core == "Req":
            report.add("sdtm.variable.required.missing", f"Required variable {var.name} is not in {t.name}",
                       f"{t.name}.{var.name}")
        elif var.core == "Exp":
            report.add("sdtm.variable.expected.missing", f"Expected variable {var.name} is not in {t.name}",
                       f"{t.name}.{var.name}")
    order = {v.name: i for i, v in enumerate(t.meta.variables)}
    listed = [c for c in t.columns if c in order]
    for before, after in zip(listed, listed[1:]):
        if order[before] > order[after]:
            report.add("sdtm.variable.order", f"{after} should come before {before}; SDTMIG 3.4 order is "
                       f"{', '.join(sorted(listed, key=order.__getitem__))}", f"{t.name}.{after}")
            break
    return skip_type


def _codelist_names(codes: Iterable[str], codelists: dict[str, Codelist]) -> str:
    return ", ".join(f"{codelists[c].name} ({c})" if c in codelists else c for c in codes)


def _suggest(value: Cell, codes: Iterable[str], codelists: dict[str, Codelist]) -> str:
    for code in codes:
        cl = codelists.get(code)
        term = cl.lookup(str(value)) if cl else None
        if term is not None:
            return f"; did you mean {term.submission_value!r}?"
    return ""


def _check_rows_schema(t: _Table, report: _Report, codelists: dict[str, Codelist], skip_type: set[str]) -> None:
    """Row-level rules: the dataset's rows against its compiled row schema."""
    assert t.meta is not None
    schema = _row_schema(t.meta.source)
    props = schema["properties"]
    rows = [{k: v for k, v in r.items() if k in props} for r in t.rows]
    bad_dates: set[tuple[int, str]] = set()
    for error in _rows_validator(t.meta.source).iter_errors(rows):
        path = list(error.instance_path)
        if len(path) != 2:  # "required"/"propertyNames": reported once per dataset by _check_variables
            continue
        index, var = path
        keyword = error.schema_path[-1]
        value = t.rows[index].get(var)
        rule_id = props[var]["x-rule"].get(keyword, "sdtm.variable.type")
        if keyword == "type" and value is None:
            rule_id = "sdtm.variable.required.null"
            if var in rules()["sdtm.dictionary.uncoded"].params["variables"]:
                rule_id = "sdtm.dictionary.uncoded"
            elif var in rules()["sdtm.variable.required.unreported"].params["variables"]:
                rule_id = "sdtm.variable.required.unreported"
        if rule_id == "sdtm.variable.type" and var in skip_type:
            continue
        if rule_id == "sdtm.ct.nonextensible":
            codes = t.meta.codelists.get(var, ())
            if any(value in codelists[c].values for c in codes if c in codelists):
                continue  # the run's CT knows the value (a CT version newer than the schemas')
            if value in rules()[rule_id].params["sdtmig_values"].get(var, ()):
                continue
            message = (f"{var} = {_show(value)} is not in non-extensible codelist "
                       f"{_codelist_names(codes, codelists)}{_suggest(value, codes, codelists)}")
        else:
            message = _schema_message(rule_id, var, value, props[var], t.meta)
        if rule_id == "sdtm.iso8601":
            bad_dates.add((index, var))
        report.add(rule_id, message, t.where(index, var), f"{t.name}.{var}")
    for index, row in enumerate(t.rows):
        for var in t.columns:
            value = row.get(var)
            if (value is None or (index, var) in bad_dates
                    or props.get(var, {}).get("x-rule", {}).get("pattern") != "sdtm.iso8601"):
                continue
            for part in str(value).split("/"):
                if _FULL_DATE.match(part) and _full_date(part) is None:
                    report.add("sdtm.iso8601", f"{var} = {value!r} is not a real calendar date",
                               t.where(index, var), f"{t.name}.{var}")


def _schema_message(rule_id: str, var: str, value: Cell, prop: dict[str, Any], meta: metadata.DomainMeta) -> str:
    shown = _show(value)
    if rule_id == "sdtm.variable.required.null":
        return f"{var} is Required by SDTMIG 3.4 but null"
    if rule_id == "sdtm.variable.required.unreported":
        return f"{var} is Required by SDTMIG 3.4 but the source does not report it (left null, not invented)"
    if rule_id == "sdtm.dictionary.uncoded":
        return f"{var} is null: the verbatim term has no verified dictionary code (not invented; code it in terminology)"
    if rule_id == "sdtm.variable.type":
        return f"{var} = {shown} is not {metadata.variable_type(meta.name, var)} (SDTMIG 3.4 type)"
    if rule_id in ("sdtm.value.length", "sdtm.test.length", "sdtm.armcd.length"):
        return f"{var} has {len(str(value))} characters; at most {prop['maxLength']} allowed"
    if rule_id == "sdtm.iso8601":
        return f"{var} = {shown} is not {meta.value_domains.get(var, 'ISO 8601')}"
    if rule_id == "sdtm.domain.value":
        return f"DOMAIN = {shown}; expected {prop['const']!r}"
    if rule_id == "sdtm.dthfl.value":
        return f"DTHFL = {shown}; must be 'Y' or null"
    if rule_id == "sdtm.testcd.format":
        return f"{var} = {shown} must be at most 8 characters A-Z, 0-9, _ and not start with a digit"
    return f"{var} = {shown}: {rules()[rule_id].title}"


def _check_ct(t: _Table, report: _Report, codelists: dict[str, Codelist]) -> None:
    """Extensible codelists (against the run's CT and declared extensions) and --TESTCD/--TEST pairs."""
    assert t.meta is not None
    unavailable: list[str] = []
    for var in t.columns:
        codes = metadata.codelist_codes(t.name, var) if metadata.is_variable(t.name, var, include_class=True) else ()
        if not codes:
            continue
        missing = [c for c in codes if c not in codelists]
        if missing:
            unavailable.append(f"{var} ({', '.join(missing)})")
            continue
        lists = [codelists[c] for c in codes]
        if not any(cl.extensible for cl in lists):
            continue  # non-extensible only: the schema enum checked it
        allowed = set().union(*(cl.values for cl in lists))
        variable = t.meta.variable(var) or metadata.class_variable(t.name, var)
        numeric_ok = variable is not None and variable.role == "Result Qualifier"
        for index, row in enumerate(t.rows):
            value = row.get(var)
            if value is None or value in allowed or (numeric_ok and _NUMBER.match(str(value))):
                continue
            report.add("sdtm.ct.extensible",
                       f"{var} = {_show(value)} is not in extensible codelist {_codelist_names(codes, codelists)} and "
                       f"not declared as a sponsor extension ({_SPONSOR_FILE}){_suggest(value, codes, codelists)}",
                       t.where(index, var), f"{t.name}.{var}")
    if unavailable:
        report.add("sdtm.ct.unavailable", f"codelists not in the CT subset, values not checked: "
                   f"{', '.join(unavailable)}", t.name)
    for code_generic, name_generic in rules()["sdtm.ct.pair"].params["pairs"]:
        code_var, name_var = t.prefix + code_generic[2:], t.prefix + name_generic[2:]
        if code_var not in t.columns or name_var not in t.columns:
            continue
        code_terms = {tm.submission_value: tm for c in metadata.codelist_codes(t.name, code_var) if c in codelists
                      for tm in codelists[c].terms}
        name_terms = {tm.submission_value: tm for c in metadata.codelist_codes(t.name, name_var) if c in codelists
                      for tm in codelists[c].terms}
        for index, row in enumerate(t.rows):
            a, b = code_terms.get(_text(row.get(code_var))), name_terms.get(_text(row.get(name_var)))
            if a is None or b is None:
                continue
            same = a.c_code == b.c_code if a.c_code and b.c_code else (
                a.extension and b.extension and a.preferred_term == b.preferred_term)
            if not same:
                report.add("sdtm.ct.pair", f"{code_var} = {row.get(code_var)!r} ({a.c_code or 'sponsor'}) and "
                           f"{name_var} = {row.get(name_var)!r} ({b.c_code or 'sponsor'}) are different CT terms",
                           t.where(index, name_var), f"{t.name}.{name_var}")


def _check_cells(t: _Table, report: _Report) -> None:
    """Byte length (schemas count characters) and ASCII of character values."""
    for index, row in enumerate(t.rows):
        for var in t.columns:
            value = row.get(var)
            if not isinstance(value, str):
                continue
            if not value.isascii() or not value.isprintable():
                report.add("sdtm.value.ascii", f"{var} = {value!r} has non-ASCII or non-printable characters",
                           t.where(index, var), f"{t.name}.{var}")
            size = len(value.encode("utf-8"))
            if size > 200 and (t.meta is None or not value.isascii()):
                report.add("sdtm.value.length", f"{var} has {size} bytes; at most 200 allowed",
                           t.where(index, var), f"{t.name}.{var}")


def _check_seq(t: _Table, report: _Report, subject_level: bool = True) -> None:
    if t.name == "DM" and "USUBJID" in t.columns:
        seen_dm: set[Cell] = set()
        for index, row in enumerate(t.rows):
            usubjid = _norm(row.get("USUBJID"))
            if usubjid is not None and usubjid in seen_dm:
                report.add("sdtm.dm.unique", f"USUBJID {usubjid!r} has more than one DM record",
                           t.where(index, "USUBJID"), "DM.USUBJID")
            seen_dm.add(usubjid)
    seq = f"{t.prefix}SEQ"
    if not subject_level or seq not in t.columns or t.name == "TS":
        return
    # unique per USUBJID; datasets without subjects (DI, pooled data) number per POOLID or SPDEVID
    owner = next((v for v in ("USUBJID", "POOLID", "SPDEVID") if v in t.columns), None)
    numbers = list(map(dict.get, t.rows, repeat(seq)))
    try:
        if None not in numbers and len(set(zip(map(dict.get, t.rows, repeat(owner)) if owner else repeat(None),
                                               _texts(numbers)))) == len(numbers):
            return  # every record numbered, no number used twice
    except TypeError:  # an unhashable cell: the loop below reports (or raises) as it always has
        pass
    seen: set[tuple[Cell, str]] = set()
    for index, row in enumerate(t.rows):
        if row.get(seq) is None:
            continue
        key = (row.get(owner) if owner else None, _text(row[seq]))
        if key in seen:
            report.add("sdtm.seq.unique", f"{seq} = {key[1]} is used twice" + (f" for {owner} {key[0]!r}" if owner else ""),
                       t.where(index, seq), f"{t.name}.{seq}")
        seen.add(key)


def _check_relrec_local(t: _Table, report: _Report) -> None:
    counts: Counter[tuple[Cell, Cell]] = Counter((r.get("USUBJID"), r.get("RELID")) for r in t.rows)
    for index, row in enumerate(t.rows):
        idvar = row.get("IDVAR")
        if row.get("RELTYPE") is not None and isinstance(idvar, str) and idvar.endswith("SEQ"):
            report.add("sdtm.relrec.reltype", f"RELTYPE = {row['RELTYPE']!r} with IDVAR = {idvar!r}; RELTYPE must be "
                       "null for record-level relationships", t.where(index, "RELTYPE"), "RELREC.RELTYPE")
        if row.get("RELID") is not None and counts[(row.get("USUBJID"), row.get("RELID"))] < 2:
            report.add("sdtm.relrec.relid", f"RELID {row['RELID']!r} relates only this record",
                       t.where(index, "RELID"), "RELREC.RELID")


@lru_cache(maxsize=4096)
def _is_variable(domain: str, name: str) -> bool:
    return metadata.is_variable(domain, name, include_class=True)


def _check_supp_local(t: _Table, report: _Report) -> None:
    assert t.meta is not None
    parent = t.meta.domain
    rows = t.rows
    try:
        qnams = list(map(dict.get, rows, repeat("QNAM")))
        keys = set(zip(map(dict.get, rows, repeat("USUBJID")), map(dict.get, rows, repeat("IDVAR")),
                       _texts(map(dict.get, rows, repeat("IDVARVAL"))), qnams))
        standard = any(isinstance(qnam, str) and _is_variable(parent, qnam) for qnam in set(qnams))
    except TypeError:  # an unhashable cell: the loop below reports (or raises) as it always has
        keys, standard = set(), True
    if len(keys) == len(rows) and not standard:
        return  # no repeated key and no standard variable as QNAM
    seen: set[tuple[Cell, ...]] = set()
    for index, row in enumerate(t.rows):
        key = (row.get("USUBJID"), row.get("IDVAR"), _text(row.get("IDVARVAL")), row.get("QNAM"))
        if key in seen:
            report.add("sdtm.supp.unique", "USUBJID/IDVAR/IDVARVAL/QNAM repeats an earlier record",
                       t.where(index, "QNAM"), f"{t.name}.QNAM")
        seen.add(key)
        qnam = row.get("QNAM")
        if isinstance(qnam, str) and _is_variable(parent, qnam):
            report.add("sdtm.supp.qnam", f"QNAM {qnam!r} is a standard {parent} variable: put the value in {qnam}",
                       t.where(index, "QNAM"), f"{t.name}.QNAM")


# --- study-level and cross-domain ------------------------------------------------------------------------------

def _by_domain(tables: dict[str, _Table]) -> dict[str, list[_Table]]:
    out: dict[str, list[_Table]] = defaultdict(list)
    for t in tables.values():
        if t.meta is None or t.meta.source != "SUPPQUAL":
            out[t.domain].append(t)
    return out


def check_subject(study_id: str, tables: dict[str, _Table], report: _Report) -> None:
    """USUBJID in DM, one STUDYID, SUPP--/RELREC/CO references and --DY: checks across the datasets of subjects."""
    dm = tables.get("DM")
    subjects = {r.get("USUBJID") for r in dm.rows} if dm else set()
    study_ids = {r.get("STUDYID") for r in dm.rows if r.get("STUDYID") is not None} if dm else set()
    if not study_ids and study_id:
        study_ids = {study_id}
    for t in tables.values():
        if t.name != "DM" and "USUBJID" in t.columns:
            if dm is None:
                report.add("sdtm.usubjid.dm", f"DM is not in the study: USUBJIDs of {t.name} cannot be checked", t.name)
            elif not _all_in(t.rows, "USUBJID", subjects):
                for index, row in enumerate(t.rows):
                    if row.get("USUBJID") is not None and row["USUBJID"] not in subjects:
                        report.add("sdtm.usubjid.dm", f"USUBJID {row['USUBJID']!r} is not in DM",
                                   t.where(index, "USUBJID"), f"{t.name}.USUBJID")
        if study_ids and "STUDYID" in t.columns and not _all_in(t.rows, "STUDYID", study_ids):
            for index, row in enumerate(t.rows):
                if row.get("STUDYID") is not None and row["STUDYID"] not in study_ids:
                    report.add("sdtm.studyid.consistent", f"STUDYID {row['STUDYID']!r} differs from "
                               f"{', '.join(sorted(map(str, study_ids)))}", t.where(index, "STUDYID"),
                               f"{t.name}.STUDYID")
    _check_references(tables, report)
    _check_study_days(tables, report)


def _all_in(rows: list[dict[str, Cell]], var: str, allowed: set[Cell]) -> bool:
    """Every row's ``var`` is null or in ``allowed``; False also when some cell cannot be looked up (unhashable)."""
    try:
        values = set(map(dict.get, rows, repeat(var)))
    except TypeError:
        return False
    values.discard(None)
    return values <= allowed


def check_rules(tables: dict[str, _Table], report: _Report) -> None:
    """The ``record_implies``, ``subject_implies`` and ``record_matches_subject`` rules of the rule table."""
    for rule in rules().values():
        if rule.kind == "record_implies":
            _record_implies(rule, tables, report)
        elif rule.kind == "subject_implies":
            _subject_implies(rule, tables, report)
        elif rule.kind == "record_matches_subject":
            _record_matches_subject(rule, tables, report)


def _check_references(tables: dict[str, _Table], report: _Report) -> None:
    """RELREC, SUPP-- and CO point at datasets, variables and records that exist."""
    domains = _by_domain(tables)
    index: dict[tuple[str, str], set[tuple[Cell, str]]] = {}

    def keys(domain: str, idvar: str) -> set[tuple[Cell, str]]:
        """(USUBJID, value of ``idvar``) of every record of ``domain``; ``idvar`` "" gives (USUBJID, "")."""
        found = index.get((domain, idvar))
        if found is None:
            rows = [r for t in domains.get(domain, []) for r in t.rows]
            subjects = map(dict.get, rows, repeat("USUBJID"))
            found = index[(domain, idvar)] = set(zip(subjects, _texts(map(dict.get, rows, repeat(idvar)))
                                                     if idvar else repeat("")))
        return found

    for t in tables.values():
        is_supp = t.meta is not None and t.meta.source == "SUPPQUAL"
        if not (is_supp or t.name in ("RELREC", "CO")):
            continue
        if is_supp and t.domain not in domains:
            report.add("sdtm.ref.dataset", f"{t.name} qualifies {t.domain}, which is not in the study", t.name)
            continue
        if _references_resolve(t, is_supp, domains, keys):
            continue
        for i, row in enumerate(t.rows):
            rdomain, idvar, idvarval = row.get("RDOMAIN"), row.get("IDVAR"), row.get("IDVARVAL")
            if rdomain is None:
                continue  # Req null (SUPP/RELREC) is reported by the schema; CO without RDOMAIN is a subject comment
            if is_supp and rdomain != t.domain:
                report.add("sdtm.ref.dataset", f"RDOMAIN {rdomain!r} does not match dataset {t.name}",
                           t.where(i, "RDOMAIN"), f"{t.name}.RDOMAIN")
                continue
            if rdomain not in domains:
                report.add("sdtm.ref.dataset", f"RDOMAIN {rdomain!r} is not a dataset of the study",
                           t.where(i, "RDOMAIN"), f"{t.name}.RDOMAIN")
                continue
            if idvar is None:
                if idvarval is not None or (is_supp and rdomain != "DM"):
                    report.add("sdtm.ref.idvar", "IDVAR is null" + (" but IDVARVAL is populated" if idvarval else
                               f" for a {rdomain} qualifier"), t.where(i, "IDVAR"), f"{t.name}.IDVAR")
                elif row.get("USUBJID") is not None and (row["USUBJID"], "") not in keys(rdomain, ""):
                    report.add("sdtm.ref.record", f"no {rdomain} record for USUBJID {row['USUBJID']!r}",
                               t.where(i), f"{t.name}.USUBJID")
                continue
            if not any(idvar in p.columns for p in domains[rdomain]):
                report.add("sdtm.ref.idvar", f"IDVAR {idvar!r} is not a variable of {rdomain}",
                           t.where(i, "IDVAR"), f"{t.name}.IDVAR")
                continue
            if idvarval is None:
                if is_supp or t.name == "CO":
                    report.add("sdtm.ref.idvar", f"IDVAR {idvar!r} is populated but IDVARVAL is null",
                               t.where(i, "IDVARVAL"), f"{t.name}.IDVARVAL")
                continue  # RELREC dataset-level relationship
            if (row.get("USUBJID"), _text(idvarval)) not in keys(rdomain, idvar):
                report.add("sdtm.ref.record", f"no {rdomain} record with USUBJID {row.get('USUBJID')!r} and "
                           f"{idvar} = {_text(idvarval)!r}", t.where(i, "IDVARVAL"), f"{t.name}.IDVARVAL")


def _references_resolve(t: _Table, is_supp: bool, domains: dict[str, list[_Table]],
                        keys: Callable[[str, str], set[tuple[Cell, str]]]) -> bool:
    """True when every record of ``t`` (SUPP--, RELREC, CO) points at an existing variable and record of its
    RDOMAIN by IDVAR/IDVARVAL, so that ``_check_references`` has nothing to report for ``t``; False when it
    may have (a null IDVAR or IDVARVAL, an unknown dataset or variable, a missing record, ...)."""
    rows = t.rows
    rdomains = list(map(dict.get, rows, repeat("RDOMAIN")))
    if None in rdomains:  # a record without RDOMAIN refers to nothing (CO: a comment on the subject)
        rows = [row for row, rdomain in zip(rows, rdomains) if rdomain is not None]
        rdomains = list(map(dict.get, rows, repeat("RDOMAIN")))
    idvarvals = list(map(dict.get, rows, repeat("IDVARVAL")))
    if None in idvarvals:
        return False
    idvars = list(map(dict.get, rows, repeat("IDVAR")))
    try:
        pairs = set(zip(rdomains, idvars))
        for rdomain, idvar in pairs:
            if idvar is None or (is_supp and rdomain != t.domain) or rdomain not in domains \
                    or not any(idvar in p.columns for p in domains[rdomain]):
                return False
        records = zip(map(dict.get, rows, repeat("USUBJID")), _texts(idvarvals))
        if len(pairs) == 1:  # one (RDOMAIN, IDVAR), as in a SUPP-- of record qualifiers
            (rdomain, idvar), = pairs
            return set(records) <= keys(rdomain, idvar)
        wanted: dict[tuple[Cell, Cell], set[tuple[Cell, str]]] = {}
        for pair, record in zip(zip(rdomains, idvars), records):
            wanted.setdefault(pair, set()).add(record)
        return all(found <= keys(rdomain, idvar) for (rdomain, idvar), found in wanted.items())
    except TypeError:  # an unhashable cell
        return False


def _check_study_days(tables: dict[str, _Table], report: _Report) -> None:
    """--DY / --STDY / --ENDY against the dates and DM.RFSTDTC (SDTMIG study day, no day 0)."""
    rule = rules()["sdtm.dy.value"]
    ref_ds, ref_var = rule.params["reference"]
    dm = tables.get(ref_ds)
    if dm is None or ref_var not in dm.columns:
        return
    starts = {r.get("USUBJID"): r.get(ref_var) for r in dm.rows}
    for t in tables.values():
        for dy_generic, dtc_generic in rule.params["pairs"]:
            dy_var, dtc_var = t.prefix + dy_generic[2:], t.prefix + dtc_generic[2:]
            if dy_var not in t.columns or dtc_var not in t.columns:
                continue
            for i, row in enumerate(t.rows):
                rf = starts.get(row.get("USUBJID"))
                dtc = row.get(dtc_var)
                date, start, dy = _full_date(dtc), _full_date(rf), row.get(dy_var)
                group = f"{t.name}.{dy_var}"
                if date is None or start is None:
                    if dy is not None:
                        report.add("sdtm.dy.incomplete", f"{dy_var} = {_text(dy)} but {dtc_var} = {_show(dtc)} "
                                   f"/ RFSTDTC = {_show(rf)} is not a complete date", t.where(i, dy_var), group)
                    continue
                expected = _study_day(date, start)
                if dy is None:
                    report.add("sdtm.dy.missing", f"{dy_var} is null; {dtc_var} {dtc} with RFSTDTC {rf} "
                               f"gives {expected}", t.where(i, dy_var), group)
                elif not isinstance(dy, (int, float)) or dy != expected:
                    report.add("sdtm.dy.value", f"{dy_var} = {_text(dy)}; {dtc_var} {dtc} with RFSTDTC {rf} "
                               f"gives {expected}", t.where(i, dy_var), group)


def _record_implies(rule: Rule, tables: dict[str, _Table], report: _Report) -> None:
    p = rule.params
    t = tables.get(p["dataset"])
    if t is None or any(v not in t.columns for v in p["when"]):
        return
    for i, row in enumerate(t.rows):
        if _matches(row, p["when"]) and not _matches(row, p["then"]):
            var = next(iter(p["then"]))
            report.add(rule.id, f"{_describe(p['when'])} requires {_describe(p['then'])}; {var} = {_show(row.get(var))}",
                       t.where(i, var), f"{t.name}.{var}")


def _subject_implies(rule: Rule, tables: dict[str, _Table], report: _Report) -> None:
    p = rule.params
    t = tables.get(p["dataset"])
    if t is None or any(v not in t.columns for v in p["when"]):
        return
    target = tables.get(p["target"])
    ok = {r.get("USUBJID") for r in target.rows if _matches(r, p["then"])} if target else set()
    reported: set[Cell] = set()
    for i, row in enumerate(t.rows):
        subject = row.get("USUBJID")
        if subject in reported or not _matches(row, p["when"]) or subject in ok:
            continue
        reported.add(subject)
        var = next(iter(p["when"]), "USUBJID")
        report.add(rule.id, f"{p['dataset']} {_describe(p['when'])} for USUBJID {subject!r} requires a {p['target']} "
                   f"record with {_describe(p['then'])}", t.where(i, var), f"{t.name}.{var}")


def _record_matches_subject(rule: Rule, tables: dict[str, _Table], report: _Report) -> None:
    p = rule.params
    t, target = tables.get(p["dataset"]), tables.get(p["target"])
    if t is None or target is None or p["variable"] not in t.columns or any(v not in t.columns for v in p["when"]):
        return
    values = {r.get("USUBJID"): r.get(p["target_variable"]) for r in target.rows}
    for i, row in enumerate(t.rows):
        mine, theirs = row.get(p["variable"]), values.get(row.get("USUBJID"))
        if not _matches(row, p["when"]) or mine is None or theirs is None or mine == theirs:
            continue
        n = min(len(str(mine)), len(str(theirs)))
        hint = " (they agree at the precision both have)" if str(mine)[:n] == str(theirs)[:n] else ""
        report.add(rule.id, f"{p['variable']} = {mine!r} but {p['target']}.{p['target_variable']} = {theirs!r}{hint}",
                   t.where(i, p["variable"]), f"{t.name}.{p['variable']}")


# --- reading SDTM made elsewhere -------------------------------------------------------------------------------

def read_sdtm_folder(path: Path) -> tuple[Study, list[Issue]]:
    """Read ``*.xpt`` and Dataset-JSON (``json/*.json`` or ``*.json``) of a folder into a Study.

    When a dataset is present in both formats the XPT file is used. Unreadable files become issues (the
    rest is still read). A ``define.xml`` in the folder is validated with
    ``converter.validate.define_xsd.validate_define`` when that module is available.
    """
    issues: list[Issue] = []
    if not path.is_dir():
        return Study(""), [_issue("sdtm.read.error", f"{path} is not a folder", str(path))]
    datasets: dict[str, Dataset] = {}
    for file in sorted(p for p in path.iterdir() if p.suffix.lower() == ".xpt"):
        ds = _read_xpt(file, issues)
        if ds is not None:
            datasets[ds.name] = ds
    json_files = sorted((path / "json").glob("*.json")) + sorted(path.glob("*.json"))
    for file in json_files:
        ds = _read_dataset_json(file, issues)
        if ds is None:
            continue
        if ds.name in datasets:
            issues.append(_issue("sdtm.read.duplicate", f"{ds.name} is also in XPT; {file.name} was not validated",
                                 str(file)))
            continue
        datasets[ds.name] = ds
    define = path / "define.xml"
    if define.is_file():
        try:
            from converter.validate.define_xsd import validate_define
        except ImportError:
            issues.append(_issue("sdtm.define.unchecked", rules()["sdtm.define.unchecked"].title, str(define)))
        else:
            issues.extend(validate_define(define))
    study_id = ""
    for ds in ([datasets["DM"]] if "DM" in datasets else []) + list(datasets.values()):
        study_id = next((str(r["STUDYID"]) for r in ds.rows if r.get("STUDYID")), "")
        if study_id:
            break
    return Study(study_id, datasets), issues


def _issue(rule_id: str, message: str, location: str) -> Issue:
    return Issue(rules()[rule_id].severity, rule_id, message, location)


def _dataset(name: str, label: str, columns: list[tuple[str, str, str, int | None]],
             rows: list[dict[str, Cell]], keys: list[str]) -> Dataset:
    """A Dataset from file metadata; role/core/codelist come from SDTMIG where the variable is known."""
    variables = []
    for col, col_label, col_type, length in columns:
        ig = metadata.variable(name, col, include_class=True) if metadata.is_domain(name) else None
        variables.append(Variable(col, col_label, col_type, role=ig.role if ig else "", core=ig.core if ig else "",
                                  codelist=ig.codelist if ig else "", origin="Collected", length=length))
    domain_class = metadata.domain_meta(name).domain_class if metadata.is_domain(name) else ""
    return Dataset(name, label, variables, rows, keys, domain_class)


def _read_xpt(file: Path, issues: list[Issue]) -> Dataset | None:
    import pyreadstat

    try:
        try:
            data, meta = pyreadstat.read_xport(str(file), disable_datetime_conversion=True, output_format="dict")
        except UnicodeDecodeError:
            data, meta = pyreadstat.read_xport(str(file), disable_datetime_conversion=True, output_format="dict",
                                               encoding="cp1252")
            issues.append(_issue("sdtm.read.encoding", rules()["sdtm.read.encoding"].title, str(file)))
    except Exception as exc:  # noqa: BLE001 - any parser failure on a foreign file is reported, never raised
        issues.append(_issue("sdtm.read.error", f"cannot read XPT: {type(exc).__name__}: {exc}", str(file)))
        return None
    name = (meta.table_name or file.stem).upper()
    columns = [(c, meta.column_names_to_labels.get(c) or "",
                "Num" if meta.readstat_variable_types.get(c) == "double" else "Char",
                meta.variable_storage_width.get(c)) for c in meta.column_names]
    count = len(data[meta.column_names[0]]) if meta.column_names else 0
    rows = [{c: _norm(data[c][i]) for c in meta.column_names} for i in range(count)]
    return _dataset(name, meta.file_label or "", columns, rows, [])


_NUM_TYPES = {"integer", "float", "double", "decimal"}


def _read_dataset_json(file: Path, issues: list[Issue]) -> Dataset | None:
    def fail(message: str) -> None:
        issues.append(_issue("sdtm.read.error", f"not a readable Dataset-JSON 1.1 file: {message}", str(file)))

    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        fail(str(exc))
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("columns"), list) or not isinstance(doc.get("name"), str):
        fail("expected an object with 'name' and 'columns' (Dataset-JSON 1.0 'clinicalData' is not supported)")
        return None
    cols = doc["columns"]
    if not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in cols):
        fail("every column needs a 'name'")
        return None
    names = [c["name"] for c in cols]
    raw_rows = doc.get("rows", [])
    if not isinstance(raw_rows, list) or any(not isinstance(r, list) or len(r) != len(names) for r in raw_rows):
        fail(f"'rows' must be arrays of {len(names)} values")
        return None
    numeric = {c["name"] for c in cols if c.get("dataType") in _NUM_TYPES}
    decimal = {c["name"] for c in cols if c.get("dataType") == "decimal"}
    rows = []
    for raw in raw_rows:
        row = {n: _norm(v) for n, v in zip(names, raw)}
        for n in decimal:
            if isinstance(row[n], str) and _NUMBER.match(row[n]):
                row[n] = float(row[n])
        rows.append(row)
    columns = [(c["name"], c.get("label") or "", "Num" if c["name"] in numeric else "Char", c.get("length"))
               for c in cols]
    keys = [c["name"] for c in sorted((c for c in cols if c.get("keySequence")), key=lambda c: c["keySequence"])]
    return _dataset(doc["name"].upper(), doc.get("label") or "", columns, rows, keys)
