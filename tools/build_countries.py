"""Derive mappings/terminology/countries.csv (ISO 3166-1: names → alpha-3) from the pycountry package.

Run when pycountry updates (``pip install pycountry``); the CSV is committed, so CaseBridge itself does not
need pycountry. Names, official names, common names and alpha-2/alpha-3 codes are all accepted as text.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pycountry

OUT = Path(__file__).resolve().parents[1] / "mappings" / "terminology" / "countries.csv"
COLUMNS = ("text", "synonyms", "system", "code", "display", "equivalence", "status", "verified_in", "note")


def main() -> None:
    """Write the table, one row per country, sorted by name."""
    version = getattr(pycountry, "__version__", "") or "unknown"
    rows = []
    for c in pycountry.countries:
        names = [getattr(c, "official_name", None), getattr(c, "common_name", None), c.alpha_2, c.alpha_3]
        synonyms = sorted({n for n in names if n and n != c.name})
        rows.append({"text": c.name, "synonyms": "|".join(synonyms), "system": "urn:iso:std:iso:3166",
                     "code": c.alpha_3, "display": c.name, "equivalence": "equivalent", "status": "approved",
                     "verified_in": f"ISO 3166-1 via pycountry {version}", "note": ""})
    rows.sort(key=lambda r: r["text"])
    with OUT.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} countries -> {OUT}")


if __name__ == "__main__":
    main()
