"""SDTM character values in ASCII: SAS XPT v5 (and the SDTMIG) allow only ASCII text.

Reports print Greek letters (ΔNp63, β-hCG), micro signs, typographic quotes and dashes, accented names.
:func:`to_ascii` writes them the way an SDTM programmer would: characters listed in ``mappings/sdtm/ascii.csv``
(maintained by data managers) first, then accents dropped (Unicode NFKD: é → e, ² → 2); a character with
no ASCII form becomes ``?`` and the result says it was lossy, so the caller can flag it. The FHIR output
keeps the original text.
"""

from __future__ import annotations

import csv
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from converter.errors import MappingError
from converter.resources import mappings_dir
from converter.validate.issues import Issue

TABLE = "sdtm/ascii.csv"


@dataclass(frozen=True, slots=True)
class Ascii:
    """The ASCII form of a text and whether anything had to be replaced by ``?``."""

    text: str
    lossy: bool


@cache
def table(folder: Path | None = None) -> dict[str, str]:
    """Character → ASCII replacement, read from ``<mappings>/sdtm/ascii.csv``."""
    path = (folder or mappings_dir()) / TABLE
    out: dict[str, str] = {}
    if not path.exists():
        return out
    with path.open(encoding="utf-8", newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), 2):
            char, ascii_ = row.get("character") or "", row.get("ascii")
            if len(char) != 1 or char.isascii() or ascii_ is None or not ascii_.isascii():
                raise MappingError([Issue("error", "mapping.ascii", "expected one non-ASCII character and its "
                                          f"ASCII spelling, got {char!r} → {ascii_!r}", f"{path}:{line}")])
            out[char] = ascii_
    return out


def to_ascii(text: str, replacements: dict[str, str] | None = None) -> Ascii:
    """``text`` in printable ASCII (see the module docstring)."""
    if text.isascii() and text.isprintable():
        return Ascii(text, False)
    replacements = table() if replacements is None else replacements
    out: list[str] = []
    lossy = False
    for ch in text:
        if ch.isascii():
            out.append(ch if ch.isprintable() else " ")
            continue
        if ch in replacements:
            out.append(replacements[ch])
            continue
        if unicodedata.category(ch) == "Zs":  # no-break and other spaces
            out.append(" ")
            continue
        plain = "".join(c for c in unicodedata.normalize("NFKD", ch) if c.isascii() and c.isprintable())
        if plain:
            out.append(plain)
        else:
            out.append("?")
            lossy = True
    return Ascii("".join(out), lossy)
