"""The SDTM mapping files (mappings/sdtm/*.yaml) on the seed case: facts of the rows they produce.

The seed is samples/lcnec-cadonilimab-anlotinib.yaml, a transcription of the LCNEC case report (Oncology
Letters 29:27, 2025). These tests check what the SDTM rows say, not how the builder lays them out; the last
tests build and validate the study.
"""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from converter.api import convert, lint_mappings
from converter.case.loader import load_case
from converter.mapping.engine import MappedCase, MappingSet, Row
from converter.mapping.lint import lint_folder
from converter.mapping.testing import run_tests
from converter.mapping.verbs import shorten
from converter.sdtm import metadata

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "samples" / "lcnec-cadonilimab-anlotinib.yaml"
SAMPLES = sorted(p for p in (ROOT / "samples").iterdir() if p.suffix in (".yaml", ".json"))


@cache
def _mapping_set() -> tuple[MappingSet, tuple[Any, ...]]:
    ms, issues = lint_folder()
    return ms, tuple(issues)


@cache
def _mapped(path: Path = SEED) -> MappedCase:
    ms, _ = _mapping_set()
    return ms.apply(load_case(path), frozenset({"sdtm"}))


def rows(domain: str, path: Path = SEED) -> list[Row]:
    return [r for r in _mapped(path).rows if r.domain == domain]


def values(domain: str, path: Path = SEED) -> list[dict[str, Any]]:
    return [r.values for r in rows(domain, path)]


def supp(row: Row) -> dict[str, Any]:
    return {q: v for q, _, v, _ in row.supp}


# --- the mapping files themselves ------------------------------------------------------------------------------

def test_sdtm_mapping_files_lint_clean() -> None:
    """No lint error in sdtm/ files, except SDTM-model class variables (CMLNKGRP, --STRTPT…) that the SDTMIG
    domain table does not list: the SDTM model allows them (metadata.is_variable(include_class=True))."""
    _, issues = _mapping_set()
    errors = [i for i in issues if i.severity == "error" and "sdtm/" in str(i)]
    unexpected = []
    for issue in errors:
        text = str(issue)
        if " is not a variable of " in text:
            variable, _, rest = text.split("error: ", 1)[-1].partition(" is not a variable of ")
            domain = rest.split(" ", 1)[0]
            if metadata.is_variable(domain, variable, include_class=True):
                continue
        unexpected.append(text)
    assert unexpected == []


def test_sdtm_mapping_tests_blocks_pass() -> None:
    ms, _ = _mapping_set()
    outcomes = [o for o in run_tests(ms) if o.file.startswith("sdtm/")]
    assert outcomes, "the sdtm mapping files carry tests: blocks"
    assert [(o.file, o.line, o.name, o.diffs) for o in outcomes if not o.passed] == []


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_every_sample_maps_to_one_dm_record(sample: Path) -> None:
    dm = values("DM", sample)
    assert len(dm) == 1
    assert dm[0]["ARMNRS"] == "NOT ASSIGNED"
    assert not any(k in dm[0] for k in ("ARMCD", "ARM", "ACTARMCD", "ACTARM"))


def test_no_row_sets_builder_variables() -> None:
    """STUDYID, DOMAIN, USUBJID, --SEQ and --DY are the builder's."""
    for row in _mapped().rows:
        d = row.domain
        assert not {"STUDYID", "DOMAIN", "USUBJID", f"{d}SEQ", f"{d}DY", f"{d}STDY", f"{d}ENDY"} & set(row.values), row.values


def test_supp_qnams_and_labels_fit_xpt() -> None:
    for row in _mapped().rows:
        for qnam, label, _, _ in row.supp:
            assert len(qnam) <= 8 and qnam.isupper() and not qnam[0].isdigit(), qnam
            assert len(label) <= 40, label
            assert not metadata.is_variable(row.domain, qnam), f"{qnam} is a standard {row.domain} variable"


# --- the seed's facts -----------------------------------------------------------------------------------------

def test_seed_domains() -> None:
    present = {r.domain for r in _mapped().rows}
    assert present >= {"DM", "MH", "SU", "CM", "PR", "MI", "GF", "TU", "TR", "RS", "AE", "DS", "DD", "CO"}
    assert "LB" not in present  # proGRP has a range and a course only: CO, not LB


def test_dm_death_and_reference_dates() -> None:
    (dm,) = values("DM")
    assert dm["SUBJID"] == "lcnec-cadonilimab-anlotinib"
    assert dm["RFSTDTC"] == "2021-01"  # start of first-line EP
    assert dm["DTHFL"] == "Y" and dm["DTHDTC"] == "2023-03"
    assert dm["RFENDTC"] == dm["RFPENDTC"] == "2023-03"
    assert (dm["AGE"], dm["AGEU"], dm["SEX"]) == (68, "YEARS", "M")
    assert dm["RACE"] == "NOT REPORTED" and dm["ETHNIC"] == "NOT REPORTED"
    assert dm["COUNTRY"] == "CHN"


def test_cm_one_record_per_agent_with_dose_unit_route() -> None:
    agents = {r.values["CMSPID"]: r.values for r in rows("CM") if r.rule.id == "cm-line-agent"}
    assert len(agents) == 11
    expected = {
        "l1-etoposide": ("etoposide", 100, "mg/m2", "INTRAVENOUS", "line-1"),
        "l1-cisplatin": ("cisplatin", 25, "mg/m2", "INTRAVENOUS", "line-1"),
        "l1-tislelizumab": ("Tisleslizumab", 200, "mg", "INTRAVENOUS", "line-1"),
        "l2-anlotinib": ("anlotinib", 10, "mg", "ORAL", "line-2"),
        "l2-tislelizumab": ("tisleslizumab", 200, "mg", "INTRAVENOUS", "line-2"),
        "l3-temozolomide": ("temozolomide", 150, "mg/m2", "ORAL", "line-3"),
        "l3-capecitabine": ("capecitabine", 750, "mg/m2", "ORAL", "line-3"),
        "l4-vinorelbine": ("vinorelbine", 40, "mg", "ORAL", "line-4"),
        "l5-irinotecan": ("irinotecan", 60, "mg/m2", "INTRAVENOUS", "line-5"),
        "l6-cadonilimab": ("cadonilimab", 250, "mg", "INTRAVENOUS", "line-6"),
        "l6-anlotinib": ("anlotinib", 10, "mg", "ORAL", "line-6"),
    }
    for spid, (trt, dose, unit, route, line) in expected.items():
        cm = agents[spid]
        assert (cm["CMTRT"], cm["CMDOSE"], cm["CMDOSU"], cm["CMROUTE"]) == (trt, dose, unit, route), spid
        assert cm["CMGRPID"] == cm["CMLNKGRP"] == line
        assert cm["CMCAT"] == "ANTI-CANCER THERAPY"


def test_cm_decode_only_where_verified_and_typo_kept() -> None:
    agents = {r.values["CMSPID"]: r.values for r in rows("CM")}
    assert agents["l1-cisplatin"]["CMDECOD"] == "cisplatin"  # RxNorm 2555 in drugs.csv
    assert "CMDECOD" not in agents["l1-tislelizumab"]  # no RxNorm code: not decoded
    assert agents["l1-tislelizumab"]["CMTRT"] == "Tisleslizumab"
    assert "CMDECOD" not in agents["l6-cadonilimab"]


def test_cm_dates_frequency_and_relative_start() -> None:
    agents = {r.values["CMSPID"]: r.values for r in rows("CM")}
    assert (agents["l1-etoposide"]["CMSTDTC"], agents["l1-etoposide"]["CMENDTC"]) == ("2021-01", "2021-05")
    assert "CMDOSFRQ" not in agents["l1-etoposide"]  # days 1-3 of a 3-week cycle: no single frequency
    assert agents["l3-capecitabine"]["CMDOSFRQ"] == "BID"
    assert agents["l6-cadonilimab"]["CMDOSFRQ"] == "EVERY 3 WEEKS"
    tis = agents["l1-tislelizumab"]
    assert "CMSTDTC" not in tis  # only a relative start was printed
    assert (tis["CMSTRTPT"], tis["CMSTTPT"]) == ("AFTER", "after partial response on EP")
    assert agents["l2-anlotinib"]["CMSTDTC"] == "2021-05" and "CMSTRTPT" not in agents["l2-anlotinib"]


def test_cm_supportive_drugs_for_the_infusion_reactions() -> None:
    mp = [r for r in rows("CM") if r.rule.id == "cm-ae-treatment"]
    assert len(mp) == 2
    for r in mp:
        v = r.values
        assert (v["CMTRT"], v["CMDOSE"], v["CMDOSU"], v["CMROUTE"]) == ("methylprednisolone", 40, "mg", "INTRAVENOUS")
        assert v["CMINDC"] == "moderate dyspnea during the infusion of cadonilimab"


def test_prior_cancer_treatments_go_to_pr_and_cm_related_to_mh() -> None:
    (mh,) = [r for r in rows("MH") if r.values["MHSPID"] == "mh-lung-adenocarcinoma"]
    assert mh.values["MHCAT"] == "PRIOR CANCER"
    assert (mh.values["MHSTRTPT"], mh.values["MHSTTPT"]) == ("BEFORE", "15 years prior (to presentation in December 2020)")
    assert "MHSTDTC" not in mh.values
    assert mh.related == ["tx-adeno-resection", "tx-adeno-adjuvant"]
    (pr,) = [r.values for r in rows("PR") if r.values["PRSPID"] == "tx-adeno-resection"]
    assert pr["PRCAT"] == "PRIOR ANTI-CANCER THERAPY" and pr["PRINDC"] == "lung adenocarcinoma"
    (cm,) = [r.values for r in rows("CM") if r.values["CMSPID"] == "tx-adeno-adjuvant"]
    assert cm["CMCAT"] == "PRIOR ANTI-CANCER THERAPY" and cm["CMSCAT"] == "CHEMOTHERAPY"


def test_mh_primary_diagnosis_symptoms_and_comorbidity() -> None:
    mh = {r["MHSPID"]: r for r in values("MH")}
    assert mh["dx-lcnec"]["MHCAT"] == "PRIMARY DIAGNOSIS" and mh["dx-lcnec"]["MHSTDTC"] == "2020-12"
    assert {mh["mh-cough"]["MHCAT"], mh["mh-hemoptysis"]["MHCAT"]} == {"PRESENTING SYMPTOM"}
    assert mh["mh-restrictive-ventilation"]["MHENRTPT"] == "ONGOING"


def test_su_tobacco_without_invented_consumption() -> None:
    (su,) = rows("SU")
    assert (su.values["SUTRT"], su.values["SUCAT"], su.values["SUOCCUR"]) == ("TOBACCO", "TOBACCO", "Y")
    assert "SUDOSE" not in su.values  # pack-years not reported
    assert supp(su)["SMKSTAT"] == "significant smoking history"


def test_pr_brachytherapy_and_biopsy() -> None:
    pr = {r["PRSPID"]: r for r in values("PR")}
    assert pr["rt-i125"]["PRCAT"] == "RADIOTHERAPY" and pr["rt-i125"]["PRSTDTC"] == "2022-06"
    assert pr["pr-bronchoscopic-biopsy"]["PRCAT"] == "BIOPSY"
    assert pr["ra-2021-01"]["PRCAT"] == "IMAGING"  # the baseline CT is a procedure, not a response


def test_ae_grades_outcomes_seriousness() -> None:
    ae = {r["AESPID"]: r for r in values("AE")}
    assert len(ae) == 5
    for spid in ("ae-irr-c4", "ae-irr-c5"):
        assert ae[spid]["AETOXGR"] == "2"
        assert ae[spid]["AEDECOD"] == ae[spid]["AELLT"] == "Infusion related reaction"
        assert ae[spid]["AELLTCD"] == "10051792"
        assert (ae[spid]["AESER"], ae[spid]["AEOUT"], ae[spid]["AEACN"]) == ("N", "RECOVERED/RESOLVED", "DOSE NOT CHANGED")
        assert ae[spid]["AESTRTPT"] == "AFTER"
    assert ae["ae-resp-failure"]["AETOXGR"] == "5" and ae["ae-resp-failure"]["AELLTCD"] == "10038695"
    for spid in ("ae-resp-failure", "ae-lung-infection"):
        assert (ae[spid]["AEOUT"], ae[spid]["AESDTH"], ae[spid]["AESER"]) == ("FATAL", "Y", "Y")
        assert ae[spid]["AEENDTC"] == "2023-03"  # = DM.DTHDTC
    fistula = ae["ae-te-fistula"]
    assert "AEDECOD" not in fistula  # no CTCAE term: verbatim kept, not coded
    assert (fistula["AESHOSP"], fistula["AESDTH"], fistula["AEOUT"]) == ("Y", "N", "NOT RECOVERED/NOT RESOLVED")
    assert "AEREL" not in fistula and fistula["AERELNST"].startswith("most likely caused by the radioactive")


def test_ae_related_to_its_treatments_and_suspects() -> None:
    related = {r.values["AESPID"]: r.related for r in rows("AE")}
    assert related["ae-irr-c4"] == ["ae-irr-c4-mp", "l6-cadonilimab"]  # treatment given, suspected agent
    assert related["ae-irr-c5"] == ["ae-irr-c5-mp", "l6-cadonilimab"]
    assert related["ae-te-fistula"] == ["l6-anlotinib", "rt-i125"]  # suspected agent and procedure
    cm_entities = {r.entity for r in rows("CM")}
    assert {"ae-irr-c4-mp", "ae-irr-c5-mp"} <= cm_entities


def test_rs_recist_responses_link_to_their_line() -> None:
    recist = [r for r in values("RS") if r.get("RSCAT") == "RECIST 1.1"]
    assert [(r["RSDTC"], r["RSSTRESC"]) for r in recist] == [
        ("2021-03", "PR"), ("2021-05", "PD"), ("2021-07", "SD"), ("2022-02", "PD"), ("2022-03", "PR"),
        ("2022-05", "PD"), ("2022-10", "PD"), ("2022-11", "PD"), ("2023-01", "PR")]
    assert {r["RSTESTCD"] for r in recist} == {"OVRLRESP"}
    lines = {r["CMLNKGRP"] for r in values("CM") if "CMLNKGRP" in r}
    assert {r["RSLNKGRP"] for r in recist} <= lines
    assert [r["RSLNKGRP"] for r in recist if r["RSDTC"] == "2023-01"] == ["line-6"]


def test_rs_descriptive_response_kept_as_text() -> None:
    (desc,) = [r for r in values("RS") if r["RSTESTCD"] == "CLINRESP"]
    assert desc["RSORRES"] == "primary mass and lymph node metastases continued to shrink"
    assert "RSSTRESC" not in desc and desc["RSLNKGRP"] == "line-6"


def test_rs_ajcc_v8_staging() -> None:
    stage = {r["RSTESTCD"]: r for r in values("RS") if r.get("RSCAT") == "AJCC V8"}
    assert {k: v["RSORRES"] for k, v in stage.items()} == {"AJCC201": "T1b", "AJCC202": "N2", "AJCC203": "M0", "AJCC204": "IIIA"}
    assert {v["RSGRPID"] for v in stage.values()} == {"stg-initial"}


def test_mi_ihc_markers() -> None:
    qual = {r["MITESTCD"]: r for r in values("MI") if "MITSTDTL" not in r and r.get("MIMETHOD") == "IHC"}
    assert {k: v["MISTRESC"] for k, v in qual.items() if k in ("CGA", "SYP", "NCAM1", "KI67", "P40", "NKX2_1", "PDL1")} == {
        "CGA": "POSITIVE", "SYP": "POSITIVE", "NCAM1": "POSITIVE", "KI67": "POSITIVE", "P40": "NEGATIVE",
        "NKX2_1": "POSITIVE", "PDL1": "POSITIVE"}
    assert qual["CGA"]["MIORRES"] == "+" and qual["P40"]["MIORRES"] == "-"
    (tps,) = [r for r in values("MI") if r.get("MITSTDTL") == "TUMOR PROPORTION SCORE"]
    assert (tps["MITESTCD"], tps["MIORRES"], tps["MIORRESU"], tps["MISTRESN"]) == ("PDL1", "2", "%", 2)
    (ki67,) = [r for r in values("MI") if r["MITESTCD"] == "KI67" and "MITSTDTL" in r]
    assert ki67["MISTRESN"] == 80
    assert all(r["MISPEC"] == "TISSUE" and r["MIREFID"] == "sp-biopsy" for r in values("MI"))


def test_gf_variants_and_negatives() -> None:
    gf = values("GF")
    coding = {r["GFGRPID"]: r for r in gf if r["GFTSTDTL"] == "PREDICTED CODING SEQUENCE CHANGE"}
    assert {k: (v["GFTESTCD"], v["GFSYM"], v["GFORRES"]) for k, v in coding.items()} == {
        "var-rb1": ("SHRTVAR", "RB1", "c.137+1del"),
        "var-tp53-404": ("SNV", "TP53", "c.404G>T"),
        "var-tp53-393": ("SNV", "TP53", "c.393C>G")}
    assert {v["GFINHERT"] for v in coding.values()} == {"SOMATIC VARIATION"}
    vaf = {r["GFGRPID"]: r["GFSTRESN"] for r in gf if r["GFTSTDTL"] == "VARIANT READ DEPTH/READ DEPTH"}
    assert vaf == {"var-rb1": 55.1, "var-tp53-404": 64.2, "var-tp53-393": 63.7}
    negatives = [r for r in gf if r["GFTSTDTL"] == "DETECTION"]
    assert {r["GFSYM"] for r in negatives} == {"EGFR", "ALK", "ROS1", "MET", "KRAS", "RET", "NTRK", "BRAF"}
    assert {r["GFORRES"] for r in negatives} == {"NOT DETECTED"}
    assert {r["GFTESTCD"] for r in negatives} == {"SNV", "SHRTVAR", "SEQREAR"}
    assert {r["GFMETHOD"] for r in gf} == {"NEXT GENERATION TARGETED SEQUENCING"}
    assert all("GFTESTCD" in r and r["GFTESTCD"] not in ("RB1", "TP53") for r in gf)


def test_tu_tr_only_measured_and_new_lesions() -> None:
    tu = values("TU")
    assert sorted(r["TUORRES"] for r in tu if r["TUTESTCD"] == "TUMIDENT") == ["NEW", "NEW", "PRIMARY"]
    tr = {r["TRTESTCD"]: r for r in values("TR")}
    assert (tr["LDIAM"]["TRSTRESN"], tr["LPERP"]["TRSTRESN"], tr["LDIAM"]["TRORRESU"]) == (29.5, 19.1, "mm")
    assert {r["TRLNKID"] for r in values("TR")} == {"ts-baseline"}


def test_ds_and_dd_death() -> None:
    (ds,) = values("DS")
    assert (ds["DSDECOD"], ds["DSCAT"], ds["DSSTDTC"]) == ("DEATH", "DISPOSITION EVENT", "2023-03")
    dd = {r["DDTESTCD"]: r["DDORRES"] for r in values("DD")}
    assert dd == {"PRCDTH": "respiratory failure", "SECDTH": "lung infection"}


def test_co_keeps_progrp_course_and_transcriber_notes() -> None:
    co = values("CO")
    (progrp,) = [r for r in co if r["COREF"] == "lab-progrp" and "marked decline" in r["COVAL"]]
    assert "reference range 3-77.8 pg/mL" in progrp["COVAL"]
    (sic,) = [r for r in co if r.get("IDVARVAL") == "l1-tislelizumab"]
    assert (sic["RDOMAIN"], sic["IDVAR"]) == ("CM", "CMSPID") and "sic" in sic["COVAL"]
    assert all(len(r["COVAL"]) <= 200 for r in co)


def test_seed_unused_facts_are_the_documented_ones() -> None:
    """What SDTM does not carry for the seed is listed in docs/sdtm-mapping.md; nothing else goes unread."""
    unused = _mapped().unused_facts()
    allowed_prefixes = ("source.url", "patient.id", "specimens[", "diagnoses[0].specimen", "diagnoses[0].staging[0].system",
                        "diagnoses[0].metastases[1]", "diagnoses[0].metastases[2]", "pathology[4].value",
                        "pathology[7].value", "labs[0].category", "labs[0].reference_range.text",
                        "therapy_lines[5].start", "response_assessments[0].compared_to",
                        "adverse_events[2].seriousness_criteria", "adverse_events[3].seriousness_criteria",
                        "adverse_events[4].seriousness_criteria", "therapy_lines[1].cycles")
    assert [u for u in unused if not u.startswith(allowed_prefixes)] == []


# --- built and validated --------------------------------------------------------------------------------------

def test_seed_study_validates_without_unexpected_errors() -> None:
    from converter.sdtm.build import StudyBuilder
    from converter.validate.sdtm import validate_study

    ms, _ = _mapping_set()
    builder = StudyBuilder("CASEBRIDGE", ms.terminology.ct_version)
    builder.add(_mapped())
    issues = validate_study(builder.study(), ms.terminology)
    assert [str(i) for i in issues if i.severity == "error"] == []
    # Known and documented: the tracheoesophageal fistula has no CTCAE/MedDRA term (AEDECOD null, reported).
    uncoded = [str(i) for i in issues if i.rule == "sdtm.dictionary.uncoded"]
    assert len(uncoded) == 1 and "AEDECOD" in uncoded[0]


def _convert_minimal(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """Convert samples/minimal.json with ``extra`` top-level sections; return report.json."""
    case = json.loads(Path("samples/minimal.json").read_text(encoding="utf-8"))
    case.update(extra)
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case), encoding="utf-8")
    convert([str(path)], tmp_path / "out")
    return json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))


def _table(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    """The rows of a written Dataset-JSON dataset as dicts."""
    doc = json.loads((tmp_path / "out" / "sdtm" / "json" / f"{name}.json").read_text(encoding="utf-8"))
    names = [c["name"] for c in doc["columns"]]
    return [dict(zip(names, r)) for r in doc["rows"]]


def test_a_lab_test_name_over_40_characters_is_shortened_and_kept_whole_in_supplb(tmp_path: Path) -> None:
    """SDTMIG 4.5.3.1: --TEST at most 40 characters; the printed name travels in SUPPLB.LBTESTTX."""
    name = "soluble fragment of cytokeratin nineteen measured by chemiluminescence"
    report = _convert_minimal(tmp_path, labs=[{"id": "lab-1", "test": name, "category": "tumor marker",
                                               "date": "2022-11", "value": {"value": 3.1, "unit": "ng/mL"}}])
    assert [i["status"] for i in report["inputs"]] == ["converted"]
    assert [r["LBTEST"] for r in _table(tmp_path, "lb")] == ["soluble fragment of cytokeratin nineteen"]
    assert any(r["QNAM"] == "LBTESTTX" and r["QVAL"] == name for r in _table(tmp_path, "supplb"))
    assert any("shortened to 'soluble fragment of cytokeratin nineteen'" in u["reason"]
               for u in report["unmapped"]["minimal-json"])


def test_shorten_cuts_at_a_word_boundary_or_hard() -> None:
    assert shorten("short name", 40) == "short name"
    assert shorten("alpha beta gamma delta", 12) == "alpha beta"
    assert shorten("supercalifragilisticexpialidocious", 10) == "supercalif"
    assert shorten("alpha, beta gamma", 7) == "alpha"


def test_max_length_must_be_a_sensible_number(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree("mappings", folder)
    lb = folder / "sdtm" / "lb.yaml"
    lb.write_text(lb.read_text().replace("max_length: 40", "max_length: two"))
    problems = [i for i in lint_mappings(folder) if i.severity == "error"]
    assert any("max_length: 'two'" in i.message and "lb.yaml:17" in i.location for i in problems)


def test_a_long_variant_type_is_shortened_in_gftest_and_kept_whole_in_suppgf(tmp_path: Path) -> None:
    kind = "in-frame deletion-insertion predicted to disrupt the kinase domain"
    report = _convert_minimal(tmp_path, genomic_tests=[{"id": "gt-1", "date": "2022-11", "method": "NGS", "variants": [
        {"id": "v-1", "gene": "EGFR", "hgvs_c": "c.2235_2249del", "type": kind}]}])
    assert [i["status"] for i in report["inputs"]] == ["converted"]
    tests = {r["GFTEST"] for r in _table(tmp_path, "gf")}
    assert tests and all(t and len(t) <= 40 for t in tests)
    assert any(r["QNAM"] == "GFTYPTX" and r["QVAL"] == kind for r in _table(tmp_path, "suppgf"))
