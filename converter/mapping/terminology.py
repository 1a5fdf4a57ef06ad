"""Terminology tables (source text → code) and CDISC CT codelists, loaded from ``mappings/terminology``.

Two kinds of CSV file, both maintained by data managers:

* ``terminology/<table>.csv`` — columns ``text, synonyms, system, code, display, equivalence, status,
  verified_in, note``. One row per (source text, code system). Several rows with the same text give a
  concept several codings (e.g. SNOMED CT + ICD-O-3). Only ``status == approved`` rows emit codes; a row
  with an empty ``code`` records a known term that has no verified code (text kept, flagged).
* ``terminology/cdisc-ct/<CODELIST>.csv`` — one CDISC CT codelist (named by its submission value, e.g.
  ``NY``), columns ``codelist_code, codelist_name, extensible, submission_value, c_code, preferred_term,
  synonyms, source_texts, extension``; the CT version is in ``cdisc-ct/ct.yaml``.

Text matching is forgiving the way real reports need: case-insensitive, whitespace folded, Unicode
hyphens and dashes treated as ``-``.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

_DASHES = str.maketrans({c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2212\u00ad"})

TABLE_COLUMNS = ("text", "synonyms", "system", "code", "display", "equivalence", "status", "verified_in", "note")
CODELIST_COLUMNS = (
    "codelist_code", "codelist_name", "extensible", "submission_value", "c_code", "preferred_term",
    "synonyms", "source_texts", "extension",
)
STATUSES = ("approved", "unreviewed", "rejected")


def normalize(text: str) -> str:
    """Fold a term for matching: case, whitespace and dash variants.

    Every run of whitespace (``str.isspace``, what ``re``'s ``\\s`` matches) becomes one space, none at the
    ends; the dash variants are all outside ASCII, so ASCII text skips the (slow) translation."""
    text = str(text)
    if not text.isascii():
        text = text.translate(_DASHES)
    return " ".join(text.split()).casefold()


@dataclass(frozen=True, slots=True)
class Coding:
    """One verified code for a source term."""

    system: str
    code: str
    display: str
    equivalence: str = "equivalent"


@dataclass(slots=True)
class Entry:
    """All rows of one source text in a table."""

    text: str
    codings: list[Coding] = field(default_factory=list)   # approved rows with a code
    known_uncoded: bool = False                            # a row exists, but none approved with a code
    rows: list[dict[str, str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


@dataclass(slots=True)
class TerminologyTable:
    """A source-text → codings table."""

    name: str
    path: Path
    entries: dict[str, Entry] = field(default_factory=dict)  # by normalized text and synonyms
    codes: set[tuple[str, str]] = field(default_factory=set)  # (system, code) of approved rows

    def lookup(self, text: str) -> Entry | None:
        """The entry for a source text (or synonym), or None when the term is unknown."""
        return self.entries.get(normalize(text))


@dataclass(frozen=True, slots=True)
class Term:
    """One CDISC CT term."""

    submission_value: str
    c_code: str
    preferred_term: str
    extension: bool = False


@dataclass(slots=True)
class Codelist:
    """One CDISC CT codelist (subset used by the project, plus declared sponsor extensions)."""

    name: str          # codelist submission value, e.g. "NY"
    code: str          # NCI C-code of the codelist, e.g. "C66742"
    long_name: str
    extensible: bool
    path: Path
    terms: list[Term] = field(default_factory=list)
    by_text: dict[str, Term] = field(default_factory=dict)
    values: set[str] = field(default_factory=set)

    def lookup(self, text: str) -> Term | None:
        """Submission value for a source text, submission value, CDISC synonym or declared source text."""
        return self.by_text.get(normalize(text))


@dataclass(slots=True)
class Terminology:
    """Every terminology table and codelist of one mapping set."""

    tables: dict[str, TerminologyTable] = field(default_factory=dict)
    codelists: dict[str, Codelist] = field(default_factory=dict)
    ct_version: str = ""
    problems: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, message)

    def codelist_by_code(self, c_code: str) -> Codelist | None:
        """Find a codelist by its NCI C-code."""
        for cl in self.codelists.values():
            if cl.code == c_code:
                return cl
        return None

    def known_code(self, system: str, code: str) -> bool:
        """True when an approved row of any table carries this (system, code)."""
        return any((system, code) in t.codes for t in self.tables.values())


def _split(cell: str) -> list[str]:
    if not cell:  # most cells: nothing to split
        return []
    return [s.strip() for s in cell.split("|") if s.strip()]


def _read_csv(path: Path, columns: tuple[str, ...], problems: list[tuple[str, int, str]]) -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV file as ``csv.DictReader`` gives them (blank rows skipped), each with its line number;
    none, and a problem, when a column is missing."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = tuple(next(reader, None) or ())
        missing = [c for c in columns if c not in header]
        if missing:
            problems.append((str(path), 1, f"missing column(s) {', '.join(missing)}; expected {', '.join(columns)}"))
            return []
        width = len(header)
        rows: list[tuple[int, dict[str, str]]] = []
        for row in reader:
            if not row:
                continue
            values = dict(zip(header, row))
            if len(row) > width:
                values[None] = row[width:]  # type: ignore[index]  # DictReader's restkey
            elif len(row) < width:
                values.update(dict.fromkeys(header[len(row):]))  # DictReader's restval
            rows.append((reader.line_num, values))
        return rows


def load_table(path: Path, problems: list[tuple[str, int, str]]) -> TerminologyTable:
    """Load one ``<table>.csv``."""
    table = TerminologyTable(path.stem, path)
    for line, row in _read_csv(path, TABLE_COLUMNS, problems):
        text = (row.get("text") or "").strip()
        status = (row.get("status") or "").strip()
        if not text:
            problems.append((str(path), line, "empty 'text'"))
            continue
        if status not in STATUSES:
            problems.append((str(path), line, f"status {status!r} is not one of {', '.join(STATUSES)}"))
            continue
        if row.get("code") and not row.get("system"):
            problems.append((str(path), line, f"code {row['code']!r} has no system"))
            continue
        key = normalize(text)
        entry = table.entries.get(key)
        if entry is None or entry.text != text and normalize(entry.text) != key:
            entry = Entry(text)
        for alias in [text, *_split(row.get("synonyms", ""))]:
            table.entries.setdefault(normalize(alias), entry)
        entry.rows.append(row)
        entry.lines.append(line)
        if status == "approved" and row.get("code"):
            entry.codings.append(Coding(row["system"].strip(), row["code"].strip(), (row.get("display") or "").strip(),
                                        (row.get("equivalence") or "equivalent").strip()))
            table.codes.add((row["system"].strip(), row["code"].strip()))
    for entry in table.entries.values():
        entry.known_uncoded = not entry.codings
    return table


def load_codelist(path: Path, problems: list[tuple[str, int, str]]) -> Codelist | None:
    """Load one ``cdisc-ct/<CODELIST>.csv``."""
    rows = _read_csv(path, CODELIST_COLUMNS, problems)
    if not rows:
        return None
    first = rows[0][1]
    cl = Codelist(path.stem, first["codelist_code"], first["codelist_name"], first["extensible"] == "Yes", path)
    for line, row in rows:
        value = (row.get("submission_value") or "").strip()
        if not value:
            problems.append((str(path), line, "empty 'submission_value'"))
            continue
        term = Term(value, (row.get("c_code") or "").strip(), (row.get("preferred_term") or "").strip(),
                    (row.get("extension") or "").strip().upper() == "Y")
        if term.extension and not cl.extensible:
            problems.append((str(path), line, f"codelist {cl.name} is not extensible; {value!r} cannot be added"))
            continue
        cl.terms.append(term)
        cl.values.add(value)
        for alias in [value, term.preferred_term, *_split(row.get("synonyms", "")), *_split(row.get("source_texts", ""))]:
            if alias:
                cl.by_text.setdefault(normalize(alias), term)
    return cl


_LOADED: dict[tuple[str, str], Terminology] = {}  # the last folders loaded, by (folder, content digest)


def load_terminology(folder: Path) -> Terminology:
    """Load every table under ``folder`` (``mappings/terminology``) and its ``cdisc-ct/`` codelists.

    A folder whose files are byte for byte the ones of an earlier call in this process gives the same
    (read-only) object again: the mapping set and the FHIR validator both ask for the shipped tables.
    """
    tables = sorted(folder.glob("*.csv"))
    ct_dir = folder / "cdisc-ct"
    meta = ct_dir / "ct.yaml"
    codelists = sorted(ct_dir.glob("*.csv")) if ct_dir.is_dir() else []
    digest = hashlib.sha256()
    for path in [*tables, *([meta] if meta.is_file() else []), *codelists]:
        data = path.read_bytes()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    key = (str(folder), digest.hexdigest())
    term = _LOADED.get(key)
    if term is None:
        term = _load(folder, tables, codelists)
        while len(_LOADED) >= 4:
            del _LOADED[next(iter(_LOADED))]
        _LOADED[key] = term
    return term


def _load(folder: Path, tables: list[Path], codelists: list[Path]) -> Terminology:
    term = Terminology()
    for path in tables:
        term.tables[path.stem] = load_table(path, term.problems)
    ct_dir = folder / "cdisc-ct"
    if ct_dir.is_dir():
        meta = ct_dir / "ct.yaml"
        if meta.is_file():
            for line in meta.read_text(encoding="utf-8").splitlines():
                if line.startswith("version:"):
                    term.ct_version = line.split(":", 1)[1].strip().strip("\"'")
        for path in codelists:
            cl = load_codelist(path, term.problems)
            if cl is not None:
                term.codelists[cl.name] = cl
    return term
