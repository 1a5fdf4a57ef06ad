"""SDTMIG 3.4 metadata, generated row schemas and rule table, and the CDISC CT subset (with sponsor rows)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import jsonschema_rs
import pytest

from conftest import ROOT, reference_path
from converter.mapping.terminology import load_terminology
from converter.sdtm import metadata

sys.path.insert(0, str(ROOT / "tools"))
import build_sdtm_metadata  # noqa: E402
import extract_ct  # noqa: E402

SCHEMAS = ROOT / "schemas" / "sdtm"
CT_DIR = ROOT / "mappings" / "terminology" / "cdisc-ct"


def _reference_rows(name: str) -> list[dict[str, str]]:
    path = reference_path("cdisc", "sdtmig-3.4", name)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


# --- metadata ---------------------------------------------------------------------------------------------------

def test_dataset_and_variable_counts_match_the_reference() -> None:
    datasets = _reference_rows("Datasets.csv")
    variables = _reference_rows("Variables.csv")
    assert len(datasets) == 63 and len(variables) == 1917
    assert metadata.dataset_names() == [r["Dataset Name"] for r in datasets]
    assert sum(len(metadata.variables(n)) for n in metadata.dataset_names()) == 1917


def test_ae_variables_in_sdtmig_order() -> None:
    expected = [r["Variable Name"] for r in sorted(
        (r for r in _reference_rows("Variables.csv") if r["Dataset Name"] == "AE"), key=lambda r: int(r["Variable Order"]))]
    names = [v.name for v in metadata.variables("AE")]
    assert names == expected
    assert names[:6] == ["STUDYID", "DOMAIN", "USUBJID", "SPDEVID", "AESEQ", "AEGRPID"]
    assert names.index("AESTDTC") < names.index("AEENDTC") < names.index("AESTDY")


def test_labels_fit_xpt_v5() -> None:
    for name in metadata.dataset_names():
        meta = metadata.domain_meta(name)
        assert all(len(v.label) <= 40 for v in meta.variables), name
        assert all(len(v.name) <= 8 for v in meta.variables), name
        if name != "SUPPQUAL":  # "Supplemental Qualifiers for [domain name]" is a template
            assert 0 < len(meta.label) <= 40, name


def test_variable_facts() -> None:
    seq = metadata.domain_meta("AE").variable("AESEQ")
    assert seq is not None and (seq.label, seq.type, seq.role, seq.core) == ("Sequence Number", "Num", "Identifier", "Req")
    assert metadata.variable_label("AE", "AETOXGR") == "Standard Toxicity Grade"
    assert metadata.variable_type("AE", "AETOXGR") == "Char"
    assert metadata.value_domain("DM", "DTHDTC") == "ISO 8601 datetime or interval"
    assert metadata.value_domain("AE", "AEDUR") == "ISO 8601 duration"
    assert metadata.codelist_codes("AE", "AESEV") == ("C66769",)
    assert metadata.codelist_codes("DS", "DSDECOD") == ("C66727", "C114118", "C150811")
    assert metadata.variable("DS", "DSDECOD").codelist == "C66727;C114118;C150811"  # type: ignore[union-attr]
    assert metadata.dataset_label("RS") == "Disease Response and Clin Classification"
    assert metadata.dataset_class("MI") == "Findings"
    with pytest.raises(KeyError):
        metadata.variable_label("AE", "CMTRT")


def test_supp_split_and_unknown_datasets() -> None:
    supp = metadata.domain_meta("SUPPAE")
    assert (supp.source, supp.domain, supp.label) == ("SUPPQUAL", "AE", "Supplemental Qualifiers for AE")
    assert supp.names == ["STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "QNAM", "QLABEL", "QVAL", "QORIG",
                          "QEVAL"]
    assert metadata.is_variable("SUPPMI", "QNAM") and not metadata.is_variable("SUPPMI", "MISEQ")
    split = metadata.domain_meta("QSPH")
    assert (split.source, split.domain, split.prefix) == ("QS", "QS", "QS") and "QSTESTCD" in split.names
    assert not metadata.is_domain("XYZABC") and not metadata.is_variable("XYZABC", "XYSEQ")
    with pytest.raises(KeyError):
        metadata.domain_meta("XYZABC")


def test_is_variable_follows_the_ig_and_optionally_the_class() -> None:
    assert metadata.is_variable("AE", "AESEQ")
    assert not metadata.is_variable("AE", "CMTRT", include_class=True)
    # SDTMIG 3.4 does not list CMLNKGRP for CM; the SDTM model allows --LNKGRP in any Interventions domain
    assert not metadata.is_variable("CM", "CMLNKGRP")
    assert metadata.is_variable("CM", "CMLNKGRP", include_class=True)
    assert metadata.class_variable("CM", "CMLNKGRP").label == "Link Group ID"  # type: ignore[union-attr]
    assert metadata.value_domain("CM", "CMDTC") == "ISO 8601 datetime or interval"  # class timing variable
    # special-purpose and relationship datasets have no class variables
    assert not metadata.is_variable("DM", "DMLNKGRP", include_class=True)
    assert not metadata.is_variable("RELREC", "RELSEQ", include_class=True)


# --- generated files --------------------------------------------------------------------------------------------

def _same_tree(a: Path, b: Path) -> list[str]:
    names = sorted({p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
                   | {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()})
    return [n for n in names if not (a / n).is_file() or not (b / n).is_file()
            or (a / n).read_bytes() != (b / n).read_bytes()]


def test_ct_subset_is_current(tmp_path: Path) -> None:
    reference = reference_path()
    out = tmp_path / "terminology" / "cdisc-ct"
    shutil.copytree(CT_DIR / "sponsor", out / "sponsor")
    extract_ct.build(reference, out)
    assert _same_tree(CT_DIR, out) == [], "run tools/extract_ct.py"


def test_sdtm_schemas_are_current(tmp_path: Path) -> None:
    reference = reference_path()
    build_sdtm_metadata.build(reference, tmp_path, ROOT / "mappings" / "terminology")
    assert _same_tree(SCHEMAS, tmp_path) == [], "run tools/build_sdtm_metadata.py"


def test_rule_ids_exist_in_core_and_p21_references() -> None:
    assert build_sdtm_metadata.check_rule_ids(build_sdtm_metadata.RULES, reference_path()) == []
    bad = [dict(build_sdtm_metadata.RULES[0], id="x.test", core=["CORE-999999"], sdtmig=["CG9999"])]
    problems = build_sdtm_metadata.check_rule_ids(bad, reference_path())
    assert any("CORE-999999" in p for p in problems) and any("CG9999" in p for p in problems)


def test_rules_json_matches_what_the_validator_implements() -> None:
    rules = json.loads((SCHEMAS / "rules.json").read_text())["rules"]
    ids = {r["id"] for r in rules}
    source = (ROOT / "converter" / "validate" / "sdtm.py").read_text()
    schema_rules = {rule for p in json.loads((SCHEMAS / "domains" / "DM.schema.json").read_text())["properties"].values()
                    for rule in p["x-rule"].values()}
    for rule in rules:
        if rule["kind"] in ("dataset", "row", "study", "read"):
            assert f'"{rule["id"]}"' in source, rule["id"]
    assert schema_rules <= ids
    assert {r["severity"] for r in rules} <= {"error", "warning", "info"}


def test_domain_schemas_are_valid_2020_12_and_check_rows() -> None:
    for path in sorted((SCHEMAS / "domains").glob("*.schema.json")):
        assert jsonschema_rs.meta.is_valid(json.loads(path.read_text())), path.name
    assert len(list((SCHEMAS / "domains").glob("*.schema.json"))) == 63
    ae = jsonschema_rs.validator_for(json.loads((SCHEMAS / "domains" / "AE.schema.json").read_text()))
    row = {"STUDYID": "S", "DOMAIN": "AE", "USUBJID": "S-1", "AESEQ": 1, "AETERM": "Rash", "AEDECOD": "Rash"}
    assert ae.is_valid(row)
    for date in ("2021", "2021-05", "2021-05-14", "2021-05-14T10:30", "2003---15", "2021-05-14/2021-06"):
        assert ae.is_valid({**row, "AESTDTC": date}), date
    for date in ("2021-5", "14/05/2021", "2021-13", "2021-05-14T25:00", "2021-"):
        assert not ae.is_valid({**row, "AESTDTC": date}), date
    assert ae.is_valid({**row, "AEDUR": "P3D"}) and not ae.is_valid({**row, "AEDUR": "3 days"})
    assert not ae.is_valid({**row, "AESEV": "Mild"})          # non-extensible codelist: enum
    assert ae.is_valid({**row, "AESEV": "MILD", "AELOC": "ANY TEXT"})  # extensible: left to the validator
    assert not ae.is_valid({**row, "AETERM": None})             # Req non-null
    assert not ae.is_valid({**row, "AESEQ": "1"})               # Num
    assert not ae.is_valid({**row, "AETERM": "x" * 201})        # 200 characters
    assert not ae.is_valid({**row, "DOMAIN": "CM"})
    assert not ae.is_valid({**row, "AEFOO": "x"})               # not an AE variable
    dm = jsonschema_rs.validator_for(json.loads((SCHEMAS / "domains" / "DM.schema.json").read_text()))
    dm_row = {"STUDYID": "S", "DOMAIN": "DM", "USUBJID": "S-1", "SUBJID": "1", "SITEID": "1", "SEX": "M",
              "COUNTRY": "CHN"}
    assert dm.is_valid({**dm_row, "DTHFL": "Y", "RACE": "MULTIPLE"}) and not dm.is_valid({**dm_row, "DTHFL": "N"})
    cm = jsonschema_rs.validator_for(json.loads((SCHEMAS / "domains" / "CM.schema.json").read_text()))
    assert cm.is_valid({"STUDYID": "S", "DOMAIN": "CM", "USUBJID": "S-1", "CMSEQ": 1, "CMTRT": "X", "CMLNKGRP": "L1"})


# --- the CT subset ----------------------------------------------------------------------------------------------

def test_ct_subset_loads_without_problems() -> None:
    term = load_terminology(ROOT / "mappings" / "terminology")
    assert [p for p in term.problems if "cdisc-ct" in p[0]] == []
    assert term.ct_version == "2025-03-28"
    assert "package: \"sdtmct-2025-03-28\"" in (CT_DIR / "ct.yaml").read_text()
    for name in ("NY", "SEX", "OUT", "MITSCD", "MITS", "ONCRTSCD", "ONCRTS", "LBTESTCD", "RELTYPE", "DOMAIN"):
        assert name in term.codelists, name
    assert term.codelists["NY"].code == "C66742" and not term.codelists["NY"].extensible
    assert term.codelists["NY"].values == {"N", "NA", "U", "Y"}


def test_every_codelist_of_the_emitted_domains_is_extracted() -> None:
    term = load_terminology(ROOT / "mappings" / "terminology")
    codes = {cl.code for cl in term.codelists.values()}
    for domain in extract_ct.DOMAINS:
        for var in metadata.variables(domain):
            for code in metadata.codelist_codes(domain, var.name):
                assert code in codes, (domain, var.name, code)


SPONSOR = {
    "MITSCD": {"CGA": "Chromogranin A", "SYP": "Synaptophysin", "NAPSA": "Napsin A", "P40": "DeltaNp63 Protein (p40)"},
    "ONCRTSCD": {"AJCC201": "AJCC2-Primary Tumor (T)", "AJCC202": "AJCC2-Regional Lymph Nodes (N)",
                 "AJCC203": "AJCC2-Distant Metastasis (M)", "AJCC204": "AJCC2-Anatomic Stage"},
}
PAIRED = {"MITSCD": "MITS", "ONCRTSCD": "ONCRTS"}


def test_sponsor_extensions_are_declared_and_absent_from_ct() -> None:
    term = load_terminology(ROOT / "mappings" / "terminology")
    with reference_path("cdisc", "ct", "SDTM_Terminology_2025Q1.txt").open(encoding="utf-8") as fh:
        ct_rows = list(csv.reader(fh, delimiter="\t"))
    for codes_list, terms in SPONSOR.items():
        code_cl, name_cl = term.codelists[codes_list], term.codelists[PAIRED[codes_list]]
        assert code_cl.extensible and name_cl.extensible
        for code, name in terms.items():
            a, b = code_cl.lookup(code), name_cl.lookup(name)
            assert a and a.extension and a.c_code == "" and a.preferred_term == name
            assert b and b.extension and b.submission_value == name
            assert len(code) <= 8 and len(name) <= 40
            in_ct = {r[4] for r in ct_rows if r[1] in (code_cl.code, name_cl.code)}
            assert code not in in_ct and name not in in_ct
    # proGRP is in CT 2025-03-28: no extension
    assert not term.codelists["LBTESTCD"].lookup("PROGRP").extension  # type: ignore[union-attr]
    assert sum(t.extension for cl in term.codelists.values() for t in cl.terms) == 16


@pytest.mark.parametrize(("codelist", "text", "value"), [
    ("SEX", "male", "M"), ("SEX", "man", "M"), ("SEX", "Woman", "F"),
    ("OUT", "fatal", "FATAL"), ("OUT", "died", "FATAL"), ("OUT", "not recovered", "NOT RECOVERED/NOT RESOLVED"),
    ("NCOMPLT", "died", "DEATH"),
    ("MITSCD", "CD56", "NCAM1"), ("MITSCD", "TTF-1", "NKX2_1"), ("MITSCD", "thyroid transcription factor-1", "NKX2_1"),
    ("MITSCD", "Ki-67", "KI67"), ("MITSCD", "PD-L1", "PDL1"), ("MITSCD", "chromogranin A", "CGA"), ("MITSCD", "p40", "P40"),
    ("MITS", "synaptophysin", "Synaptophysin"),
    ("LBTESTCD", "proGRP", "PROGRP"), ("UNIT", "pg/mL", "ng/L"),
    ("ONCRTSCD", "stage group", "AJCC204"), ("ONCRSCAT", "AJCC 8th edition", "AJCC V8"),
    ("ROUTE", "i.v.", "INTRAVENOUS"), ("METHOD", "immunohistochemistry", "IHC"),
    ("INHERTGF", "somatic", "SOMATIC VARIATION"),
])
def test_report_wordings_find_submission_values(codelist: str, text: str, value: str) -> None:
    term = load_terminology(ROOT / "mappings" / "terminology")
    found = term.codelists[codelist].lookup(text)
    assert found is not None and found.submission_value == value


def _additions(folder: Path, rows: list[str]) -> Path:
    out = folder / "cdisc-ct"
    (out / "sponsor").mkdir(parents=True)
    (out / "sponsor" / "additions.csv").write_text(
        ",".join(extract_ct.ADDITION_COLUMNS) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return out


@pytest.mark.parametrize(("row", "problem"), [
    ("SEX,X,Other,,,Y,", "not extensible"),
    ("MITSCD,KI67,Ki-67,,,Y,", "already exists"),
    ("MITSCD,TTF1X,Thyroid Transcription Factor 1,,,Y,", "use it instead"),
    ("MITSCD,TOOLONGCODE,Something,,,Y,", "not a valid --TESTCD"),
    ("SEX,Q,,,queer,N,", "not a CT term"),
    ("SEX,M,,,female,N,", "already names"),
    ("NOPE,X,,,,Y,", "not in the extracted subset"),
])
def test_extract_ct_refuses_bad_sponsor_rows(tmp_path: Path, row: str, problem: str) -> None:
    out = _additions(tmp_path, [row])
    with pytest.raises(extract_ct.ExtractError, match=problem):
        extract_ct.build(reference_path(), out)
