"""SDTM text in ASCII: Greek letters, units, typography and accents as an SDTM programmer writes them."""

from __future__ import annotations

import pytest

from converter.errors import MappingError
from converter.sdtm.ascii import table, to_ascii


@pytest.mark.parametrize("text, expected", [
    ("ΔNp63", "DeltaNp63"),
    ("β-hCG 5 µg/L", "beta-hCG 5 ug/L"),
    ("Müller–Lyer ≥ 2", "Muller-Lyer >= 2"),
    ("CD56 “positive”", 'CD56 "positive"'),
    ("x²", "x2"),
    ("a\u00a0b\tc", "a b c"),
    ("plain ASCII stays as is", "plain ASCII stays as is"),
])
def test_lossless(text: str, expected: str) -> None:
    result = to_ascii(text)
    assert result.text == expected and result.text.isascii() and not result.lossy


def test_a_character_without_ascii_form_is_marked_lossy() -> None:
    result = to_ascii("肺癌 LCNEC")
    assert result.text == "?? LCNEC" and result.lossy


def test_the_table_is_data_and_is_checked(tmp_path) -> None:
    (tmp_path / "sdtm").mkdir()
    (tmp_path / "sdtm" / "ascii.csv").write_text("character,ascii,note\nΔ,D,\n", encoding="utf-8")
    assert to_ascii("ΔNp63", table(tmp_path)).text == "DNp63"
    (tmp_path / "sdtm" / "ascii.csv").write_text("character,ascii,note\nab,x,\n", encoding="utf-8")
    table.cache_clear()
    with pytest.raises(MappingError) as err:
        table(tmp_path)
    assert "ascii.csv:2" in str(err.value) and "one non-ASCII character" in str(err.value)


def test_a_case_with_greek_and_accented_text_converts_and_says_what_was_written(tmp_path) -> None:
    """ΔNp63 as printed once failed the XPT ASCII guard and the whole case was quarantined."""
    import json

    import pandas as pd

    from converter.api import convert

    case = json.loads(open("samples/minimal.json", encoding="utf-8").read())
    case["pathology"] = [{"id": "ihc-p40", "method": "IHC", "marker": "ΔNp63", "result": "+ (diffuse, “strong”)",
                          "date": "2022-11"}]
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case, ensure_ascii=False), encoding="utf-8")
    report = convert([str(path)], tmp_path / "out")
    assert [i["status"] for i in report.inputs] == ["converted"]
    mi = pd.read_sas(tmp_path / "out" / "sdtm" / "mi.xpt", format="xport", encoding="ascii")
    assert list(mi["MITESTCD"]) == ["P40"] and list(mi["MIORRES"]) == ['+ (diffuse, "strong")']
    bundle = (tmp_path / "out" / "fhir" / "minimal-json.bundle.json").read_text(encoding="utf-8")
    assert "“strong”" in bundle  # the FHIR side keeps the text as printed
    written = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    notes = [i for i in written["issues"] if i["rule"] == "sdtm.value.ascii.written"] if "issues" in written else []
    assert notes and all(i["severity"] == "info" for i in notes)
    assert any("MIORRES" in i["location"] and "'+ (diffuse, \"strong\")'" in i["message"] for i in notes)
