"""The FHIR mappings (mappings/fhir/*.yaml + the FHIR terminology tables) applied to the seed case.

What the seed (samples/lcnec-cadonilimab-anlotinib.yaml, Oncology Letters 29:27, 2025) must become in FHIR R4 /
mCODE STU4: resource counts by type and profile, the key codes of standards-notes.md, references that resolve
inside the bundle, a clean validation (project validator and the official R4 JSON Schema), and uncoded terms
limited to the terms that have no verified code. docs/fhir-mapping.md explains every choice tested here.
"""

from __future__ import annotations

import collections
import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest

from converter.case.loader import CASE_SUFFIXES, load_case
from converter.mapping.lint import lint_folder
from converter.mapping.terminology import normalize
from converter.mapping.testing import run_file_tests

from conftest import reference_path

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "samples" / "lcnec-cadonilimab-anlotinib.yaml"
SAMPLES = sorted(p for p in (ROOT / "samples").iterdir() if p.suffix.lower() in CASE_SUFFIXES)
TERMINOLOGY = ROOT / "mappings" / "terminology"
MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition/"
SCT, LOINC, ICD10, ICDO3 = "http://snomed.info/sct", "http://loinc.org", "http://hl7.org/fhir/sid/icd-10-cm", "http://terminology.hl7.org/CodeSystem/icd-o-3"
HGNC, RXNORM, NCIT, UCUM = ("http://www.genenames.org", "http://www.nlm.nih.gov/research/umls/rxnorm",
                            "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "http://unitsofmeasure.org")

# The terminology tables the FHIR mappings use (meddra-ctcae is owned by the SDTM mappings), plus ucum ($quantity's
# default) and fixed-codes (the profile-fixed codes written literally in the templates).
_USED = {m.group(1) for f in (ROOT / "mappings" / "fhir").glob("*.yaml")
         for m in re.finditer(r"table: ([a-z0-9-]+)", f.read_text(encoding="utf-8"))}
FHIR_TABLES = sorted(TERMINOLOGY / f"{name}.csv" for name in (_USED | {"ucum", "fixed-codes"}) - {"meddra-ctcae"})


@pytest.fixture(scope="module")
def mapping_set() -> Any:
    ms, _ = lint_folder()
    return ms


@pytest.fixture(scope="module")
def mapped(mapping_set: Any) -> Any:
    return mapping_set.apply(load_case(SEED), frozenset({"fhir"}))


@pytest.fixture(scope="module")
def resources(mapped: Any) -> list[dict[str, Any]]:
    return mapped.resources


def bundle_of(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]}


def profile(resource: dict[str, Any]) -> str:
    return ((resource.get("meta") or {}).get("profile") or [""])[0].rsplit("/", 1)[-1]


def codings(node: Any) -> list[tuple[str, str]]:
    """Every (system, code) in a FHIR node."""
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        if isinstance(node.get("system"), str) and isinstance(node.get("code"), str):
            out.append((node["system"], node["code"]))
        for value in node.values():
            out += codings(value)
    elif isinstance(node, list):
        for value in node:
            out += codings(value)
    return out


def by_profile(resources: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in resources if profile(r) == name]


def component(obs: dict[str, Any], loinc: str) -> dict[str, Any]:
    found = [c for c in obs.get("component", []) if (LOINC, loinc) in codings(c["code"])]
    assert len(found) == 1, f"component {loinc} in {obs['id']}"
    return found[0]


# ------------------------------------------------------------------------------------------------ mappings

def test_fhir_mappings_lint_clean() -> None:
    _, issues = lint_folder()
    mine = [i for i in issues if str(i.location).startswith("fhir/")
            or any(p.name in str(i.location) for p in FHIR_TABLES)]
    assert mine == [], "\n".join(map(str, mine))


def test_mapping_file_tests_pass(mapping_set: Any) -> None:
    failures = []
    for mf in mapping_set.files:
        if mf.target != "fhir":
            continue
        outcomes = run_file_tests(mapping_set, mf)
        assert outcomes, f"{mf.name} has no tests: block"
        failures += [f"{o.file}:{o.line} {o.name}: {d}" for o in outcomes for d in o.diffs]
    assert failures == [], "\n".join(failures)


def test_every_approved_code_says_where_it_was_verified() -> None:
    for path in FHIR_TABLES:
        with path.open(encoding="utf-8", newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), 2):
                if row["status"] == "approved" and row["code"]:
                    assert row["verified_in"].strip(), f"{path.name}:{n} {row['text']} {row['code']} has no verified_in"


def test_every_literal_code_in_the_templates_is_an_approved_table_row(mapping_set: Any) -> None:
    """Codes written literally in the templates (profile-fixed codes, fallbacks) must be approved rows too."""
    from ruamel.yaml import YAML

    checked = json.loads((ROOT / "schemas" / "fhir" / "code-systems.json").read_text())["systems"]
    checked = {url for url, spec in checked.items() if spec.get("check")}
    literal: list[tuple[str, str, str]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            system, code = node.get("system"), node.get("code")
            if isinstance(system, str) and isinstance(code, (str, int)) and not str(code).startswith("$"):
                literal.append((where, system, str(code)))
            for value in node.values():
                walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)
    for path in sorted((ROOT / "mappings" / "fhir").glob("*.yaml")):
        doc = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
        walk(doc.get("rules"), path.name)
    assert literal
    unknown = [(w, s, c) for w, s, c in literal if s in checked and not mapping_set.terminology.known_code(s, c)]
    assert unknown == []


def test_mapping_is_deterministic(mapping_set: Any, resources: list[dict[str, Any]]) -> None:
    again = mapping_set.apply(load_case(SEED), frozenset({"fhir"})).resources
    assert json.dumps(again, sort_keys=True) == json.dumps(resources, sort_keys=True)


# ------------------------------------------------------------------------------------------------ counts

def test_resource_counts_by_type_and_profile(resources: list[dict[str, Any]]) -> None:
    counts = collections.Counter((r["resourceType"], profile(r)) for r in resources)
    assert counts == {
        ("Patient", "mcode-cancer-patient"): 1,
        ("Condition", "mcode-primary-cancer-condition"): 2,       # LCNEC + the prior lung adenocarcinoma
        ("Condition", "mcode-secondary-cancer-condition"): 3,     # one per metastasis
        ("Condition", ""): 3,                                     # cough, hemoptysis, restrictive ventilation disorder
        ("Observation", "mcode-tnm-stage-group"): 1,
        ("Observation", "mcode-tnm-primary-tumor-category"): 1,
        ("Observation", "mcode-tnm-regional-nodes-category"): 1,
        ("Observation", "mcode-tnm-distant-metastases-category"): 1,
        ("Observation", "mcode-tumor-size"): 1,
        ("Observation", "mcode-tumor-marker-test"): 8,            # 8 IHC markers
        ("Observation", ""): 2,                                   # H&E morphology, proGRP without values
        ("Observation", "mcode-genomic-region-studied"): 1,
        ("Observation", "mcode-genomic-variant"): 11,             # 3 variants + 8 pertinent negatives
        ("Observation", "mcode-cancer-disease-status"): 11,       # one per response assessment
        ("Observation", "us-core-smokingstatus"): 1,
        ("DiagnosticReport", "mcode-genomics-report"): 1,
        ("Specimen", "mcode-human-specimen"): 1,
        ("MedicationRequest", "mcode-cancer-related-medication-request"): 13,          # 11 agents + 2 AE treatments
        ("MedicationAdministration", "mcode-cancer-related-medication-administration"): 13,
        ("CarePlan", ""): 6,                                      # one per line of therapy
        ("Procedure", ""): 4,                                     # CT, biopsy, PFT, prior adjuvant chemotherapy
        ("Procedure", "mcode-cancer-related-surgical-procedure"): 1,  # prior resection
        ("Procedure", "mcode-radiotherapy-course-summary"): 1,    # I-125 seeds
        ("AdverseEvent", ""): 5,
        ("Provenance", ""): 1,
    }


# ------------------------------------------------------------------------------------------------ key codes

def test_patient(resources: list[dict[str, Any]]) -> None:
    (patient,) = by_profile(resources, "mcode-cancer-patient")
    assert patient["identifier"] == [{"system": "urn:casebridge:case-id", "value": "lcnec-cadonilimab-anlotinib"}]
    assert patient["name"][0]["extension"][0]["valueCode"] == "masked"
    assert patient["gender"] == "male"
    assert patient["deceasedDateTime"] == "2023-03"
    assert patient["address"] == [{"country": "China"}]


def test_primary_cancer_condition(resources: list[dict[str, Any]]) -> None:
    lcnec = [r for r in by_profile(resources, "mcode-primary-cancer-condition")
             if r["code"]["text"] == "pulmonary large cell neuroendocrine carcinoma"]
    assert len(lcnec) == 1
    cond = lcnec[0]
    assert codings(cond["code"]) == [(ICD10, "C34.9")]
    hist = cond["extension"][0]
    assert hist["url"] == MCODE + "mcode-histology-morphology-behavior"
    assert codings(hist["valueCodeableConcept"]) == [(SCT, "128628002"), (ICDO3, "8013/3")]
    assert codings(cond["bodySite"]) == [(SCT, "39607008")]
    assert cond["clinicalStatus"]["coding"][0]["code"] == "active"
    assert cond["verificationStatus"]["coding"][0]["code"] == "confirmed"
    assert cond["category"][0]["coding"][0]["code"] == "problem-list-item"
    assert cond["onsetDateTime"] == "2020-12"
    (stage_group,) = by_profile(resources, "mcode-tnm-stage-group")
    assert cond["stage"][0]["assessment"] == [{"reference": f"urn:uuid:{stage_group['id']}"}]
    assert cond["stage"][0]["summary"] == {"text": "IIIA"}           # IIIA: no verified SNOMED CT code
    assert (SCT, "897275008") in codings(cond["stage"][0]["type"])


def test_secondary_cancer_conditions(resources: list[dict[str, Any]]) -> None:
    secondary = by_profile(resources, "mcode-secondary-cancer-condition")
    assert [codings(r["code"]) for r in secondary] == [[(ICD10, "C77.1")], [(ICD10, "C77.2")], [(ICD10, "C77.1")]]
    primary = next(r for r in resources if r.get("code", {}).get("text") == "pulmonary large cell neuroendocrine carcinoma")
    for r in secondary:
        assert r["extension"][0]["valueReference"] == {"reference": f"urn:uuid:{primary['id']}"}


def test_tnm(resources: list[dict[str, Any]]) -> None:
    (group,) = by_profile(resources, "mcode-tnm-stage-group")
    assert codings(group["code"]) == [(SCT, "399537006")]
    assert group["valueCodeableConcept"] == {"text": "IIIA"}
    assert codings(group["method"]) == [(SCT, "897275008")]
    assert len(group["hasMember"]) == 3
    for name, code, value in [("mcode-tnm-primary-tumor-category", "399504009", "1228895000"),
                              ("mcode-tnm-regional-nodes-category", "399534004", "1229978004"),
                              ("mcode-tnm-distant-metastases-category", "399387003", "1229901006")]:
        (obs,) = by_profile(resources, name)
        assert codings(obs["code"]) == [(SCT, code)]
        assert codings(obs["valueCodeableConcept"]) == [(SCT, value)]


def test_tumor_size(resources: list[dict[str, Any]]) -> None:
    (size,) = by_profile(resources, "mcode-tumor-size")
    assert codings(size["code"]) == [(LOINC, "21889-1")]
    assert component(size, "33728-7")["valueQuantity"] == {"value": 29.5, "unit": "mm", "system": UCUM, "code": "mm"}
    assert component(size, "33729-5")["valueQuantity"]["value"] == 19.1
    assert codings(size["method"]) == [(SCT, "77477000")]


def test_tumor_markers(resources: list[dict[str, Any]]) -> None:
    markers = {r["code"]["text"]: r for r in by_profile(resources, "mcode-tumor-marker-test")}
    expected = {"chromogranin A": "10471-1", "synaptophysin": "10514-8", "CD56": "10442-2",
                "thyroid transcription factor-1": "40564-7", "Ki-67": "29593-1", "PD-L1": "83053-9"}
    for text, loinc in expected.items():
        assert codings(markers[text]["code"]) == [(LOINC, loinc)], text
    for text in ("chromogranin A", "synaptophysin", "CD56", "thyroid transcription factor-1"):
        assert codings(markers[text]["valueCodeableConcept"]) == [(LOINC, "LA6576-8")]
    for text in ("NapsinA", "P40"):                                  # LOINC UNVERIFIED: text only
        assert "coding" not in markers[text]["code"]
        assert codings(markers[text]["valueCodeableConcept"]) == [(LOINC, "LA6577-6")]
    assert markers["Ki-67"]["valueQuantity"] == {"value": 80, "unit": "%", "system": UCUM, "code": "%"}
    assert markers["PD-L1"]["valueQuantity"]["value"] == 2
    assert "valueCodeableConcept" not in markers["PD-L1"]
    specimen = by_profile(resources, "mcode-human-specimen")[0]
    assert all(m["specimen"] == {"reference": f"urn:uuid:{specimen['id']}"} for m in markers.values())


def test_progrp_without_values(resources: list[dict[str, Any]]) -> None:
    (lab,) = [r for r in resources if r.get("code", {}).get("text") == "gastrin-releasing peptide precursor"]
    assert "meta" not in lab                              # mcode-tumor-marker-test requires value[x]
    assert "coding" not in lab["code"]                    # proGRP LOINC UNVERIFIED (2327-5... are GRP)
    assert not any(k.startswith("value") for k in lab)
    assert lab["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert lab["referenceRange"][0]["low"] == {"value": 3, "unit": "pg/mL", "system": UCUM, "code": "pg/mL"}
    assert lab["referenceRange"][0]["high"]["value"] == 77.8
    assert lab["interpretation"][0]["coding"][0]["code"] == "D"
    assert lab["interpretation"][0]["text"] == "marked decline"


def test_genomics(resources: list[dict[str, Any]]) -> None:
    (report,) = by_profile(resources, "mcode-genomics-report")
    assert codings(report["code"]) == [(LOINC, "51969-4")]
    (region,) = by_profile(resources, "mcode-genomic-region-studied")
    variants = by_profile(resources, "mcode-genomic-variant")
    assert {r["reference"] for r in report["result"]} == {f"urn:uuid:{r['id']}" for r in [region, *variants]}
    present = [v for v in variants if (LOINC, "LA9633-4") in codings(v["valueCodeableConcept"])]
    absent = [v for v in variants if (LOINC, "LA9634-2") in codings(v["valueCodeableConcept"])]
    assert len(present) == 3 and len(absent) == 8
    rb1 = next(v for v in present if component(v, "48018-6")["valueCodeableConcept"]["text"] == "RB1")
    assert codings(component(rb1, "48018-6")["valueCodeableConcept"]) == [(HGNC, "HGNC:9884")]
    assert component(rb1, "48004-6")["valueCodeableConcept"]["coding"][0]["code"] == "c.137+1del"
    assert component(rb1, "81258-6")["valueQuantity"]["value"] == 55.1
    assert codings(component(rb1, "48002-0")["valueCodeableConcept"]) == [(LOINC, "LA6684-0")]
    tp53 = [v for v in present if component(v, "48018-6")["valueCodeableConcept"]["text"] == "TP53"]
    assert all(codings(component(v, "48018-6")["valueCodeableConcept"]) == [(HGNC, "HGNC:11998")] for v in tp53)
    negative_genes = {component(v, "48018-6")["valueCodeableConcept"]["text"] for v in absent}
    assert negative_genes == {"EGFR", "ALK", "ROS1", "MET", "KRAS", "RET", "NTRK", "BRAF"}


def test_medications_and_lines(resources: list[dict[str, Any]]) -> None:
    requests = by_profile(resources, "mcode-cancer-related-medication-request")
    admins = by_profile(resources, "mcode-cancer-related-medication-administration")
    by_drug = {r["medicationCodeableConcept"]["text"]: r for r in requests}
    for drug, rxnorm in [("cisplatin", "2555"), ("etoposide", "4179"), ("irinotecan", "51499"), ("capecitabine", "194000")]:
        assert codings(by_drug[drug]["medicationCodeableConcept"]) == [(RXNORM, rxnorm)]
    cisplatin = by_drug["cisplatin"]
    assert cisplatin["extension"][0] == {
        "url": MCODE + "mcode-normalization-basis",
        "valueCodeableConcept": {"coding": [{"system": SCT, "code": "301898006", "display": "Body surface area (observable entity)"}]}}
    dosage = cisplatin["dosageInstruction"][0]
    assert dosage["doseAndRate"][0]["doseQuantity"] == {"value": 25, "unit": "mg/m2", "system": UCUM, "code": "mg/m2"}
    assert codings(dosage["route"]) == [(SCT, "47625008")]
    assert dosage["timing"]["repeat"]["boundsPeriod"] == {"start": "2021-01", "end": "2021-05"}
    assert codings(by_drug["capecitabine"]["dosageInstruction"][0]["route"]) == [(SCT, "26643006")]
    primary = next(r for r in resources if r.get("code", {}).get("text") == "pulmonary large cell neuroendocrine carcinoma")
    assert all(r["reasonReference"] == [{"reference": f"urn:uuid:{primary['id']}"}] for r in requests if "reasonReference" in r)
    assert all("effectiveDateTime" in a or "effectivePeriod" in a for a in admins)
    request_ids = {f"urn:uuid:{r['id']}" for r in requests}
    assert all(a["request"]["reference"] in request_ids for a in admins)
    plans = [r for r in resources if r["resourceType"] == "CarePlan"]
    assert [p["title"].split(":")[0] for p in plans] == [f"Line {n}" for n in range(1, 7)]
    assert sum(len(p["activity"]) for p in plans) == 11
    assert all(a["reference"]["reference"] in request_ids for p in plans for a in p["activity"])


def test_procedures(resources: list[dict[str, Any]]) -> None:
    (rt,) = by_profile(resources, "mcode-radiotherapy-course-summary")
    assert codings(rt["code"]) == [(SCT, "1217123003")]
    modality, technique = rt["extension"][0]["extension"]
    assert codings(modality["valueCodeableConcept"]) == [(SCT, "169359004")]
    assert codings(technique["valueCodeableConcept"]) == [(SCT, "113120007")]
    assert rt["performedPeriod"] == {"start": "2022-06", "end": "2022-06"}
    (resection,) = by_profile(resources, "mcode-cancer-related-surgical-procedure")
    assert resection["code"]["text"] == "lung adenocarcinoma resection"
    assert resection["performedString"] == "15 years prior"
    biopsy = next(r for r in resources if r["resourceType"] == "Procedure" and r["code"]["text"] == "fiber bronchoscopy biopsy")
    assert biopsy["performedDateTime"] == "2020-12"


def test_disease_status(resources: list[dict[str, Any]]) -> None:
    statuses = by_profile(resources, "mcode-cancer-disease-status")
    assert all(codings(s["code"]) == [(LOINC, "97509-4")] for s in statuses)
    values = [(s["effectiveDateTime"], s.get("valueCodeableConcept", {}).get("text"),
               [c for _, c in codings(s.get("valueCodeableConcept", {}))]) for s in statuses]
    assert values == [
        ("2021-01", None, []),                                          # baseline: dataAbsentReason
        ("2021-03", "partial response", ["268910001"]),
        ("2021-05", "progressive disease", ["271299001"]),
        ("2021-07", "stable disease", ["359746009"]),
        ("2022-02", "progressive disease", ["271299001"]),
        ("2022-03", "partial response", ["268910001"]),
        ("2022-05", "progressive disease", ["271299001"]),
        ("2022-10", "progressive disease", ["271299001"]),
        ("2022-11", "progressive disease", ["271299001"]),
        ("2023-01", "partial response", ["268910001"]),
        ("2023-03", "primary mass and lymph node metastases continued to shrink", []),   # descriptive
    ]
    assert statuses[0]["dataAbsentReason"]["coding"][0]["code"] == "not-applicable"
    recist = [s for s in statuses if s.get("method", {}).get("text") == "RECIST 1.1"]
    assert len(recist) == 9
    evidence = statuses[1]["extension"][0]
    assert evidence["url"] == MCODE + "mcode-cancer-disease-status-evidence-type"
    assert codings(evidence["valueCodeableConcept"]) == [(SCT, "363679005")]


def test_adverse_events(resources: list[dict[str, Any]]) -> None:
    events = [r for r in resources if r["resourceType"] == "AdverseEvent"]
    grade = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/ae-grade"
    grades = [[c for _, c in codings([e for e in a.get("extension", []) if e["url"] == grade])] for a in events]
    assert grades == [["C41339"], ["C41339"], [], [], ["C48275"]]
    assert [a["seriousness"]["coding"][0]["code"] for a in events] == ["non-serious", "non-serious", "serious", "serious", "serious"]
    outcomes = [[c for s, c in codings(a["outcome"]) if s.endswith("adverse-event-outcome")] for a in events]
    assert outcomes == [["resolved"], ["resolved"], ["ongoing"], ["fatal"], ["fatal"]]
    admins = {f"urn:uuid:{r['id']}": r for r in by_profile(resources, "mcode-cancer-related-medication-administration")}
    irr = events[0]
    (suspect,) = irr["suspectEntity"]
    assert admins[suspect["instance"]["reference"]]["medicationCodeableConcept"]["text"] == "cadonilimab"
    mitigating = [e for e in irr["extension"] if e["url"].endswith("/mitigating-action")]
    assert admins[mitigating[0]["extension"][0]["valueReference"]["reference"]]["medicationCodeableConcept"]["text"] == "methylprednisolone"
    fistula = events[2]
    kinds = sorted(next(r["resourceType"] for r in resources if f"urn:uuid:{r['id']}" == s["instance"]["reference"])
                   for s in fistula["suspectEntity"])
    assert kinds == ["MedicationAdministration", "Procedure"]


def test_smoking_status_is_not_forced_into_a_code(resources: list[dict[str, Any]]) -> None:
    (smoking,) = by_profile(resources, "us-core-smokingstatus")
    assert codings(smoking["code"]) == [(LOINC, "72166-2")]
    assert smoking["valueCodeableConcept"] == {"text": "significant smoking history"}
    assert smoking["_effectiveDateTime"]["extension"][0]["valueCode"] == "unknown"


def test_provenance(resources: list[dict[str, Any]]) -> None:
    (prov,) = [r for r in resources if r["resourceType"] == "Provenance"]
    assert prov["entity"][0]["what"]["identifier"] == {"system": "https://doi.org", "value": "10.3892/ol.2024.14773"}
    ids = {f"urn:uuid:{r['id']}" for r in resources}
    assert {t["reference"] for t in prov["target"]} <= ids
    assert len(prov["target"]) >= 50


# ------------------------------------------------------------------------------------------------ integrity

def test_every_reference_resolves_inside_the_bundle(resources: list[dict[str, Any]]) -> None:
    ids = {f"urn:uuid:{r['id']}" for r in resources}
    refs = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                refs.append(node["reference"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(resources)
    assert refs
    assert [r for r in refs if r not in ids] == []


def test_uncoded_terms_are_exactly_those_without_a_verified_code(mapped: Any) -> None:
    """Every term kept as text has no verified code (standards-notes.md / shared reference); nothing else is uncoded."""
    # AE terms are looked up in meddra-ctcae, owned by the SDTM mappings: only these two may stay uncoded there.
    ae = {normalize(u["text"]) for u in mapped.unmapped if "meddra-ctcae" in u["reason"]}
    assert ae <= {normalize("tracheoesophageal fistula"), normalize("moderate dyspnea during the infusion of cadonilimab")}
    uncoded = {normalize(u["text"]) for u in mapped.unmapped if "meddra-ctcae" not in u["reason"]}
    assert uncoded == {normalize(t) for t in [
        "IIIA",                                           # AJCC stage IIIA: SNOMED CT UNVERIFIED
        "NapsinA", "P40",                                 # LOINC UNVERIFIED
        "gastrin-releasing peptide precursor",            # proGRP LOINC UNVERIFIED
        "temozolomide", "vinorelbine", "methylprednisolone",   # RxNorm UNVERIFIED
        "anlotinib", "Tisleslizumab", "cadonilimab",      # no RxNorm
        "EGFR", "ROS1", "KRAS", "RET",                    # HGNC ids not in the shared reference
        "NTRK",                                           # a gene family, not one HGNC gene
        "significant smoking history",                    # matches no smoking-status value
        "cough", "hemoptysis", "severe restrictive ventilation disorder",
        "chest", "fiber bronchoscopy biopsy", "pulmonary function testing",
        "lung adenocarcinoma resection", "four cycles of adjuvant chemotherapy",
        "histology and immunohistochemistry of the bronchoscopic biopsy",
        "progressive disease",                            # as a treatment end reason: no equivalent code
        "progressive disease (new retroperitoneal lymph node metastases)",
        "progressive disease (new mediastinal 4R lymph node metastases)",
        "primary mass and lymph node metastases continued to shrink",   # descriptive response
    ]}
    # and none of them is a term standards-notes.md gives a verified code for
    verified = {"pulmonary large cell neuroendocrine carcinoma", "large cell neuroendocrine carcinoma", "lung",
                "chromogranin a", "synaptophysin", "cd56", "thyroid transcription factor-1", "ki-67", "pd-l1",
                "cisplatin", "etoposide", "irinotecan", "capecitabine", "intravenous", "oral", "rb1", "tp53",
                "t1b", "n2", "m0", "partial response", "stable disease", "computed tomography", "somatic",
                "infusion related reaction", "lung infection", "respiratory failure", "+", "-", "positive", "negative"}
    assert not (uncoded & verified)


def test_seed_validates_clean_with_the_project_validator(mapping_set: Any, resources: list[dict[str, Any]]) -> None:
    fhir = pytest.importorskip("converter.validate.fhir")
    issues = fhir.validate_bundle(bundle_of(resources), mapping_set.terminology, deep=True)
    assert [str(i) for i in issues if i.severity == "error"] == []


def test_seed_validates_against_the_official_r4_json_schema(resources: list[dict[str, Any]]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(reference_path("fhir", "r4-json-schema", "fhir.schema.r4-4.0.1.json").read_text())
    errors = list(jsonschema.Draft6Validator(schema).iter_errors(bundle_of(resources)))
    assert [e.message[:200] for e in errors] == []


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_maps_to_a_valid_bundle(mapping_set: Any, path: Path) -> None:
    """The rules are generic: other cancers, relative dates, missing data all give valid FHIR."""
    fhir = pytest.importorskip("converter.validate.fhir")
    resources = mapping_set.apply(load_case(path), frozenset({"fhir"})).resources
    assert any(r["resourceType"] == "Patient" for r in resources)
    issues = fhir.validate_bundle(bundle_of(resources), mapping_set.terminology)
    assert [str(i) for i in issues if i.severity == "error"] == []
