"""Define-XML 2.1 for the written SDTM datasets, and the column metadata every writer shares.

:func:`describe_dataset` is the single place where a variable's storage length, Define-XML data type and
key sequence are decided, so ``ae.xpt``, ``json/ae.json``, ``csv/ae.csv`` and ``define.xml`` can never
disagree. :func:`define_xml_bytes` builds the document with lxml: ODM 1.3.2 root, ``def:Standards``
(SDTMIG + CDISC/NCI CT), one ItemGroupDef per dataset, ItemDefs, CodeLists restricted to the values used,
and value-level metadata (``--TESTCD`` → ``--ORRES``/``--STRESC``, ``TSPARMCD`` → ``TSVAL``,
``QNAM`` → ``QVAL``). Every element whose order the standard leaves free is sorted by OID.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from numbers import Real
from pathlib import Path

from lxml import etree

from converter import __version__
from converter.errors import CaseBridgeError
from converter.mapping.terminology import Codelist, Terminology
from converter.sdtm.model import Cell, Dataset, Study, Variable
from converter.validate.issues import Issue, Severity, has_errors
from converter.write.atomic import reproducible_timestamp, write_bytes_atomic

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
DEF_NS = "http://www.cdisc.org/ns/def/v2.1"
XLINK_NS = "http://www.w3.org/1999/xlink"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_NSMAP = {None: ODM_NS, "def": DEF_NS, "xlink": XLINK_NS}

DEFINE_VERSION = "2.1.0"
ORIGIN_TYPES = ("Assigned", "Collected", "Derived", "Not Available", "Other", "Predecessor", "Protocol")
_ORIGIN_BY_TEXT = {o.casefold(): o for o in ORIGIN_TYPES}
_ORIGIN_SOURCE = {"Collected": "Investigator", "Derived": "Sponsor", "Assigned": "Sponsor", "Protocol": "Sponsor"}
#: def:Class names (Define-XML CT C103329) in SDTMIG order, which is also the ItemGroupDef order.
CLASS_ORDER = ("TRIAL DESIGN", "SPECIAL PURPOSE", "INTERVENTIONS", "EVENTS", "FINDINGS", "FINDINGS ABOUT",
               "RELATIONSHIP", "STUDY REFERENCE")
_REFERENCE_CLASSES = {"TRIAL DESIGN", "STUDY REFERENCE"}
#: Where def:leaf points for each output format, relative to define.xml.
LEAF_HREF = {"xpt": "{name}.xpt", "json": "json/{name}.json", "csv": "csv/{name}.csv"}

_SAS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,7}")
# characters XML 1.0 cannot carry (and DEL), which would also garble XPT and CSV
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_INT_TEXT = re.compile(r"[+-]?\d+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)")

# ISO 8601 as SDTM uses it (SDTMIG 3.4 §4.4), one pattern per Define-XML (ODM 1.3.2) date/time data type.
_TZ = r"(?:Z|[+-]\d{2}(?::?\d{2})?)?"
_ISO_KINDS = (
    ("date", re.compile(r"\d{4}-\d{2}-\d{2}")),
    ("datetime", re.compile(rf"\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}:\d{{2}}:\d{{2}}(?:\.\d+)?{_TZ}")),
    ("partialDate", re.compile(r"\d{4}(?:-\d{2})?")),
    ("partialDatetime", re.compile(rf"\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}(?::\d{{2}})?{_TZ}")),
    ("incompleteDatetime", re.compile(
        r"(?:\d{4}|-)-(?:\d{2}|-)-(?:\d{2}|-)"
        rf"(?:T(?:\d{{2}}|-)(?::(?:\d{{2}}|-)(?::(?:\d{{2}}|-)(?:\.\d+)?)?)?)?{_TZ}")),
    ("durationDatetime", re.compile(
        r"-?P(?=\d|T\d)(?:\d+(?:[.,]\d+)?Y)?(?:\d+(?:[.,]\d+)?M)?(?:\d+(?:[.,]\d+)?W)?(?:\d+(?:[.,]\d+)?D)?"
        r"(?:T(?=\d)(?:\d+(?:[.,]\d+)?H)?(?:\d+(?:[.,]\d+)?M)?(?:\d+(?:[.,]\d+)?S)?)?")),
)
# The most specific data type whose value set contains every kind seen (ODM: date ⊂ partialDate ⊂ …).
_ISO_LATTICE = (
    ("date", {"date"}),
    ("datetime", {"datetime"}),
    ("partialDate", {"date", "partialDate"}),
    ("partialDatetime", {"date", "datetime", "partialDate", "partialDatetime"}),
    ("incompleteDatetime", {"date", "datetime", "partialDate", "partialDatetime", "incompleteDatetime"}),
    ("durationDatetime", {"durationDatetime"}),
    ("intervalDatetime", {"intervalDatetime"}),
)
_DURATION_SUFFIXES = ("DUR", "ELTM", "EVLINT", "STINT", "ENINT", "PAI", "STOFF")
_MAX_CELL_ISSUES = 20
_TEXT_TYPES = {str, type(None)}


@dataclass(frozen=True, slots=True)
class ColumnMeta:
    """What every writer needs to know about one variable of one dataset, and the values it checked."""

    variable: Variable
    data_type: str                   # Define-XML ItemDef DataType: text, integer, float, date, partialDate…
    length: int                      # storage bytes: the Char width (XPT, Dataset-JSON, CSV), 8 for Num
    define_length: int | None        # ItemDef Length (text/integer/float only)
    significant_digits: int | None   # ItemDef SignificantDigits (float only)
    key_sequence: int | None
    values: list[Cell]               # the column as checked: writers write exactly these values
    plain: bool = False              # Char only: every cell is missing or ASCII text of at most ``length`` bytes

    @property
    def name(self) -> str:
        """The variable name."""
        return self.variable.name


def study_oid(study: Study) -> str:
    """ODM Study/@OID (also Dataset-JSON studyOID)."""
    return f"STDY.{study.study_id}"


def metadata_version_oid(study: Study) -> str:
    """ODM MetaDataVersion/@OID (also Dataset-JSON metaDataVersionOID)."""
    return f"MDV.{study.study_id}.SDTMIG.{study.sdtmig_version}"


def item_oid(dataset: str, variable: str) -> str:
    """ItemDef/@OID of a dataset variable (also Dataset-JSON itemOID)."""
    return f"IT.{dataset}.{variable}"


def num_text(value: float | int) -> str:
    """A Num value as text: integral values without a decimal point, others in shortest round-trip form."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def cell_location(dataset: Dataset, row: int, variable: str) -> str:
    """``AE[USUBJID=X,AESEQ=1,row=3].AETERM`` (row 1-based) for an Issue about one cell."""
    record = dataset.rows[row]
    ids = []
    for key in ("USUBJID", f"{dataset.name[:2]}SEQ", "QNAM"):
        if record.get(key) not in (None, ""):
            ids.append(f"{key}={num_text(record[key]) if isinstance(record[key], Real) else record[key]}")
    ids.append(f"row={row + 1}")
    return f"{dataset.name}[{','.join(ids)}].{variable}"


def is_iso8601_variable(variable: Variable) -> bool:
    """True for Char variables whose value domain is ISO 8601 (``--DTC``, ``--DUR``, ``--ELTM``…)."""
    return variable.type == "Char" and variable.name.endswith(("DTC", *_DURATION_SUFFIXES))


def _iso_kind(value: str) -> str | None:
    if "/" in value:
        parts = value.split("/")
        return "intervalDatetime" if len(parts) == 2 and all(map(_iso_kind, parts)) else None
    for kind, pattern in _ISO_KINDS:
        if pattern.fullmatch(value):
            return kind
    return None


def iso8601_data_type(name: str, values: Sequence[str]) -> tuple[str, list[str]]:
    """The Define-XML data type of ISO 8601 values and the values that are not ISO 8601 at all.

    Mixed kinds or invalid values give ``text`` (the data then contradicts the standard; the caller reports).
    """
    distinct = set(values)
    invalid = sorted(v for v in distinct if _iso_kind(v) is None)
    if invalid:
        return "text", invalid
    return _iso_type(name, {_iso_kind(v) for v in distinct}), []


def _iso_type(name: str, kinds: set[str | None]) -> str:
    """The data type of ISO 8601 values of these kinds (None: a value that is not ISO 8601, so ``text``)."""
    if None in kinds:
        return "text"
    if not kinds:
        return "durationDatetime" if name.endswith(_DURATION_SUFFIXES) else "datetime"
    for data_type, allowed in _ISO_LATTICE:
        if kinds <= allowed:
            return data_type
    return "text"


@dataclass(slots=True)
class _Texts:
    """What the data type of value-level text depends on, collected a part of the values at a time."""

    kinds: set[str | None] | None  # ISO 8601 kinds of the values (None: not an ISO 8601 name, not collected)
    integers: bool = True  # every value an integer literal
    numbers: bool = True   # every value an integer or decimal literal
    digits: int = 0        # most decimals (while ``numbers``)
    longest: int = 0       # characters
    width: int = 0         # UTF-8 bytes

    @classmethod
    def of(cls, name: str, values: Sequence[str]) -> _Texts:
        """Empty statistics for values described as ``name`` (plus ``values``)."""
        texts = cls(set() if name.endswith(("DTC", *_DURATION_SUFFIXES)) else None)
        texts.add(values)
        return texts

    def add(self, values: Sequence[str]) -> None:
        """Add more values (non-empty text)."""
        if not values:
            return
        if self.kinds is not None:
            self.kinds.update(map(_iso_kind, set(values)))
        if self.integers and not all(_INT_TEXT.fullmatch(v) for v in values):
            self.integers = False
        if self.numbers:
            if self.integers or all(_INT_TEXT.fullmatch(v) or _FLOAT_TEXT.fullmatch(v) for v in values):
                self.digits = max(self.digits, max(len(v.partition(".")[2]) for v in values))
            else:
                self.numbers = False
        longest = max(map(len, values))
        self.longest = max(self.longest, longest)
        self.width = max(self.width, longest if "".join(values).isascii() else max(len(v.encode("utf-8")) for v in values))

    def item_type(self, name: str) -> tuple[str, int | None, int | None]:
        """Data type, Length and SignificantDigits of a value-level item with these values (see _text_item_type)."""
        if self.kinds is not None:
            data_type = _iso_type(name, self.kinds)
            if data_type != "text":
                return data_type, None, None
        if self.integers:
            return "integer", max(1, self.longest), None
        if self.numbers:
            return "float", max(1, self.longest), self.digits
        return "text", max(1, self.width), None


def _text_bytes(values: Sequence[str]) -> int:
    if not values:
        return 1
    if "".join(values).isascii():
        return max(1, max(map(len, values)))
    return max(1, max(len(v.encode("utf-8")) for v in values))


class _Cells:
    """Collects per-cell issues, at most ``_MAX_CELL_ISSUES`` per (rule, variable) plus a count of the rest."""

    def __init__(self, dataset: Dataset, issues: list[Issue]):
        self.dataset, self.issues = dataset, issues
        self.counts: dict[tuple[str, str], tuple[int, Severity]] = {}

    def add(self, severity: Severity, rule: str, variable: str, row: int, message: str) -> None:
        n = self.counts.get((rule, variable), (0, severity))[0] + 1
        self.counts[(rule, variable)] = (n, severity)
        if n <= _MAX_CELL_ISSUES:
            self.issues.append(Issue(severity, rule, message, cell_location(self.dataset, row, variable)))

    def close(self) -> None:
        for (rule, variable), (n, severity) in sorted(self.counts.items()):
            if n > _MAX_CELL_ISSUES:
                self.issues.append(Issue(severity, rule,
                                         f"{n - _MAX_CELL_ISSUES} more cell(s) of {variable} like the above",
                                         f"{self.dataset.name}.{variable}"))


@dataclass(slots=True)
class ColumnStats:
    """What a column's metadata is decided from (:func:`column_meta`), collected a part of the column at a time.

    Char: the ``longest`` value in bytes (at least 1), ``plain`` (every cell missing or ASCII text), the ISO 8601
    ``kinds`` of the values of an ISO 8601 variable (None: a value that is not ISO 8601). Num: whether there are
    ``numbers`` (NaN is missing), all ``integral``, the widest integer text, the widest decimal text and its
    most ``digits`` (the decimal ones only when ``widths`` was asked for or a number is not integral).
    """

    longest: int = 1
    plain: bool = True
    kinds: set[str | None] = field(default_factory=set)
    numbers: bool = False
    integral: bool = True
    int_width: int = 0
    float_width: int = 0
    digits: int = 0

    def merge(self, other: ColumnStats) -> None:
        """Add the statistics of another part of the same column."""
        self.longest = max(self.longest, other.longest)
        self.plain = self.plain and other.plain
        self.kinds |= other.kinds
        self.numbers = self.numbers or other.numbers
        self.integral = self.integral and other.integral
        self.int_width = max(self.int_width, other.int_width)
        self.float_width = max(self.float_width, other.float_width)
        self.digits = max(self.digits, other.digits)


def _char_meta(var: Variable, values: list[Cell], cells: _Cells) -> ColumnStats:
    """The statistics of a Char column; its problems go to ``cells``."""
    plain = set(map(type, values)) <= _TEXT_TYPES  # the usual case, checked at C speed
    if plain:
        present = list(filter(None, values))
    else:
        present = [v for v in values if v is not None and v != ""]
        if any(type(v) is not str for v in present):
            for row, v in enumerate(values):
                if v is not None and not isinstance(v, str):
                    cells.add("error", "sdtm.write.type", var.name, row,
                              f"Char variable {var.name} holds a {type(v).__name__} ({v!r}); builders must supply text")
            present = [v for v in present if isinstance(v, str)]
    text: list[str] = present  # type: ignore[assignment]
    joined = "".join(text)
    ascii_text = joined.isascii()
    if not (ascii_text and joined.isprintable()) and _CONTROL.search(joined):
        for row, v in enumerate(values):
            if isinstance(v, str) and _CONTROL.search(v):
                cells.add("error", "sdtm.write.control_char", var.name, row,
                          f"{var.name} contains a control character ({v!r}), which XML cannot carry")
    longest = max(1, max(map(len, text), default=0)) if ascii_text else _text_bytes(text)
    if var.length is not None:
        if var.length < 1:
            cells.issues.append(Issue("error", "sdtm.write.length", f"declared length {var.length} of {var.name} is "
                                      "not a positive number of bytes", f"{cells.dataset.name}.{var.name}"))
        elif longest > var.length:
            for row, v in enumerate(values):
                if isinstance(v, str) and len(v.encode("utf-8")) > var.length:
                    cells.add("error", "sdtm.write.length", var.name, row, f"{var.name} value of "
                              f"{len(v.encode('utf-8'))} bytes exceeds its declared length {var.length}")
    stats = ColumnStats(longest, plain and ascii_text)
    if is_iso8601_variable(var):
        distinct = set(text)
        stats.kinds = {_iso_kind(v) for v in distinct}
        if None in stats.kinds:
            bad = {v for v in distinct if _iso_kind(v) is None}
            for row, v in enumerate(values):
                if v in bad:
                    cells.add("warning", "sdtm.write.iso8601", var.name, row,
                              f"{var.name} value {v!r} is not ISO 8601; Define-XML declares the variable as text")
    return stats


def _num_meta(var: Variable, values: list[Cell], cells: _Cells, widths: bool = False) -> ColumnStats:
    """The statistics of a Num column (``widths``: the decimal widths even when every number is integral)."""
    # fast path: Python ints and floats only (the usual case); anything else is checked cell by cell
    numbers: list[float | int] = [v for v in values if type(v) is float or type(v) is int]
    if len(numbers) + values.count(None) != len(values) or math.inf in numbers or -math.inf in numbers:
        numbers = []
        for row, v in enumerate(values):
            if v is None:
                continue
            if isinstance(v, Real) and not isinstance(v, bool) and not math.isinf(v):
                numbers.append(v)  # type: ignore[arg-type]
            else:
                cells.add("error", "sdtm.write.type", var.name, row,
                          f"Num variable {var.name} holds {type(v).__name__} {v!r}; builders must supply finite numbers")
    numbers = [v for v in numbers if v == v]  # NaN is missing
    stats = ColumnStats(plain=False)
    if not numbers:
        return stats
    stats.numbers = True
    stats.integral = all(type(v) is int or float(v).is_integer() for v in numbers)
    if stats.integral:
        stats.int_width = max(len(str(int(v))) for v in set(numbers))
    if widths or not stats.integral:
        texts = [t if "e" not in t else format(Decimal(t), "f") for t in map(repr, map(float, set(numbers)))]
        stats.float_width = max(map(len, texts))
        stats.digits = max(len(t.partition(".")[2]) for t in texts)
    return stats


def column_meta(var: Variable, stats: ColumnStats, key_sequence: int | None, values: list[Cell]) -> ColumnMeta:
    """The metadata of a variable from its column's statistics (the one place lengths and data types are decided)."""
    if var.type != "Char":
        if not stats.numbers:
            return ColumnMeta(var, "float", 8, 8, None, key_sequence, values, False)
        if stats.integral:
            return ColumnMeta(var, "integer", 8, stats.int_width, None, key_sequence, values, False)
        return ColumnMeta(var, "float", 8, stats.float_width, stats.digits, key_sequence, values, False)
    length = var.length if var.length is not None and var.length >= 1 else stats.longest
    plain = stats.plain and stats.longest <= length
    if not is_iso8601_variable(var):
        return ColumnMeta(var, "text", length, length, None, key_sequence, values, plain)
    data_type = _iso_type(var.name, stats.kinds)
    return ColumnMeta(var, data_type, length, length if data_type == "text" else None, None, key_sequence, values,
                      plain)


def describe_part(dataset: Dataset) -> tuple[list[ColumnStats], list[Issue]]:
    """The column statistics of a part of a dataset's rows and the problems :func:`describe_dataset` would report.

    The statistics of the parts of a dataset, merged (:meth:`ColumnStats.merge`), give its metadata through
    :func:`column_meta`; a part's problems locate its cells by their row in the part. The part's rows hold
    its variables only (as :class:`converter.sdtm.build.DatasetParts` gives them): they are not read.
    """
    return _describe(dataset, widths=True, scan_rows=False)[1:]


def _describe(dataset: Dataset, widths: bool, scan_rows: bool = True) -> tuple[list[list[Cell]], list[ColumnStats],
                                                                                list[Issue]]:
    """The columns, their statistics and the problems of ``dataset`` (``scan_rows``: look for unknown variables)."""
    issues: list[Issue] = []
    names = [v.name for v in dataset.variables]
    for name in sorted({n for n in names if names.count(n) > 1}):
        issues.append(Issue("error", "sdtm.write.variables", f"variable {name} is defined more than once",
                            f"{dataset.name}.{name}"))
    for key in dataset.keys:
        if key not in names:
            issues.append(Issue("error", "sdtm.write.keys", f"key {key} is not a variable of {dataset.name}",
                                f"{dataset.name}.{key}"))
    labels = [(dataset.name, dataset.label), *((f"{dataset.name}.{v.name}", v.label) for v in dataset.variables)]
    for where, label in labels:
        if _CONTROL.search(label):
            issues.append(Issue("error", "sdtm.write.control_char",
                                f"label {label!r} contains a control character, which XML cannot carry", where))
    known = set(names)
    unknown: dict[str, int] = {}
    for row, record in enumerate(dataset.rows if scan_rows else ()):
        if not known.issuperset(record):
            for key in record:
                if key not in known:
                    unknown.setdefault(key, row)
    for key, row in sorted(unknown.items()):
        issues.append(Issue("error", "sdtm.write.variables",
                            f"rows hold values for {key}, which is not a variable of {dataset.name}: they would be lost",
                            cell_location(dataset, row, key)))
    cells = _Cells(dataset, issues)
    columns = [dataset.column(var.name) for var in dataset.variables]
    stats = [_char_meta(var, values, cells) if var.type == "Char" else _num_meta(var, values, cells, widths)
             for var, values in zip(dataset.variables, columns)]
    cells.close()
    return columns, stats, issues


def describe_dataset(dataset: Dataset) -> tuple[list[ColumnMeta], list[Issue]]:
    """Column metadata of a dataset plus the problems any output format would have with its content.

    Errors: duplicate variables, keys that are not variables, values of unknown variables, Char cells that are
    not text or hold control characters or exceed a declared length, Num cells that are not finite numbers.
    Warnings: ISO 8601 variables with non-ISO values.
    """
    columns, stats, issues = _describe(dataset, widths=False)
    keys = {k: i + 1 for i, k in enumerate(dataset.keys)}
    return [column_meta(var, st, keys.get(var.name), values)
            for var, st, values in zip(dataset.variables, stats, columns)], issues


# --------------------------------------------------------------------------------------------------------
# Define-XML document


def _odm(tag: str) -> str:
    return f"{{{ODM_NS}}}{tag}"


def _def(tag: str) -> str:
    return f"{{{DEF_NS}}}{tag}"


def _sub(parent: etree._Element, tag: str, attrs: Mapping[str, str | None] | None = None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    for key, value in (attrs or {}).items():
        if value is not None:
            el.set(key, value)
    return el


def _description(parent: etree._Element, text: str) -> None:
    desc = _sub(parent, _odm("Description"))
    tt = _sub(desc, _odm("TranslatedText"), {_XML_LANG: "en"})
    tt.text = text


def _class_name(dataset: Dataset) -> str | None:
    """The def:Class name for a dataset's ``domain_class`` ("Special-Purpose" → "SPECIAL PURPOSE")."""
    name = re.sub(r"[\s_-]+", " ", dataset.domain_class).strip().upper()
    if not name and (dataset.name.startswith("SUPP") or dataset.name == "RELREC"):
        name = "RELATIONSHIP"
    return name if name in CLASS_ORDER else None


def _dataset_order(dataset: Dataset) -> tuple[int, str]:
    cls = _class_name(dataset)
    return (CLASS_ORDER.index(cls) if cls else len(CLASS_ORDER), dataset.name)


def _domain(dataset: Dataset, first: str | None) -> str | None:
    """ItemGroupDef/@Domain; ``first``: the first DOMAIN value of the rows (None: there is none)."""
    if dataset.name.startswith("SUPP") and len(dataset.name) > 4:
        return dataset.name[4:]
    if any(v.name == "DOMAIN" for v in dataset.variables):
        return dataset.name[:2] if first is None else first
    return None


def _structure(dataset: Dataset) -> str:
    if dataset.structure:
        return dataset.structure
    keys = [k for k in dataset.keys if k != "STUDYID"]
    return f"One record per {', '.join(keys)}" if keys else "One record per row"


def _version_date(raw: str) -> str:
    """``2025-03-28`` from ``SDTM CT 2025-03-28`` (or the text itself when it holds no date)."""
    found = re.search(r"\d{4}-\d{2}-\d{2}", raw)
    return found.group(0) if found else raw.strip()


def _ct_version(study: Study, terminology: Terminology, issues: list[Issue]) -> str:
    """The CT version for def:Standards: the terminology's, else the study's; a disagreement is reported."""
    ours, theirs = _version_date(terminology.ct_version), _version_date(study.ct_version)
    if ours and theirs and ours != theirs:
        issues.append(Issue("warning", "define.standards",
                            f"terminology CT version {ours!r} differs from the study's {theirs!r}; "
                            "define.xml uses the terminology's"))
    if not (ours or theirs):
        issues.append(Issue("warning", "define.standards",
                            "no CDISC CT version known: define.xml declares no CT standard"))
    return ours or theirs


def _origin(parent: etree._Element, origin: str) -> None:
    _sub(parent, _def("Origin"), {"Type": origin, "Source": _ORIGIN_SOURCE.get(origin)})


@dataclass(slots=True)
class _ItemDef:
    oid: str
    name: str
    data_type: str
    length: int | None
    digits: int | None
    description: str
    origin: str | None
    codelist_oid: str | None = None
    value_list_oid: str | None = None


def _text_item_type(name: str, values: list[str]) -> tuple[str, int | None, int | None]:
    """Data type, Length and SignificantDigits of a value-level item whose values are text."""
    return _Texts.of(name, values).item_type(name)


def _value_level_drivers(dataset: Dataset) -> list[tuple[str, list[str], str]]:
    """(driver variable, described variables, variable holding the description) for value-level metadata."""
    names = [v.name for v in dataset.variables]
    present = set(names)
    if dataset.name.startswith("SUPP") and {"QNAM", "QVAL"} <= present:
        return [("QNAM", ["QVAL"], "QLABEL")]
    drivers = []
    for name in names:
        if name.endswith("TESTCD") and len(name) > 6:
            prefix = name[:-6]
            targets = [t for t in (f"{prefix}ORRES", f"{prefix}STRESC") if t in present]
            if targets:
                drivers.append((name, targets, f"{prefix}TEST"))
        elif name == "TSPARMCD" and "TSVAL" in present:
            drivers.append((name, ["TSVAL"], "TSPARM"))
    return drivers


@dataclass(slots=True)
class _Group:
    """The rows of one value of a value-level driver, for one described variable."""

    rows: int
    texts: _Texts
    count: int = 0  # rows where the variable holds text
    label: str | None = None
    origin: str | None = None


class _ValueLevel:
    """Value-level metadata of one dataset, collected over its rows a part at a time, in row order."""

    def __init__(self, dataset: Dataset):
        self.drivers = _value_level_drivers(dataset)
        self.groups: dict[tuple[str, str], dict[str, _Group]] = {}

    def add(self, column: Mapping[str, list[Cell]], count: int) -> None:
        """Add rows (``count`` of them, the columns of every variable)."""
        blank: list[Cell] = [None] * count
        for driver, targets, label_var in self.drivers:
            rows_of: dict[str, list[int]] = {}
            for row, key in enumerate(column[driver]):
                if isinstance(key, str) and key:
                    rows_of.setdefault(key, []).append(row)
            labels, origins = column.get(label_var, blank), column.get("QORIG", blank)
            for target in targets:
                values, groups = column[target], self.groups.setdefault((driver, target), {})
                for value, rows in rows_of.items():
                    texts = [v for v in (values[r] for r in rows) if isinstance(v, str) and v]
                    group = groups.get(value)
                    if group is None:
                        group = groups[value] = _Group(0, _Texts.of(value, []))
                    group.rows += len(rows)
                    group.count += len(texts)
                    group.texts.add(texts)
                    if group.label is None:
                        group.label = next((labels[r] for r in rows if isinstance(labels[r], str) and labels[r]), None)
                    if group.origin is None and driver == "QNAM":
                        group.origin = next((origins[r] for r in rows if isinstance(origins[r], str) and origins[r]),
                                            None)

    def finish(self, ds: str, items: dict[str, _ItemDef], value_lists: dict[str, list[tuple[str, str, str]]],
               where: dict[str, tuple[str, str]]) -> None:
        """Add the ItemDefs, ValueListDefs and WhereClauseDefs of the rows added."""
        for driver, targets, _ in self.drivers:
            for target in targets:
                parent, groups = items[item_oid(ds, target)], self.groups.get((driver, target), {})
                refs: list[tuple[str, str, str]] = []
                for value in sorted(groups):
                    group = groups[value]
                    if not group.count:
                        continue
                    origin = parent.origin
                    if driver == "QNAM":
                        origin = _ORIGIN_BY_TEXT.get(str(group.origin or "").strip().casefold(), origin)
                    data_type, length, digits = group.texts.item_type(value)
                    oid = f"{item_oid(ds, target)}.{value}"
                    items[oid] = _ItemDef(oid, value, data_type, length, digits, str(group.label or value), origin)
                    wc = f"WC.{ds}.{driver}.{value}"
                    where[wc] = (item_oid(ds, driver), value)
                    refs.append((oid, wc, "Yes" if group.count == group.rows else "No"))
                if refs:
                    parent.value_list_oid = f"VL.{ds}.{target}"
                    value_lists[parent.value_list_oid] = refs


def _codelists(summaries: Sequence[DatasetDefine], terminology: Terminology, items: dict[str, _ItemDef],
               issues: list[Issue]) -> list[tuple[Codelist, list[tuple[str, str, bool]]]]:
    """(codelist, [(coded value, C-code, extended)]) for every codelist with used values (CDISC CT: all text)."""
    used: dict[str, dict[str, None]] = {}
    users: dict[str, list[tuple[str, str]]] = {}
    for summary in summaries:
        ds = summary.dataset.name
        for code, name, values in summary.codes:
            if values is None:
                issues.append(Issue("warning", "define.codelist", f"codelist {code} on a Num variable is ignored: "
                                    "CDISC CT codelists hold text", f"{ds}.{name}"))
                continue
            used.setdefault(code, {}).update(values)
            users.setdefault(code, []).append((ds, name))
    result = []
    for code in sorted(used):
        if not used[code]:
            continue
        where = ", ".join(f"{ds}.{name}" for ds, name in users[code])
        cl = terminology.codelist_by_code(code)
        if cl is None:
            issues.append(Issue("warning", "define.codelist",
                                f"codelist {code} is not in the terminology: no CodeList for {where}", where))
            continue
        known = {t.submission_value for t in cl.terms}
        entries = [(t.submission_value, t.c_code, t.extension) for t in cl.terms if t.submission_value in used[code]]
        for value in sorted(v for v in used[code] if v not in known):
            if cl.extensible:
                issues.append(Issue("warning", "define.codelist",
                                    f"{value!r} is not in codelist {cl.name} ({code}); listed as a sponsor extension",
                                    where))
            else:
                issues.append(Issue("error", "define.codelist",
                                    f"{value!r} is not in non-extensible codelist {cl.name} ({code})", where))
            entries.append((value, "", cl.extensible))
        result.append((cl, entries))
        for ds, name in users[code]:
            items[item_oid(ds, name)].codelist_oid = f"CL.{cl.name}"
    return sorted(result, key=lambda entry: entry[0].name)


@dataclass(slots=True)
class DatasetDefine:
    """What define.xml needs of one dataset, without its rows: kept while a large study is written dataset by dataset.

    ``dataset`` has no rows; ``items`` are its ItemDefs (value-level ones included); ``codes`` lists, per
    variable with a codelist, the distinct values in order of first use (None for a Num variable).
    """

    dataset: Dataset
    domain: str | None
    columns: list[ColumnMeta]
    items: dict[str, _ItemDef]
    value_lists: dict[str, list[tuple[str, str, str]]]
    where: dict[str, tuple[str, str]]
    codes: list[tuple[str, str, dict[str, None] | None]]
    origin_issues: list[Issue]


def summarise_dataset(dataset: Dataset, columns: Sequence[ColumnMeta]) -> DatasetDefine:
    """The define.xml summary of a dataset described by :func:`describe_dataset` (its rows are not kept)."""
    summary = DefineParts(dataset, columns)
    summary.add(columns)
    return summary.finish()


class DefineParts:
    """:func:`summarise_dataset` of a dataset whose rows come a part at a time, in order.

    ``dataset`` gives the variables (its rows are not read), ``columns`` the metadata of the whole dataset;
    :meth:`add` each part's columns (:class:`ColumnMeta` whose ``values`` are the part's), then :meth:`finish`.
    """

    def __init__(self, dataset: Dataset, columns: Sequence[ColumnMeta]):
        self.dataset = dataset
        self.columns = list(columns)
        self.values: list[dict[str, None] | None] = [
            {} if m.variable.codelist and m.variable.type == "Char" else None for m in self.columns]
        self.domain: str | None = None  # the first DOMAIN value
        self.value_level = _ValueLevel(dataset)

    def add(self, columns: Sequence[ColumnMeta]) -> None:
        """Add the rows of one part (the columns of every variable, in the order of ``dataset``'s)."""
        for used, meta in zip(self.values, columns):
            if used is None:
                continue
            if meta.plain:  # text or missing only: the values in order of first use, at C speed
                used.update(dict.fromkeys(filter(None, meta.values)))
            else:
                used.update({v: None for v in meta.values if isinstance(v, str) and v})
        column = {m.name: m.values for m in columns}
        if self.domain is None and "DOMAIN" in column:
            self.domain = next((str(v) for v in column["DOMAIN"] if v), None)
        self.value_level.add(column, len(columns[0].values) if columns else 0)

    def finish(self) -> DatasetDefine:
        """The summary of every row added."""
        dataset = self.dataset
        items: dict[str, _ItemDef] = {}
        value_lists: dict[str, list[tuple[str, str, str]]] = {}
        where: dict[str, tuple[str, str]] = {}
        issues: list[Issue] = []
        codes: list[tuple[str, str, dict[str, None] | None]] = []
        for meta, used in zip(self.columns, self.values):
            var = meta.variable
            origin = var.origin if var.origin in ORIGIN_TYPES else None
            if origin is None and var.origin:
                issues.append(Issue("warning", "define.origin",
                                    f"origin {var.origin!r} is not a Define-XML origin type "
                                    f"({', '.join(ORIGIN_TYPES)}): def:Origin omitted", f"{dataset.name}.{var.name}"))
            oid = item_oid(dataset.name, var.name)
            items[oid] = _ItemDef(oid, var.name, meta.data_type, meta.define_length, meta.significant_digits,
                                  var.label, origin)
            if var.codelist:
                codes.append((var.codelist, var.name, used))
        self.value_level.finish(dataset.name, items, value_lists, where)
        shell = Dataset(dataset.name, dataset.label, dataset.variables, [], dataset.keys, dataset.domain_class,
                        dataset.structure)
        bare = [replace(meta, values=[]) for meta in self.columns]
        return DatasetDefine(shell, _domain(dataset, self.domain), bare, items, value_lists, where, codes, issues)


def define_xml_bytes(study: Study, terminology: Terminology, created: datetime | None = None,
                     columns: Mapping[str, list[ColumnMeta]] | None = None,
                     leaf_format: str = "xpt") -> tuple[bytes, list[Issue]]:
    """Define-XML 2.1 describing exactly ``study.datasets``, and the problems found while describing them.

    ``columns`` (from :func:`describe_dataset`) avoids describing a dataset twice; datasets missing from it are
    described here, their warnings returned, their errors raised as :class:`CaseBridgeError`. ``leaf_format``
    chooses what each def:leaf points to (``xpt``: ``ae.xpt``; ``json``: ``json/ae.json``; ``csv``: ``csv/ae.csv``).
    """
    issues: list[Issue] = []
    datasets = sorted(study.datasets.values(), key=_dataset_order)
    metas: dict[str, list[ColumnMeta]] = {}
    for ds in datasets:
        if columns is not None and ds.name in columns:
            metas[ds.name] = columns[ds.name]
        else:
            metas[ds.name], found = describe_dataset(ds)
            issues.extend(found)
    if has_errors(issues):
        raise CaseBridgeError([i for i in issues if i.severity == "error"])
    summaries = [summarise_dataset(ds, metas[ds.name]) for ds in datasets]
    data, found = define_xml_from_summaries(study, summaries, terminology, created, leaf_format)
    return data, issues + found


def define_xml_from_summaries(study: Study, summaries: Sequence[DatasetDefine], terminology: Terminology,
                              created: datetime | None = None, leaf_format: str = "xpt") -> tuple[bytes, list[Issue]]:
    """Define-XML 2.1 of the datasets ``summaries`` describe (:func:`summarise_dataset`); ``study`` gives the ids."""
    created = reproducible_timestamp(created)
    issues: list[Issue] = []
    summaries = sorted(summaries, key=lambda s: _dataset_order(s.dataset))
    ct_version = _ct_version(study, terminology, issues)
    ig_std, ct_std = f"STD.SDTMIG.{study.sdtmig_version}", (f"STD.CT.SDTM.{ct_version}" if ct_version else None)

    items: dict[str, _ItemDef] = {}
    value_lists: dict[str, list[tuple[str, str, str]]] = {}
    where: dict[str, tuple[str, str]] = {}
    for summary in summaries:
        issues.extend(summary.origin_issues)
        items.update(summary.items)
        value_lists.update(summary.value_lists)
        where.update(summary.where)
    codelists = _codelists(summaries, terminology, items, issues)

    root = etree.Element(_odm("ODM"), nsmap=_NSMAP)
    for key, value in (("ODMVersion", "1.3.2"), ("FileOID", f"{study_oid(study)}.Define-XML_{DEFINE_VERSION}"),
                       ("FileType", "Snapshot"), ("CreationDateTime", created.strftime("%Y-%m-%dT%H:%M:%S")),
                       ("Originator", "CaseBridge"), ("SourceSystem", "CaseBridge"),
                       ("SourceSystemVersion", __version__), (_def("Context"), "Submission")):
        root.set(key, value)
    study_el = _sub(root, _odm("Study"), {"OID": study_oid(study)})
    glob = _sub(study_el, _odm("GlobalVariables"))
    _sub(glob, _odm("StudyName")).text = study.study_id
    _sub(glob, _odm("StudyDescription")).text = f"SDTM tabulation datasets of study {study.study_id}"
    _sub(glob, _odm("ProtocolName")).text = study.study_id
    mdv = _sub(study_el, _odm("MetaDataVersion"), {
        "OID": metadata_version_oid(study), "Name": f"{study.study_id} SDTMIG {study.sdtmig_version} data definitions",
        _def("DefineVersion"): DEFINE_VERSION})

    standards = _sub(mdv, _def("Standards"))
    _sub(standards, _def("Standard"), {"OID": ig_std, "Name": "SDTMIG", "Type": "IG",
                                       "Version": study.sdtmig_version, "Status": "Final"})
    if ct_std:
        _sub(standards, _def("Standard"), {"OID": ct_std, "Name": "CDISC/NCI", "Type": "CT", "PublishingSet": "SDTM",
                                           "Version": ct_version, "Status": "Final"})

    for vl_oid in sorted(value_lists):
        vl = _sub(mdv, _def("ValueListDef"), {"OID": vl_oid})
        for order, (oid, wc, mandatory) in enumerate(value_lists[vl_oid], 1):
            ref = _sub(vl, _odm("ItemRef"), {"ItemOID": oid, "OrderNumber": str(order), "Mandatory": mandatory})
            _sub(ref, _def("WhereClauseRef"), {"WhereClauseOID": wc})
    for wc in sorted(where):
        driver, value = where[wc]
        clause = _sub(mdv, _def("WhereClauseDef"), {"OID": wc})
        check = _sub(clause, _odm("RangeCheck"), {"Comparator": "EQ", "SoftHard": "Soft", _def("ItemOID"): driver})
        _sub(check, _odm("CheckValue")).text = value

    for summary in summaries:
        ds = summary.dataset
        cls = _class_name(ds)
        if cls is None:
            issues.append(Issue("warning", "define.class",
                                f"domain_class {ds.domain_class!r} is not an SDTM class: def:Class omitted", ds.name))
        leaf_id = f"LF.{ds.name}"
        ig = _sub(mdv, _odm("ItemGroupDef"), {
            "OID": f"IG.{ds.name}", "Domain": summary.domain, "Name": ds.name,
            "Repeating": "No" if ds.name == "DM" or cls in _REFERENCE_CLASSES else "Yes",
            "IsReferenceData": "Yes" if cls in _REFERENCE_CLASSES else "No",
            "SASDatasetName": ds.name if _SAS_NAME.fullmatch(ds.name) else None, "Purpose": "Tabulation",
            _def("Structure"): _structure(ds), _def("StandardOID"): ig_std, _def("ArchiveLocationID"): leaf_id})
        _description(ig, ds.label)
        for order, meta in enumerate(summary.columns, 1):
            _sub(ig, _odm("ItemRef"), {
                "ItemOID": item_oid(ds.name, meta.name), "OrderNumber": str(order),
                "Mandatory": "Yes" if meta.variable.core == "Req" else "No",
                "KeySequence": str(meta.key_sequence) if meta.key_sequence else None})
        if cls:
            _sub(ig, _def("Class"), {"Name": cls})
        href = LEAF_HREF[leaf_format].format(name=ds.name.lower())
        leaf = _sub(ig, _def("leaf"), {"ID": leaf_id, f"{{{XLINK_NS}}}href": href})
        _sub(leaf, _def("title")).text = href

    for oid in sorted(items):
        item = items[oid]
        el = _sub(mdv, _odm("ItemDef"), {
            "OID": oid, "Name": item.name, "DataType": item.data_type,
            "Length": str(item.length) if item.length is not None else None,
            "SignificantDigits": str(item.digits) if item.digits is not None else None,
            "SASFieldName": item.name if _SAS_NAME.fullmatch(item.name) else None})
        _description(el, item.description)
        if item.codelist_oid:
            _sub(el, _odm("CodeListRef"), {"CodeListOID": item.codelist_oid})
        if item.origin:
            _origin(el, item.origin)
        if item.value_list_oid:
            _sub(el, _def("ValueListRef"), {"ValueListOID": item.value_list_oid})

    for cl, entries in codelists:
        el = _sub(mdv, _odm("CodeList"), {"OID": f"CL.{cl.name}", "Name": cl.long_name or cl.name,
                                          "DataType": "text", _def("StandardOID"): ct_std})
        for order, (value, c_code, extended) in enumerate(entries, 1):
            item = _sub(el, _odm("EnumeratedItem"), {"CodedValue": value, "OrderNumber": str(order),
                                                     _def("ExtendedValue"): "Yes" if extended else None})
            if c_code and not extended:
                _sub(item, _odm("Alias"), {"Context": "nci:ExtCodeID", "Name": c_code})
        if cl.code:
            _sub(el, _odm("Alias"), {"Context": "nci:ExtCodeID", "Name": cl.code})

    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True), issues


def write_define(study: Study, terminology: Terminology, sdtm_dir: Path, created: datetime | None = None,
                 leaf_format: str = "xpt") -> tuple[Path | None, list[Issue]]:
    """Write ``<sdtm_dir>/define.xml`` for every dataset of ``study`` atomically (None: refused, see issues)."""
    try:
        data, issues = define_xml_bytes(study, terminology, created, leaf_format=leaf_format)
    except CaseBridgeError as exc:
        return None, exc.issues
    return write_bytes_atomic(sdtm_dir / "define.xml", data), issues
