"""Derive ``mappings/terminology/meddra-ctcae.csv`` (CTCAE v5.0 term → MedDRA code) from the CTCAE v5.0 sheet.

Every CTCAE v5.0 term is a MedDRA Lowest Level Term (LLT); the CTCAE sheet gives its MedDRA code. One row
per term is written in the layout of ``converter.mapping.terminology.TABLE_COLUMNS``:

* ``text`` = ``display`` = the CTCAE term, ``system`` = ``http://terminology.hl7.org/CodeSystem/mdr``,
  ``code`` = the MedDRA (LLT) code, ``status`` = ``approved``, ``verified_in`` = ``CTCAE v5.0``.

What people add by hand survives a re-run:

* ``synonyms`` and ``note`` of a derived row are kept (matched by the CTCAE term). Report wordings that a
  coder maps to a CTCAE term (e.g. a verbatim AE term) are synonyms: a coding decision, so say why in ``note``.
* rows whose ``verified_in`` is not ``CTCAE v5.0`` (a known term with no CTCAE code, kept uncoded) are
  kept as they are.

The run fails when a synonym names two terms, or when the result does not load with
``load_terminology`` without problems. Output is deterministic (rows sorted by term).

Usage::

    python tools/build_meddra_ctcae.py [--reference DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converter.mapping.terminology import TABLE_COLUMNS, load_table, normalize  # noqa: E402

DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference"
DEFAULT_OUT = ROOT / "mappings" / "terminology" / "meddra-ctcae.csv"
CTCAE_FILE = Path("cdisc") / "ctcae-v5" / "CTCAE_v5.0_clean.csv"
SYSTEM = "http://terminology.hl7.org/CodeSystem/mdr"
VERIFIED_IN = "CTCAE v5.0"


def read_ctcae(path: Path) -> list[tuple[str, str]]:
    """(term, MedDRA code) for every CTCAE v5.0 row, in file order; fails on an empty or non-numeric code."""
    out: list[tuple[str, str]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.DictReader(fh), 2):
            term = (row.get("CTCAE Term") or "").strip()
            code = (row.get("MedDRA Code") or "").strip()
            if not term:
                continue
            if not code.isdigit():
                raise SystemExit(f"{path}:{n}: CTCAE term {term!r} has MedDRA code {code!r} (expected digits)")
            out.append((term, code))
    return out


def read_existing(path: Path) -> list[dict[str, str]]:
    """The rows of the current table (empty when it does not exist yet)."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def build(ctcae: list[tuple[str, str]], existing: list[dict[str, str]]) -> list[dict[str, str]]:
    """Derived rows (keeping hand-kept synonyms and notes) plus the hand rows, sorted by term."""
    kept = {normalize(r["text"]): r for r in existing if r.get("verified_in") == VERIFIED_IN}
    rows: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    for term, code in ctcae:
        key = normalize(term)
        if key in seen:
            if seen[key] != code:
                raise SystemExit(f"CTCAE term {term!r} appears with codes {seen[key]} and {code}")
            continue
        seen[key] = code
        old = kept.get(key, {})
        rows.append({"text": term, "synonyms": old.get("synonyms", ""), "system": SYSTEM, "code": code,
                     "display": term, "equivalence": "equivalent", "status": "approved",
                     "verified_in": VERIFIED_IN, "note": old.get("note", "")})
    hand = [{c: r.get(c, "") for c in TABLE_COLUMNS} for r in existing if r.get("verified_in") != VERIFIED_IN]
    for r in hand:
        if normalize(r["text"]) in seen:
            raise SystemExit(f"hand row {r['text']!r} is a CTCAE v5.0 term: edit the derived row instead")
    rows += hand
    names: dict[str, str] = {}
    for r in rows:
        for alias in [r["text"], *[s for s in r["synonyms"].split("|") if s.strip()]]:
            key = normalize(alias)
            if key in names and normalize(names[key]) != normalize(r["text"]):
                raise SystemExit(f"{alias!r} names both {names[key]!r} and {r['text']!r}")
            names[key] = r["text"]
    return sorted(rows, key=lambda r: (normalize(r["text"]), r["system"]))


def write(rows: list[dict[str, str]], out: Path) -> None:
    """Write the table and check that it loads without problems."""
    with tempfile.NamedTemporaryFile("w", newline="", encoding="utf-8", suffix=".csv", delete=False,
                                     dir=out.parent) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(TABLE_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        tmp = Path(fh.name)
    problems: list[tuple[str, int, str]] = []
    load_table(tmp, problems)
    if problems:
        tmp.unlink()
        raise SystemExit("\n".join(f"{f}:{line}: {msg}" for f, line, msg in problems))
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                        help="the shared reference folder (default: ../shared/reference)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the table to write")
    args = parser.parse_args(argv)
    source = args.reference / CTCAE_FILE
    if not source.is_file():
        raise SystemExit(f"CTCAE v5.0 sheet not found: {source}")
    ctcae = read_ctcae(source)
    rows = build(ctcae, read_existing(args.out))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(rows, args.out)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    derived = sum(1 for r in rows if r["verified_in"] == VERIFIED_IN)
    print(f"{args.out}: {derived} CTCAE v5.0 terms (source sha256 {digest}), {len(rows) - derived} hand rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
