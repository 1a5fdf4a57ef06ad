"""SAS XPORT version 5 transport files (``OUT/sdtm/<dataset>.xpt``), written by a small own encoder.

The layout is SAS technical note TS-140: 80-byte header records, one 140-byte NAMESTR per variable, then the
observations back to back, each section padded with blanks to a multiple of 80 bytes. Char values are
ASCII, blank-padded to the variable width; Num values are 8-byte IBM System/360 floats (every IEEE double in
range converts exactly), missing numbers are ``.``. Header dates come from
:func:`~converter.write.atomic.reproducible_timestamp`, so identical input gives identical bytes.

:func:`check_xpt` refuses, before anything is written, what version 5 cannot hold: names over 8 characters,
labels over 40, character values over 200 bytes or outside ASCII. Nothing is ever truncated.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from datetime import datetime
from itertools import chain, repeat
from numbers import Real
from pathlib import Path

from converter.errors import CaseBridgeError
from converter.sdtm.model import Cell, Dataset
from converter.validate.issues import Issue, has_errors
from converter.write.atomic import reproducible_timestamp, write_bytes_atomic
from converter.write.define_xml import ColumnMeta, cell_location, describe_dataset

MAX_NAME = 8
MAX_LABEL = 40
MAX_CHAR = 200
MAX_VARIABLES = 9999
_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,7}")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_SAS_VERSION = b"9.4     "
_SAS_OS = b"CASEBRDG"
_NAMESTR = struct.Struct(">hhhh8s40s8shhh2s8shhl52s")
_MISSING = b"." + bytes(7)
_ZERO = bytes(8)
_IBM_MAX = 16.0 ** 63
_IBM_MIN = 16.0 ** -65
_MAX_CELL_ISSUES = 20
_TEXT_TYPES = {str, type(None)}


def _header(kind: bytes, numbers: bytes = b"0" * 30) -> bytes:
    return b"HEADER RECORD*******" + kind.ljust(8) + b"HEADER RECORD!!!!!!!" + numbers + b"  "


def sas_datetime(value: datetime) -> bytes:
    """``ddMMMyy:hh:mm:ss`` as XPORT headers write it (English month, whatever the locale)."""
    return (f"{value.day:02d}{_MONTHS[value.month - 1]}{value.year % 100:02d}:"
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}").encode("ascii")


def ibm_float(value: float) -> bytes:
    """One number as an 8-byte big-endian IBM hexadecimal float (exact for every double in range)."""
    if value == 0:
        return _ZERO
    sign = 0x80 if value < 0 else 0
    mantissa, exp2 = math.frexp(abs(value))       # |value| = mantissa * 2**exp2, 0.5 <= mantissa < 1
    exp16 = -(-exp2 // 4)                         # |value| = fraction * 16**exp16, 1/16 <= fraction < 1
    fraction = int(math.ldexp(mantissa, 56 - (4 * exp16 - exp2)))
    biased = exp16 + 64
    if not 0 <= biased <= 127:
        raise OverflowError(f"{value!r} is outside the IBM float range")
    return (((sign | biased) << 56) | fraction).to_bytes(8, "big")


def _ibm_column(values: list[Cell]) -> list[bytes]:
    """IBM encodings of a Num column (missing: ``.``), each distinct value converted once."""
    memo: dict[float, bytes] = {}
    out: list[bytes] = []
    for v in values:
        if v is None or v != v:
            out.append(_MISSING)
            continue
        encoded = memo.get(v)  # type: ignore[arg-type]
        if encoded is None:
            encoded = memo[v] = ibm_float(float(v))  # type: ignore[arg-type,index]
        out.append(encoded)
    return out


def _pad80(data: bytes) -> bytes:
    return data + b" " * (-len(data) % 80)


def check_xpt(dataset: Dataset, columns: Sequence[ColumnMeta]) -> list[Issue]:
    """What XPORT v5 cannot hold, as errors located at the dataset, variable or cell."""
    issues: list[Issue] = []
    ds = dataset.name

    def err(rule: str, message: str, location: str) -> None:
        issues.append(Issue("error", rule, message, location))

    if not _NAME.fullmatch(ds):
        err("xpt.name", f"dataset name {ds!r} must be 1-{MAX_NAME} upper-case letters, digits or _", ds)
    if not dataset.label.isascii() or len(dataset.label) > MAX_LABEL:
        err("xpt.label", f"dataset label {dataset.label!r} must be ASCII and at most {MAX_LABEL} characters", ds)
    if not columns:
        err("xpt.variables", "a transport file needs at least one variable", ds)
    if len(columns) > MAX_VARIABLES:
        err("xpt.variables", f"{len(columns)} variables; XPORT v5 holds at most {MAX_VARIABLES}", ds)
    if columns and columns[0].values and all(m.variable.type == "Char" and not m.values[-1] for m in columns):
        issues.append(Issue("warning", "xpt.blank_record",
                            "the last record is entirely blank: XPORT readers cannot tell it from the padding "
                            "of the file and may drop it", f"{ds}[row={len(columns[0].values)}]"))
    for meta in columns:
        var, where = meta.variable, f"{ds}.{meta.name}"
        if not _NAME.fullmatch(var.name):
            err("xpt.name", f"variable name {var.name!r} must be 1-{MAX_NAME} upper-case letters, digits or _", where)
        if not var.label.isascii() or len(var.label) > MAX_LABEL:
            err("xpt.label", f"label {var.label!r} of {var.name} must be ASCII and at most {MAX_LABEL} characters "
                             f"(it has {len(var.label)})", where)
        values = meta.values
        if var.type == "Char":
            if meta.length > MAX_CHAR:
                err("xpt.length", f"{var.name} is {meta.length} bytes wide; XPORT v5 allows {MAX_CHAR}", where)
            if not (meta.plain and meta.length <= MAX_CHAR):  # plain text that fits needs no look
                _check_text(dataset, var.name, values, issues)
        else:
            _check_numbers(dataset, var.name, values, issues)
    return issues


def _check_text(dataset: Dataset, name: str, values: list[Cell], issues: list[Issue]) -> None:
    text = list(filter(None, values)) if set(map(type, values)) <= _TEXT_TYPES else [
        v for v in values if isinstance(v, str) and v]
    joined = "".join(text)
    if joined.isascii() and max(map(len, text), default=0) <= MAX_CHAR:
        return
    found = 0
    for row, v in enumerate(values):
        if not isinstance(v, str):
            continue
        problems = []
        if not v.isascii():
            bad = sorted({c for c in v if not c.isascii()})
            problems.append(f"non-ASCII character(s) {' '.join(f'U+{ord(c):04X}' for c in bad)}")
        size = len(v.encode("utf-8"))
        if size > MAX_CHAR:
            problems.append(f"{size} bytes, more than the {MAX_CHAR} XPORT v5 allows (move the text to SUPPQUAL "
                            "or shorten it)")
        if problems:
            found += 1
            if found <= _MAX_CELL_ISSUES:
                issues.append(Issue("error", "xpt.value", f"{name} value has {'; '.join(problems)}",
                                    cell_location(dataset, row, name)))
    if found > _MAX_CELL_ISSUES:
        issues.append(Issue("error", "xpt.value", f"{found - _MAX_CELL_ISSUES} more {name} value(s) like the above",
                            f"{dataset.name}.{name}"))


def _check_numbers(dataset: Dataset, name: str, values: list[Cell], issues: list[Issue]) -> None:
    builtin = [v for v in values if type(v) is float or type(v) is int]
    sizes = [size for size in map(abs, builtin) if size > 0]  # zero and NaN need no check
    only_builtin = len(builtin) + values.count(None) == len(values)
    if only_builtin and (not sizes or (max(sizes) < _IBM_MAX and min(sizes) >= _IBM_MIN)):
        return
    for row, v in enumerate(values):
        if isinstance(v, Real) and not isinstance(v, bool) and v == v and not math.isinf(v):
            size = abs(float(v))
            if size >= _IBM_MAX or 0 < size < _IBM_MIN:
                issues.append(Issue("error", "xpt.value", f"{name} value {v!r} is outside the IBM float range "
                                    "(about 5.4e-79 to 7.2e75) of XPORT v5", cell_location(dataset, row, name)))


def xpt_bytes(dataset: Dataset, columns: Sequence[ColumnMeta], created: datetime | None = None) -> bytes:
    """The transport file of a dataset that passed :func:`describe_dataset` and :func:`check_xpt` without errors.

    Raises :class:`CaseBridgeError` if a value still does not fit as it is (it is never truncated).
    """
    header = xpt_header(dataset, columns, created)
    observations = xpt_observations(dataset, columns)
    return header + observations + xpt_padding(len(observations))


def xpt_header(dataset: Dataset, columns: Sequence[ColumnMeta], created: datetime | None = None) -> bytes:
    """Everything of the transport file before the observations (they follow: :func:`xpt_observations`)."""
    stamp = sas_datetime(reproducible_timestamp(created))
    name = dataset.name.encode("ascii")
    out = [
        _header(b"LIBRARY"),
        b"SAS     SAS     SASLIB  " + _SAS_VERSION + _SAS_OS + b" " * 24 + stamp,
        stamp + b" " * 64,
        _header(b"MEMBER", b"000000000000000001600000000140"),
        _header(b"DSCRPTR"),
        b"SAS     " + name.ljust(8) + b"SASDATA " + _SAS_VERSION + _SAS_OS + b" " * 24 + stamp,
        stamp + b" " * 16 + dataset.label.encode("ascii").ljust(40) + b" " * 8,
        _header(b"NAMESTR", f"000000{len(columns):04d}".encode("ascii") + b"0" * 20),
    ]
    namestrs, position = [], 0
    try:
        for number, meta in enumerate(columns, 1):
            is_char = meta.variable.type == "Char"
            namestrs.append(_NAMESTR.pack(
                2 if is_char else 1, 0, meta.length, number, meta.name.encode("ascii").ljust(8),
                meta.variable.label.encode("ascii").ljust(40), b" " * 8, 0, 0, 0, b"\0\0", b" " * 8, 0, 0,
                position, bytes(52)))
            position += meta.length
    except (UnicodeEncodeError, OverflowError, AttributeError, TypeError, ValueError) as exc:
        raise CaseBridgeError(f"{dataset.name} cannot be written as XPORT v5 as it is: {exc}",
                              location=dataset.name, rule="xpt.value") from None
    out.append(_pad80(b"".join(namestrs)))
    out.append(_header(b"OBS"))
    return b"".join(out)


def xpt_observations(dataset: Dataset, columns: Sequence[ColumnMeta]) -> bytes:
    """The observation records of ``columns``' values (all rows of a dataset, or a part of them, in order).

    Raises :class:`CaseBridgeError` if a value does not fit as it is (it is never truncated).
    """
    cells = []
    try:
        observations = _plain_observations(columns)
        if observations is None:  # something unusual: cell by cell, so that the error names it
            for meta in columns:
                values = meta.values
                if meta.variable.type == "Char":
                    width = meta.length
                    cells.append([(v.encode("ascii") if v else b"").ljust(width) for v in values])  # type: ignore[union-attr]
                else:
                    cells.append(_ibm_column(values))
            observations = b"".join(chain.from_iterable(zip(*cells)))
    except (UnicodeEncodeError, OverflowError, AttributeError, TypeError, ValueError) as exc:
        raise CaseBridgeError(f"{dataset.name} cannot be written as XPORT v5 as it is: {exc}",
                              location=dataset.name, rule="xpt.value") from None
    if len(observations) != sum(m.length for m in columns) * (len(columns[0].values) if columns else 0):
        raise CaseBridgeError(f"{dataset.name} holds a value longer than its variable's length; nothing was truncated",
                              location=dataset.name, rule="xpt.value")
    return observations


def xpt_padding(size: int) -> bytes:
    """The blanks that end a transport file whose observations take ``size`` bytes."""
    return b" " * (-size % 80)


def _plain_observations(columns: Sequence[ColumnMeta]) -> bytes | None:
    """The observation records when every Char cell is ASCII text (or missing) that fits its width, else None.

    The usual case, done a column at a time: each record is one %-format of its cells (Char padded with
    blanks, IBM floats carried as Latin-1 text, one byte per character) and the section is encoded once.
    """
    parts: list[list[str]] = []
    spec: list[str] = []
    for meta in columns:
        values = meta.values
        if meta.variable.type == "Char":
            text: list[str] = [v or "" for v in values] if None in values else values  # type: ignore[misc]
            try:
                if not "".join(text).isascii():  # join: TypeError unless every cell is text
                    return None
            except TypeError:
                return None
            parts.append(text)
            spec.append(f"%-{meta.length}s")
        else:
            parts.append(list(map(bytes.decode, _ibm_column(values), repeat("latin-1"))))
            spec.append("%s")
    record = "".join(spec)
    observations = "".join(map(record.__mod__, zip(*parts))).encode("latin-1")
    width = sum(m.length for m in columns)
    return observations if len(observations) == width * (len(columns[0].values) if columns else 0) else None


def write_xpt(dataset: Dataset, sdtm_dir: Path, created: datetime | None = None) -> tuple[Path | None, list[Issue]]:
    """Write ``<sdtm_dir>/<dataset>.xpt`` atomically, or refuse (path None) when the guards report errors."""
    columns, issues = describe_dataset(dataset)
    issues += check_xpt(dataset, columns)
    if has_errors(issues):
        return None, issues
    path = sdtm_dir / f"{dataset.name.lower()}.xpt"
    return write_bytes_atomic(path, xpt_bytes(dataset, columns, created)), issues
