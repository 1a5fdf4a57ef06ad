"""Loading the terminology CSV tables: the rows, lines and problems data managers see, and the reuse of a load."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from converter.mapping.terminology import load_table, load_terminology, normalize

HEADER = "text,synonyms,system,code,display,equivalence,status,verified_in,note\n"
CT_HEADER = "codelist_code,codelist_name,extensible,submission_value,c_code,preferred_term,synonyms,source_texts,extension\n"
_SPACE = re.compile(r"\s+")
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2212\u00ad"


def _reference(text: str) -> str:
    """The definition of ``normalize``: dash variants to "-", whitespace runs to one space, stripped, casefolded."""
    return _SPACE.sub(" ", text.translate(str.maketrans({c: "-" for c in _DASHES}))).strip().casefold()


def test_normalize_follows_its_definition_for_every_whitespace_and_dash() -> None:
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if _SPACE.fullmatch(chr(c))]
    assert len(spaces) > 20  # Unicode spaces, not only ASCII ones
    texts = ["", " ", "Non-Small  Cell", "ÉTAT\u00a0Général", "Straße", "Ki\u201167", "x\u00ad\u2212y", "A\u0130b"]
    texts += [f"{s}a{s}{s}B{d}c{s}" for s in spaces for d in (*_DASHES, "-")]
    for text in texts:
        assert normalize(text) == _reference(text), repr(text)
    assert normalize(12) == "12"


def _folder(tmp_path: Path, table: str, codelist: str = "") -> Path:
    folder = tmp_path / "terminology"
    (folder / "cdisc-ct").mkdir(parents=True, exist_ok=True)
    (folder / "t.csv").write_text(table, encoding="utf-8")
    if codelist:
        (folder / "cdisc-ct" / "NY.csv").write_text(codelist, encoding="utf-8")
    (folder / "cdisc-ct" / "ct.yaml").write_text('version: "2025-03-28"\n', encoding="utf-8")
    return folder


def test_rows_keep_their_file_lines_across_blank_and_multi_line_rows(tmp_path: Path) -> None:
    folder = _folder(tmp_path, HEADER + "Alpha,a1,http://x,1,A,,approved,,\n\n\n"
                     + '"two\nlines",,http://x,2,,,approved,,\nGamma,,,,,,weird,,\nShort,,http://x\n'
                     + "Long,,http://x,3,L,,approved,,,extra\n")
    problems: list[tuple[str, int, str]] = []
    table = load_table(folder / "t.csv", problems)
    assert table.lookup("alpha").lines == [2]
    assert table.lookup("two lines").lines == [6]  # the line a row ends on, as csv counts lines
    assert problems == [(str(folder / "t.csv"), 7, "status 'weird' is not one of approved, unreviewed, rejected"),
                        (str(folder / "t.csv"), 8, "status '' is not one of approved, unreviewed, rejected")]
    long = table.lookup("long").rows[0]
    assert long[None] == ["extra"] and long["note"] == ""  # csv.DictReader's restkey for extra cells


def test_short_rows_read_as_missing_cells(tmp_path: Path) -> None:
    folder = _folder(tmp_path, HEADER + "Short,,http://x,4,S,,approved\n")
    table = load_table(folder / "t.csv", [])
    assert table.lookup("short").rows[0] == {"text": "Short", "synonyms": "", "system": "http://x", "code": "4",
                                             "display": "S", "equivalence": "", "status": "approved",
                                             "verified_in": None, "note": None}


def test_missing_column_is_one_problem_on_line_1(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "text,code\nx,1\n")
    problems: list[tuple[str, int, str]] = []
    assert load_table(folder / "t.csv", problems).entries == {}
    assert problems[0][1] == 1 and problems[0][2].startswith("missing column(s) synonyms, system, display")


def test_unchanged_folder_is_loaded_once_and_any_change_reloads(tmp_path: Path) -> None:
    folder = _folder(tmp_path, HEADER + "Alpha,,http://x,1,A,,approved,,\n", CT_HEADER + "C1,NY,No,N,C2,No,,,\n")
    first = load_terminology(folder)
    assert load_terminology(folder) is first
    assert first.ct_version == "2025-03-28" and first.codelists["NY"].lookup("no").c_code == "C2"
    (folder / "cdisc-ct" / "NY.csv").write_text(CT_HEADER + "C1,NY,No,N,C9,No,,,\n", encoding="utf-8")
    second = load_terminology(folder)
    assert second is not first and second.codelists["NY"].lookup("no").c_code == "C9"
    (folder / "extra.csv").write_text(HEADER, encoding="utf-8")  # a new table
    assert "extra" in load_terminology(folder).tables


def test_same_content_in_another_folder_keeps_its_own_paths(tmp_path: Path) -> None:
    table = HEADER + "Gamma,,,,,,weird,,\n"
    a = load_terminology(_folder(tmp_path / "a", table))
    b = load_terminology(_folder(tmp_path / "b", table))
    assert a is not b
    assert a.problems[0][0].startswith(str(tmp_path / "a")) and b.problems[0][0].startswith(str(tmp_path / "b"))


def test_ct_version_change_reloads(tmp_path: Path) -> None:
    folder = _folder(tmp_path, HEADER)
    assert load_terminology(folder).ct_version == "2025-03-28"
    (folder / "cdisc-ct" / "ct.yaml").write_text('version: "2025-09-26"\n', encoding="utf-8")
    assert load_terminology(folder).ct_version == "2025-09-26"
