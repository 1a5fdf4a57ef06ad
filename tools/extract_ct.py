"""Derive the project's CDISC CT subset (``mappings/terminology/cdisc-ct/``) from the NCI EVS SDTM CT file.

Writes one CSV per codelist referenced by the SDTMIG 3.4 variables of the domains CaseBridge emits (plus
NY), named by the codelist submission value (``NY.csv``, ``MITSCD.csv``…), in the column layout of
``converter.mapping.terminology.CODELIST_COLUMNS``, and ``ct.yaml`` (CT version, package, codelists).

Hand-maintained rows live in ``cdisc-ct/sponsor/additions.csv`` (columns ``codelist, submission_value,
preferred_term, synonyms, source_texts, extension, note``) and are merged on every run, so regenerating
never loses them:

* ``extension = Y`` adds a sponsor term to an *extensible* codelist. The run fails when the codelist is
  not extensible or when CT already has the value, or has it as a synonym (use the CT term instead).
  Where the same wording is a CT term of another codelist (e.g. chromogranin A in LBTESTCD), the run
  prints it and records it in ``ct.yaml``.
* ``extension = N`` adds report wordings (``source_texts``) to an existing CT term; the run fails when
  the term does not exist.

A source text that already names a *different* term of the same codelist is an error (it would make
lookups ambiguous). Output is deterministic; the run ends by loading the folder with
``load_terminology`` and fails on any problem.

Usage::

    python tools/extract_ct.py [--reference DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converter.mapping.terminology import CODELIST_COLUMNS, load_terminology, normalize  # noqa: E402

DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference"
DEFAULT_OUT = ROOT / "mappings" / "terminology" / "cdisc-ct"
CT_FILE = Path("cdisc") / "ct" / "SDTM_Terminology_2025Q1.txt"
VARIABLES_FILE = Path("cdisc") / "sdtmig-3.4" / "Variables.csv"
# NCI EVS publishes the Q1 2025 SDTM CT package as "sdtmct-2025-03-28" (CDISC Library id); the reference
# MANIFEST only says "Q1 2025". The file has the package's 44,856 rows (checked below).
CT_VERSION = "2025-03-28"
CT_PACKAGE = f"sdtmct-{CT_VERSION}"
CT_ROWS = 44856

# Domains CaseBridge emits; every codelist their SDTMIG 3.4 variables reference is extracted.
DOMAINS = ("DM", "MH", "SU", "CM", "EC", "EX", "PR", "LB", "MI", "GF", "TU", "TR", "RS", "AE", "DS", "DD", "CO",
           "SUPPQUAL", "RELREC")
EXTRA_CODELISTS = ("C66742",)  # NY: used by value-level metadata and SUPPQUAL QVALs even where no variable names it
ADDITION_COLUMNS = ("codelist", "submission_value", "preferred_term", "synonyms", "source_texts", "extension", "note")
_TESTCD = re.compile(r"^[A-Z_][A-Z0-9_]{0,7}$")


class ExtractError(Exception):
    """A problem in the inputs that stops the run (message says where)."""


@dataclass
class CtTerm:
    """One term row of the CT file."""

    code: str
    submission_value: str
    synonyms: list[str]
    preferred_term: str
    source_texts: list[str] = field(default_factory=list)
    extension: bool = False


@dataclass
class CtCodelist:
    """One codelist of the CT file with its terms in file order."""

    code: str
    name: str
    long_name: str
    extensible: bool
    terms: list[CtTerm] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_ct(path: Path) -> tuple[dict[str, CtCodelist], list[list[str]]]:
    """Codelists of the NCI EVS tab-separated CT file by C-code, and all raw rows (for cross-codelist search)."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    header, body = rows[0], rows[1:]
    expected = ["Code", "Codelist Code", "Codelist Extensible (Yes/No)", "Codelist Name", "CDISC Submission Value",
                "CDISC Synonym(s)", "CDISC Definition", "NCI Preferred Term"]
    if header != expected:
        raise ExtractError(f"{path}: unexpected header {header}")
    if len(body) != CT_ROWS:
        raise ExtractError(f"{path}: {len(body)} rows, expected {CT_ROWS} for {CT_PACKAGE}")
    codelists: dict[str, CtCodelist] = {}
    for row in body:
        code, cl_code, extensible, long_name, value, synonyms, _definition, nci_pt = row
        if not cl_code:
            codelists[code] = CtCodelist(code, value, long_name, extensible == "Yes")
    for row in body:
        code, cl_code, _ext, _name, value, synonyms, _definition, nci_pt = row
        if cl_code:
            codelists[cl_code].terms.append(
                CtTerm(code, value, [s.strip() for s in synonyms.split(";") if s.strip()], nci_pt))
    return codelists, body


def referenced_codelists(variables_csv: Path) -> tuple[list[str], dict[str, list[str]]]:
    """C-codes referenced by the emitted domains' variables (plus NY), and the variables using each code."""
    users: dict[str, list[str]] = {}
    with variables_csv.open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["Dataset Name"] not in DOMAINS:
                continue
            for code in (c.strip() for c in row["CDISC CT Codelist Code(s)"].split(";")):
                if code:
                    users.setdefault(code, []).append(row["Variable Name"])
    for code in EXTRA_CODELISTS:
        users.setdefault(code, [])
    return sorted(users), users


def _aliases(term: CtTerm) -> list[str]:
    return [term.submission_value, term.preferred_term, *term.synonyms, *term.source_texts]


def _wording_index(body: list[list[str]]) -> dict[str, list[tuple[str, str]]]:
    """Normalized CT wording (submission value, synonym, NCI preferred term) -> [(codelist code, description)]."""
    index: dict[str, list[tuple[str, str]]] = {}
    for code, cl_code, _ext, name, value, synonyms, _definition, nci_pt in body:
        if cl_code:
            for key in {normalize(a) for a in [value, nci_pt, *synonyms.split(";")] if a.strip()}:
                index.setdefault(key, []).append((cl_code, f"{value} ({code}) in {name} ({cl_code})"))
    return index


def apply_additions(path: Path, selected: dict[str, CtCodelist], users: dict[str, list[str]],
                    body: list[list[str]]) -> None:
    """Merge ``sponsor/additions.csv`` into the selected codelists (see the module docstring for the rules)."""
    by_name = {cl.name: cl for cl in selected.values()}
    wordings = _wording_index(body)
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != ADDITION_COLUMNS:
            raise ExtractError(f"{path}:1: columns must be {', '.join(ADDITION_COLUMNS)}")
        rows = [(reader.line_num, row) for row in reader]
    for line, row in rows:
        where = f"{path}:{line}"
        cl = by_name.get(row["codelist"].strip())
        if cl is None:
            raise ExtractError(f"{where}: codelist {row['codelist']!r} is not in the extracted subset")
        value = row["submission_value"].strip()
        texts = [s.strip() for s in row["source_texts"].split("|") if s.strip()]
        flag = row["extension"].strip().upper()
        existing = {normalize(t.submission_value): t for t in cl.terms}
        if flag == "Y":
            if not cl.extensible:
                raise ExtractError(f"{where}: codelist {cl.name} ({cl.code}) is not extensible")
            if normalize(value) in existing:
                raise ExtractError(f"{where}: {value!r} already exists in {cl.name}; use the CT term")
            for alias in [value, row["preferred_term"]]:
                clash = next((t for t in cl.terms if normalize(alias) in {normalize(a) for a in _aliases(t)}), None)
                if alias and clash is not None:
                    raise ExtractError(f"{where}: {alias!r} is CT term {clash.submission_value!r} ({clash.code}) "
                                       f"of {cl.name}; use it instead of an extension")
            variables = users.get(cl.code, [])
            if any(v.endswith("TESTCD") for v in variables) and not _TESTCD.match(value):
                raise ExtractError(f"{where}: {value!r} is not a valid --TESTCD (≤ 8 chars, A-Z 0-9 _, no leading digit)")
            if any(v.endswith("TEST") for v in variables) and len(value) > 40:
                raise ExtractError(f"{where}: {value!r} is longer than 40 characters (--TEST)")
            term = CtTerm("", value, [s.strip() for s in row["synonyms"].split("|") if s.strip()],
                          row["preferred_term"].strip(), texts, extension=True)
            hits = dict.fromkeys(h for text in (value, term.preferred_term) if text
                                 for other, h in wordings.get(normalize(text), []) if other != cl.code)
            cl.notes.extend(f"{value}: the wording is CT term {hit}" for hit in hits)
            if row["note"].strip():
                cl.notes.append(f"{value}: {row['note'].strip()}")
            cl.terms.append(term)
        elif flag == "N":
            term = existing.get(normalize(value))
            if term is None or term.submission_value != value:
                raise ExtractError(f"{where}: {value!r} is not a CT term of {cl.name}")
            if row["preferred_term"].strip() or row["synonyms"].strip():
                raise ExtractError(f"{where}: a CT term's preferred term and synonyms come from CT; "
                                   "give only source_texts")
            term.source_texts.extend(t for t in texts if t not in term.source_texts)
        else:
            raise ExtractError(f"{where}: extension must be Y or N, not {row['extension']!r}")
    for cl in selected.values():
        owner: dict[str, str] = {}
        for term in cl.terms:
            for alias in [term.submission_value, term.preferred_term, *term.synonyms]:
                owner.setdefault(normalize(alias), term.submission_value)
        for term in cl.terms:
            for text in term.source_texts:
                other = owner.setdefault(normalize(text), term.submission_value)
                if other != term.submission_value:
                    raise ExtractError(f"{path}: source text {text!r} of {cl.name} {term.submission_value!r} "
                                       f"already names {other!r}")


def write_codelist(cl: CtCodelist, out_dir: Path) -> Path:
    """Write one ``<CODELIST>.csv``."""
    path = out_dir / f"{cl.name}.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CODELIST_COLUMNS)
        for t in cl.terms:
            writer.writerow([cl.code, cl.long_name, "Yes" if cl.extensible else "No", t.submission_value, t.code,
                             t.preferred_term, "|".join(t.synonyms), "|".join(t.source_texts),
                             "Y" if t.extension else ""])
    return path


def _yaml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_ct_yaml(selected: list[CtCodelist], out_dir: Path, ct_sha: str) -> None:
    """Write ``ct.yaml``: version (read by the loader), package, source and the codelists with counts."""
    lines = [
        "# Generated by tools/extract_ct.py: do not edit. Sponsor rows: sponsor/additions.csv.",
        f"version: {_yaml_str(CT_VERSION)}",
        f"package: {_yaml_str(CT_PACKAGE)}",
        'name: "CDISC SDTM Controlled Terminology"',
        f"source: {_yaml_str(f'NCI EVS {CT_FILE.name} (sha256 {ct_sha[:12]})')}",
        f"domains: [{', '.join(DOMAINS)}]",
        "codelists:",
    ]
    for cl in selected:
        ext = sum(t.extension for t in cl.terms)
        lines.append(f"  - {{name: {cl.name}, code: {cl.code}, extensible: {'true' if cl.extensible else 'false'}, "
                     f"terms: {len(cl.terms) - ext}, extensions: {ext}}}")
    notes = [(cl.name, n) for cl in selected for n in cl.notes]
    if notes:
        lines.append("extension_notes:")
        lines += [f"  - {_yaml_str(f'{name}: {note}')}" for name, note in notes]
    (out_dir / "ct.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build(reference: Path, out_dir: Path) -> list[CtCodelist]:
    """Extract, merge sponsor rows, write the folder; returns the codelists written."""
    ct_path = reference / CT_FILE
    codelists, body = read_ct(ct_path)
    codes, users = referenced_codelists(reference / VARIABLES_FILE)
    missing = [c for c in codes if c not in codelists]
    if missing:
        raise ExtractError(f"codelists referenced by SDTMIG 3.4 but absent from {ct_path.name}: {', '.join(missing)}")
    selected = {c: codelists[c] for c in codes}
    additions = out_dir / "sponsor" / "additions.csv"
    if additions.is_file():
        apply_additions(additions, selected, users, body)
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(selected.values(), key=lambda cl: cl.name)
    written = {write_codelist(cl, out_dir) for cl in ordered}
    for stale in out_dir.glob("*.csv"):
        if stale not in written:
            stale.unlink()
    write_ct_yaml(ordered, out_dir, hashlib.sha256(ct_path.read_bytes()).hexdigest())
    return ordered


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="the shared reference folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the cdisc-ct output folder")
    args = parser.parse_args(argv)
    try:
        ordered = build(args.reference, args.out)
    except (ExtractError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for cl in ordered:
        for note in cl.notes:
            print(f"note: {cl.name}: {note}")
    term = load_terminology(args.out.parent)
    problems = [p for p in term.problems if Path(p[0]).parent == args.out]
    for file, line, message in problems:
        print(f"{file}:{line}: {message}", file=sys.stderr)
    n_ext = sum(t.extension for cl in ordered for t in cl.terms)
    print(f"{len(ordered)} codelists, {sum(len(cl.terms) for cl in ordered)} terms ({n_ext} sponsor extensions), "
          f"CT {term.ct_version} -> {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
