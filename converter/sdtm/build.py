"""Turn mapped rows of many cases into one SDTM study: keys, --SEQ, --DY, SUPP--, RELREC, variable order.

Only standard SDTM mechanics live here; what a value means comes from the mapping files.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any, Iterable

import re

import orjson

from converter.case.dates import study_day
from converter.mapping.engine import MappedCase, Row
from converter.resources import schema_path
from converter.sdtm import metadata
from converter.sdtm.ascii import to_ascii
from converter.sdtm.model import Cell, Dataset, Study, Variable
from converter.validate.issues import Issue

DATE_TO_DAY = {"DTC": "DY", "STDTC": "STDY", "ENDTC": "ENDY"}


@cache
def _keys() -> dict[str, Any]:
    return orjson.loads(schema_path("sdtm-keys.json").read_bytes())


def sort_keys(domain: str, present: Iterable[str]) -> list[str]:
    """The natural keys of a domain (SUPP-- use SUPPQUAL's)."""
    spec = _keys()
    keys = spec["keys"].get("SUPPQUAL" if domain.startswith("SUPP") else domain)
    if keys:
        return keys
    present = list(present)
    return ["STUDYID", "USUBJID", *[v for s in spec["fallback_suffixes"] for v in present if v == domain + s]]


def _sortable(value: Cell) -> tuple[int, Any]:
    if value.__class__ is str and value:
        return (2, value)
    if value is None or value == "":
        return (0, "")
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


class StudyBuilder:
    """Accumulates the SDTM rows of many cases and assembles the datasets."""

    def __init__(self, study_id: str, ct_version: str = "", ascii: dict[str, str] | None = None):
        self.study_id = study_id
        self.ascii = ascii  # character → ASCII spelling (mappings/sdtm/ascii.csv); None: the shipped table
        self.ct_version = ct_version
        self.rows: dict[str, list[dict[str, Cell]]] = {}
        self.notes: list[Issue] = []  # what the builder changed in a value (text written in ASCII)

    def usubjid(self, case_id: str) -> str:
        """The unique subject id of a case."""
        return f"{self.study_id}-{case_id}"

    def add(self, mapped: MappedCase) -> dict[str, list[dict[str, Cell]]]:
        """Add one case's rows; returns the rows per dataset this case contributed (for validation)."""
        usubjid = self.usubjid(mapped.case.case_id)
        by_domain: dict[str, list[Row]] = {}
        for row in mapped.rows:
            by_domain.setdefault(row.domain, []).append(row)
        rfstdtc = next((r.values.get("RFSTDTC") for r in by_domain.get("DM", [])), None)
        seq_of: dict[int, tuple[str, str, int]] = {}  # id(row) -> (domain, seqvar, seq)
        out: dict[str, list[dict[str, Cell]]] = {}
        for domain in sorted(by_domain):
            rows = by_domain[domain]
            days = _study_days(domain)
            for row in rows:
                values = row.values
                values["STUDYID"], values["DOMAIN"], values["USUBJID"] = self.study_id, domain, usubjid
                for dtc, day in days:
                    if dtc in values:
                        dy = study_day(values[dtc], rfstdtc)
                        if dy is not None:
                            values[day] = dy
            if domain == "CO":
                for row in rows:
                    _split_comment(row.values)
            if len(rows) > 1:
                keys = sort_keys(domain, rows[0].values)
                rows.sort(key=lambda r: tuple([_sortable(v) for v in map(r.values.get, keys)]))
            seqvar = f"{domain}SEQ"
            has_seq = metadata.is_variable(domain, seqvar)
            for n, row in enumerate(rows, 1):
                if has_seq:
                    row.values[seqvar] = n
                seq_of[id(row)] = (domain, seqvar if has_seq else "", n)
            out[domain] = [r.values for r in rows]
        self._supp(mapped.rows, seq_of, usubjid, out)
        self._relrec(mapped.rows, seq_of, usubjid, out)
        for name, rows in out.items():
            self._ascii(name, rows)
            self.rows.setdefault(name, []).extend(rows)
        return out

    def _ascii(self, name: str, rows: list[dict[str, Cell]]) -> None:
        """SDTM text is ASCII (XPT v5): write other characters as ``mappings/sdtm/ascii.csv`` says, and note it."""
        seqvar = f"{name}SEQ"
        for row in rows:
            for var, value in row.items():
                if isinstance(value, list):
                    value = _text(value)
                if not isinstance(value, str) or value.isascii():
                    continue
                plain = to_ascii(value, self.ascii)
                row[var] = plain.text
                key = ",".join(f"{k}={row[k]}" for k in ("USUBJID", seqvar, "IDVAR", "IDVARVAL", "QNAM") if row.get(k))
                self.notes.append(Issue(
                    "warning" if plain.lossy else "info", "sdtm.value.ascii.written",
                    f"{var} = {value!r} written as {plain.text!r}: SDTM text is ASCII (XPT v5)"
                    + ("; '?' stands for characters with no ASCII form" if plain.lossy else "")
                    + "; the FHIR output keeps the original", f"{name}[{key}].{var}"))

    def _supp(self, rows: list[Row], seq_of: dict[int, tuple[str, str, int]], usubjid: str,
              out: dict[str, list[dict[str, Cell]]]) -> None:
        for row in rows:
            if not row.supp:
                continue
            domain, seqvar, seq = seq_of[id(row)]
            for qnam, qlabel, qval, qorig in row.supp:
                values = qval if isinstance(qval, list) else [qval]
                for v in values:
                    out.setdefault(f"SUPP{domain}", []).append({
                        "STUDYID": self.study_id, "RDOMAIN": domain, "USUBJID": usubjid,
                        "IDVAR": seqvar or None, "IDVARVAL": str(seq) if seqvar else None,
                        "QNAM": qnam, "QLABEL": qlabel, "QVAL": _text(v), "QORIG": qorig, "QEVAL": None})

    def _relrec(self, rows: list[Row], seq_of: dict[int, tuple[str, str, int]], usubjid: str,
                out: dict[str, list[dict[str, Cell]]]) -> None:
        by_entity: dict[str, list[Row]] = {}
        for row in rows:
            by_entity.setdefault(row.entity, []).append(row)
        relid = 0
        for row in sorted((r for r in rows if r.related), key=lambda r: seq_of[id(r)]):
            for target_id in row.related:
                for target in by_entity.get(target_id, []):
                    relid += 1
                    for r in (row, target):
                        domain, seqvar, seq = seq_of[id(r)]
                        out.setdefault("RELREC", []).append({
                            "STUDYID": self.study_id, "RDOMAIN": domain, "USUBJID": usubjid,
                            "IDVAR": seqvar, "IDVARVAL": str(seq), "RELTYPE": None, "RELID": str(relid)})

    def study(self) -> Study:
        """Assemble the datasets: SDTMIG variable order and types, rows sorted by keys across subjects."""
        study = Study(self.study_id, ct_version=self.ct_version)
        for name in sorted(self.rows):
            rows = self.rows[name]
            variables = _dataset_variables(name, rows)
            names = [v.name for v in variables]
            nums = {v.name for v in variables if v.type == "Num"}
            keys = sort_keys(name, names)
            table = [{n: _cell(r.get(n), n in nums) for n in names} for r in rows]
            table.sort(key=lambda r: tuple(_sortable(r.get(k)) for k in keys if k in r))
            study.datasets[name] = Dataset(name, metadata.dataset_label(name), variables, table,
                                           [k for k in keys if k in names], metadata.dataset_class(name),
                                           metadata.domain_meta(name).structure)
        return study


@cache
def _study_days(domain: str) -> tuple[tuple[str, str], ...]:
    """(--DTC, --DY)-like pairs of a domain whose study-day variable SDTMIG defines (none for DM)."""
    if domain == "DM":
        return ()
    return tuple((domain + suffix, domain + day) for suffix, day in DATE_TO_DAY.items()
                 if metadata.is_variable(domain, domain + day))


def _dataset_variables(name: str, rows: list[dict[str, Cell]]) -> list[Variable]:
    """SDTMIG variables of the dataset: Req and Exp always, Perm when any row has a value."""
    return list(variables_used(name, frozenset(k for r in rows for k, v in r.items() if v not in (None, ""))))


@lru_cache(maxsize=4096)
def variables_used(name: str, used: frozenset[str]) -> tuple[Variable, ...]:
    """The variables of dataset ``name`` when ``used`` have a value in some row (see ``_dataset_variables``)."""
    listed = metadata.variables(name)
    out = [v for v in listed if v.core in ("Req", "Exp") or v.name in used]
    names = {v.name for v in listed}
    extra = [metadata.class_variable(name, n) for n in sorted(used - names, key=_natural)]
    return tuple(out + [v for v in extra if v is not None])  # SDTM-model class variables the domain table does not list


MAX_CHARS = 200


def _natural(name: str) -> tuple[str, int]:
    m = re.match(r"^(.*?)(\d*)$", name)
    return (m.group(1), int(m.group(2) or 0)) if m else (name, 0)


def _split_comment(values: dict[str, Cell]) -> None:
    """SDTMIG CO: a comment over 200 characters continues in COVAL1, COVAL2… (split at spaces)."""
    text = values.get("COVAL")
    if not isinstance(text, str) or len(text.encode()) <= MAX_CHARS:
        return
    parts: list[str] = []
    rest = text
    while len(rest.encode()) > MAX_CHARS:
        cut = rest.rfind(" ", 0, MAX_CHARS + 1)
        cut = cut if cut > 0 else MAX_CHARS
        parts.append(rest[:cut])
        rest = rest[cut:]
    parts.append(rest)
    values["COVAL"] = parts[0]
    for n, part in enumerate(parts[1:], 1):
        values[f"COVAL{n}"] = part


def _cell(value: Any, numeric: bool) -> Cell:
    if value is None or value == "":
        return None
    if numeric:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        try:
            return float(value)
        except (TypeError, ValueError):
            return _text(value)  # kept so the validator reports the type error: never dropped silently
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value)
    return str(value)
