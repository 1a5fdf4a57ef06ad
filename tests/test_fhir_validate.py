"""FHIR validators: structure (R4 JSON Schema subset), profile rules, codes, references, deep (R4B) mode."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT, reference_path
from converter.mapping.terminology import Terminology, TerminologyTable
from converter.validate.fhir import check_models, validate_bundle, validate_ndjson, validate_resource
from converter.validate.fhir_schema import definitions as fhir_schema_definitions
from converter.validate.fhir_schema import supported_types
from converter.validate.issues import Issue

MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
REQUIRED_PROFILES = (
    "cancer-patient", "primary-cancer-condition", "secondary-cancer-condition", "tnm-stage-group",
    "tnm-primary-tumor-category", "tnm-regional-nodes-category", "tnm-distant-metastases-category",
    "tumor-marker-test", "tumor-size", "genomics-report", "genomic-variant", "genomic-region-studied",
    "cancer-related-medication-administration", "cancer-related-medication-request",
    "cancer-related-surgical-procedure", "radiotherapy-course-summary", "cancer-disease-status", "human-specimen",
    "history-of-metastatic-cancer", "ecog-performance-status", "karnofsky-performance-status",
)
SMOKING = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-smokingstatus"


def _tool(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module   # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def _terminology(*codes: tuple[str, str]) -> Terminology:
    table = TerminologyTable("test", Path("test.csv"), codes=set(codes))
    return Terminology(tables={"test": table})


def _all_codes(resource: object) -> set[tuple[str, str]]:
    """Every (system, code) in a resource: a terminology that knows them all keeps the code check quiet."""
    found: set[tuple[str, str]] = set()
    stack = [resource]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("system"), str) and isinstance(item.get("code"), str):
                found.add((item["system"], item["code"]))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _errors(issues: list[Issue], prefix: str = "") -> list[Issue]:
    return [i for i in issues if i.severity == "error" and i.rule.startswith(prefix)]


def _example(name: str) -> dict:
    return json.loads(reference_path("fhir", "mcode-stu4", "example", f"{name}.json").read_text(encoding="utf-8"))


def _profile_errors(resource: dict) -> list[Issue]:
    return _errors(validate_resource(resource, _terminology(*_all_codes(resource))), "fhir.profile")


def _mcode_example_files() -> list[Path]:
    folder = ROOT.parent / "shared" / "reference" / "fhir" / "mcode-stu4" / "example"
    files = []
    for path in sorted(folder.glob("*.json")):
        profiles = json.loads(path.read_text(encoding="utf-8")).get("meta", {}).get("profile", [])
        if any(p.startswith(MCODE) or p == SMOKING for p in profiles):
            files.append(path)
    return files


# ---- generated data files ------------------------------------------------------------------------------

def test_subset_schema_is_up_to_date() -> None:
    full = json.loads(reference_path("fhir", "r4-json-schema", "fhir.schema.r4-4.0.1.json").read_text())
    expected = _tool("build_fhir_schema").build_subset(full)
    committed = json.loads((ROOT / "schemas" / "fhir" / "r4-subset.schema.json").read_text())
    assert committed == expected, "run tools/build_fhir_schema.py"
    assert "Observation" in committed["definitions"] and "Account" not in committed["definitions"]


def test_profile_rules_are_up_to_date() -> None:
    expected = _tool("build_profile_rules").build_rules(reference_path("fhir"))
    committed = json.loads((ROOT / "schemas" / "fhir" / "profile-rules.json").read_text())
    assert committed == expected, "run tools/build_profile_rules.py"


def test_rules_cover_every_mcode_profile() -> None:
    rules = json.loads((ROOT / "schemas" / "fhir" / "profile-rules.json").read_text())["profiles"]
    mcode = [u for u in rules if u.startswith(MCODE)]
    assert len(mcode) == 53
    for name in REQUIRED_PROFILES:
        assert MCODE + name in rules, name
    assert SMOKING in rules
    assert rules[MCODE + "cancer-disease-status"]["children"][0] == {
        "id": "Observation.code", "keys": ["code"],
        "pattern": {"coding": [{"system": LOINC, "code": "97509-4"}]},
    }


# ---- profiles ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", _mcode_example_files(), ids=lambda p: p.stem)
def test_official_mcode_example_passes_profiles(path: Path) -> None:
    reference_path("fhir", "mcode-stu4", "example")
    resource = json.loads(path.read_text(encoding="utf-8"))
    issues = validate_resource(resource, _terminology(*_all_codes(resource)))
    assert _errors(issues, "fhir.profile") == []
    unknown = [i for i in issues if i.rule == "fhir.profile.unknown"]
    assert all(MCODE not in i.message for i in unknown), unknown


def test_mcode_examples_exist() -> None:
    reference_path("fhir", "mcode-stu4", "example")
    assert len(_mcode_example_files()) > 100


def test_wrong_fixed_code() -> None:
    obs = _example("Observation-cancer-disease-status-jenny-m")
    obs["code"]["coding"][0]["code"] = "21908-9"
    errors = _profile_errors(obs)
    assert [(e.rule, e.location) for e in errors] == [
        ("fhir.profile.fixed", "Observation/cancer-disease-status-jenny-m.code")]
    assert "97509-4" in errors[0].message and "mcode-cancer-disease-status" in errors[0].message


def test_missing_required_element() -> None:
    obs = _example("Observation-tnm-clinical-stage-group-jenny-m")
    del obs["method"]
    assert [(e.rule, e.location) for e in _profile_errors(obs)] == [
        ("fhir.profile.required", "Observation/tnm-clinical-stage-group-jenny-m.method")]


def test_missing_required_slice() -> None:
    obs = _example("Observation-tumor-size-jenny-m")
    obs["component"][0]["code"]["coding"][0]["code"] = "33729-5"   # longest dimension → other dimension
    assert [(e.rule, e.location) for e in _profile_errors(obs)] == [
        ("fhir.profile.required", "Observation/tumor-size-jenny-m.component:tumorLongestDimension")]


def test_slice_maximum() -> None:
    obs = _example("Observation-tumor-size-jenny-m")
    other = copy.deepcopy(obs["component"][0])
    other["code"]["coding"][0]["code"] = "33729-5"
    obs["component"] += [other, copy.deepcopy(other), copy.deepcopy(other)]
    assert [(e.rule, e.location) for e in _profile_errors(obs)] == [
        ("fhir.profile.cardinality", "Observation/tumor-size-jenny-m.component:tumorOtherDimension")]


def test_child_required_only_when_parent_present() -> None:
    admin = _example("MedicationAdministration-cancer-related-medication-admin-doxorubicin-jenny-m")
    admin.pop("performer", None)
    assert _profile_errors(admin) == []
    admin["performer"] = [{"function": {"text": "administering nurse"}}]
    assert [(e.rule, e.location) for e in _profile_errors(admin)] == [
        ("fhir.profile.required", "MedicationAdministration/cancer-related-medication-admin-doxorubicin-jenny-m"
                                  ".performer[0].actor")]


def test_code_outside_required_binding() -> None:
    obs = _example("Observation-tumor-size-jenny-m")
    obs["component"][0]["valueQuantity"]["code"] = "kg"
    errors = _profile_errors(obs)
    assert [(e.rule, e.location) for e in errors] == [
        ("fhir.profile.binding", "Observation/tumor-size-jenny-m.component[0].valueQuantity")]
    assert "mcode-tumor-size-units-vs" in errors[0].message


def test_extension_value_outside_required_binding() -> None:
    admin = _example("MedicationAdministration-cancer-related-medication-admin-doxorubicin-jenny-m")
    admin["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = "128628002"
    errors = _profile_errors(admin)
    assert [(e.rule, e.location) for e in errors] == [
        ("fhir.profile.binding",
         "MedicationAdministration/cancer-related-medication-admin-doxorubicin-jenny-m.extension[0]"
         ".valueCodeableConcept")]
    assert "mcode-normalization-basis" in errors[0].message


def test_missing_required_extension() -> None:
    proc = _example("Procedure-radiotherapy-treatment-summary-chest-wall-jenny-m")
    index = next(i for i, e in enumerate(proc["extension"]) if e["url"].endswith("modality-and-technique"))
    proc["extension"][index]["extension"] = [
        e for e in proc["extension"][index]["extension"] if not e["url"].endswith("radiotherapy-modality")]
    errors = _profile_errors(proc)
    assert [(e.rule, e.location) for e in errors] == [
        ("fhir.profile.required",
         f"Procedure/radiotherapy-treatment-summary-chest-wall-jenny-m.extension[{index}].extension:modality")]
    assert "mcode-radiotherapy-modality-and-technique" in errors[0].message


def test_prohibited_element() -> None:
    obs = _example("Observation-genomic-region-studied-jenny-m")
    obs["valueString"] = "BRCA1"
    assert [(e.rule, e.location) for e in _profile_errors(obs)] == [
        ("fhir.profile.prohibited", "Observation/genomic-region-studied-jenny-m.value[x]")]


def test_choice_type_removed_by_profile() -> None:
    obs = _example("Observation-cancer-disease-status-jenny-m")
    del obs["valueCodeableConcept"]
    obs["valueString"] = "improved"
    assert [(e.rule, e.location) for e in _profile_errors(obs)] == [
        ("fhir.profile.type", "Observation/cancer-disease-status-jenny-m.valueString")]


def test_base_rules_apply_without_profile() -> None:
    obs = {"resourceType": "Observation", "id": "o1", "code": {"text": "x"},
           "valueString": "a", "valueBoolean": True}
    assert [(e.rule, e.location) for e in _profile_errors(obs)] == [
        ("fhir.profile.required", "Observation/o1.status"),
        ("fhir.profile.cardinality", "Observation/o1.value[x]"),
    ]


def test_profile_of_wrong_type_and_unknown_profile() -> None:
    obs = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
           "meta": {"profile": [MCODE + "cancer-patient", "http://example.org/StructureDefinition/x"]}}
    issues = validate_resource(obs, _terminology())
    assert [(i.severity, i.rule, i.location) for i in issues] == [
        ("error", "fhir.profile.type", "Observation/o1.meta.profile[0]"),
        ("warning", "fhir.profile.unknown", "Observation/o1.meta.profile[1]"),
    ]


# ---- structure -----------------------------------------------------------------------------------------

def _r4_examples() -> list[Path]:
    return sorted((ROOT.parent / "shared" / "reference" / "fhir" / "r4-core" / "examples").glob("*.json"))


# Official R4 examples that nest resources of types CaseBridge does not emit: reported as unsupported.
R4_NESTED_UNSUPPORTED = {
    "Specimen-101": [("fhir.schema.unsupported", "Specimen/101.contained[0]")],
    "Bundle-bundle-transaction": [("fhir.schema.unsupported", "Bundle/bundle-transaction.entry[7].resource")],
}


@pytest.mark.parametrize("path", _r4_examples(), ids=lambda p: p.stem)
def test_official_r4_example_passes_structure(path: Path) -> None:
    reference_path("fhir", "r4-core", "examples")
    resource = json.loads(path.read_text(encoding="utf-8"))
    assert resource["resourceType"] in supported_types()
    errors = _errors(validate_resource(resource, _terminology()), "fhir.schema")
    assert [(e.rule, e.location) for e in errors] == R4_NESTED_UNSUPPORTED.get(path.stem, [])


def test_r4_examples_exist() -> None:
    reference_path("fhir", "r4-core", "examples")
    assert len(_r4_examples()) >= 10


def test_schema_errors_carry_resource_and_element_path() -> None:
    obs = {"resourceType": "Observation", "id": "o1", "status": "done", "code": {"text": "x"},
           "effectiveDateTime": "2021-13-01",
           "component": [{"code": {"text": "a"}},
                         {"code": {"text": "b"}, "valueQuantity": {"value": 1, "colour": "red"}}]}
    errors = _errors(validate_resource(obs, _terminology()), "fhir.schema")
    assert sorted((e.rule, e.location) for e in errors) == [
        ("fhir.schema", "Observation/o1.component[1].valueQuantity.colour"),
        ("fhir.schema", "Observation/o1.effectiveDateTime"),
        ("fhir.schema", "Observation/o1.status"),
    ]


def test_unsupported_resource_type() -> None:
    issues = validate_resource({"resourceType": "Group", "id": "g1", "type": "person", "actual": True})
    assert [(i.rule, i.location) for i in issues] == [("fhir.schema.unsupported", "Group/g1")]


def test_bundle_entry_errors_point_at_the_entry_resource() -> None:
    bundle = {"resourceType": "Bundle", "id": "b1", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "p1", "gender": "woman"}},
        {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Basic", "id": "x1"}},
    ]}
    errors = validate_bundle(bundle, _terminology())
    assert [(e.rule, e.location) for e in errors] == [
        ("fhir.schema", "Patient/p1.gender"), ("fhir.schema.unsupported", "Basic/x1")]


# ---- codes ---------------------------------------------------------------------------------------------

def test_unknown_external_codes_are_errors() -> None:
    condition = {
        "resourceType": "Condition", "id": "c1", "subject": {"reference": "#p"},
        "contained": [{"resourceType": "Patient", "id": "p"}],
        "code": {"coding": [{"system": SNOMED, "code": "128628002"},
                            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C34.9"}]},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "extension": [{"url": "http://example.org/x", "valueQuantity": {
            "value": 1, "system": "http://unitsofmeasure.org", "code": "mg/m2"}}],
        "note": [{"text": "HGVS is not table-checked"}],
        "evidence": [{"code": [{"coding": [{"system": "http://varnomen.hgvs.org", "code": "NM_000546.6:c.743G>A"}]}]}],
    }
    issues = validate_resource(condition, _terminology((SNOMED, "128628002")))
    assert [(i.rule, i.location) for i in issues] == [("fhir.code.unknown", "Condition/c1.code.coding[1]")]
    assert "ICD-10-CM" in issues[0].message and "C34.9" in issues[0].message


# ---- references ----------------------------------------------------------------------------------------

def _bundle(*resources: dict, urls: tuple[str, ...] = ()) -> dict:
    entries = []
    for i, res in enumerate(resources):
        url = urls[i] if i < len(urls) else f"urn:uuid:00000000-0000-0000-0000-00000000000{i}"
        entries.append({"fullUrl": url, "resource": res})
    return {"resourceType": "Bundle", "id": "b1", "type": "collection", "entry": entries}


def test_references_resolve_inside_the_bundle() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    obs = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"},
           "focus": [{"reference": "Patient/p1"}, {"reference": "Condition/missing"},
                     {"reference": "urn:uuid:00000000-0000-0000-0000-0000000000ff"}],
           "derivedFrom": [{"reference": "#nope"}]}
    issues = validate_bundle(_bundle(patient, obs), _terminology())
    assert [(i.rule, i.location) for i in issues] == [
        ("fhir.reference.unresolved", "Observation/o1.focus[1].reference"),
        ("fhir.reference.unresolved", "Observation/o1.focus[2].reference"),
        ("fhir.reference.unresolved", "Observation/o1.derivedFrom[0].reference"),
    ]


def test_lone_resource_checks_only_contained_references() -> None:
    obs = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "Patient/elsewhere"}, "specimen": {"reference": "#s"},
           "device": {"reference": "#d"}, "contained": [{"resourceType": "Specimen", "id": "s"}]}
    issues = validate_resource(obs, _terminology())
    assert [(i.rule, i.location) for i in issues] == [("fhir.reference.unresolved", "Observation/o1.device.reference")]


def test_official_mcode_bundle_references() -> None:
    """The official Jenny M bundle is not self-contained: exactly its references to absent entries are reported."""
    bundle = _example("Bundle-mcode-patient-bundle-jenny-m")
    present = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    present |= {e["fullUrl"] for e in bundle["entry"]}
    absent = set()
    stack: list[object] = [e["resource"] for e in bundle["entry"]]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("reference"), str) and item["reference"] not in present:
                absent.add(item["reference"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    assert absent, "the fixture is expected to reference resources outside the bundle"
    issues = validate_bundle(bundle, _terminology(*_all_codes(bundle)))
    unresolved = {i.message.split("'")[1] for i in issues if i.rule == "fhir.reference.unresolved"}
    assert unresolved == absent
    assert _errors(issues, "fhir.profile") == []


# ---- deep mode -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("folder", [("mcode-stu4", "example"), ("r4-core", "examples")], ids=lambda f: f[0])
def test_deep_mode_parses_official_examples(folder: tuple[str, str]) -> None:
    paths = sorted(reference_path("fhir", *folder).glob("*.json"))
    assert paths
    for path in paths:
        assert check_models(json.loads(path.read_text(encoding="utf-8"))) == [], path.name


def test_deep_mode_reports_model_errors_with_paths() -> None:
    obs = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
           "component": [{"code": {"text": "c"}, "valueQuantity": {"value": "1,5"}}],
           "extension": [{"url": "http://example.org/meta", "valueMeta": {"versionId": "1"}}]}
    bundle = _bundle(obs)
    shallow = validate_bundle(bundle, _terminology())
    deep = validate_bundle(bundle, _terminology(), deep=True)
    added = [i for i in deep if i not in shallow]
    # valueMeta is R4 (4.0.1) but not R4B: not reported; the non-decimal value is.
    assert [(i.rule, i.location) for i in added] == [("fhir.model", "Observation/o1.component[0].valueQuantity.value")]


# ---- NDJSON --------------------------------------------------------------------------------------------

def test_ndjson_folder(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "p1"}) + "\n\n")
    obs = [{"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "x"},
            "subject": {"reference": ref}} for i, ref in enumerate(["Patient/p1", "Patient/p2"])]
    (tmp_path / "Observation.ndjson").write_text("\n".join(json.dumps(o) for o in obs) + "\n{not json\n")
    issues = validate_ndjson(tmp_path, _terminology())
    assert sorted((i.rule, i.location) for i in issues) == [
        ("fhir.ndjson", f"{tmp_path / 'Observation.ndjson'}:3"),
        ("fhir.reference.unresolved", f"{tmp_path / 'Observation.ndjson'}:2: Observation/o1.subject.reference"),
    ]
    missing = tmp_path / "absent.ndjson"
    assert [(i.rule, i.location) for i in validate_ndjson(missing)] == [("fhir.ndjson", str(missing))]


# ---- fast path (fhir_fast): never "clean" when the detailed layers find something ---------------------------

@pytest.fixture(scope="module")
def seed_bundle() -> dict:
    from converter.case.loader import load_case
    from converter.fhir.bundle import build_bundle
    from converter.mapping.engine import MappingSet

    case = load_case(ROOT / "samples" / "lcnec-cadonilimab-anlotinib.yaml")
    mapped = MappingSet.load().apply(case, frozenset({"fhir"}))
    return build_bundle(case.case_id, mapped.resources, "collection")


_SOME_CODES = ["48018-6", "48004-6", "81258-6", "48002-0", "81252-9", "97509-4", "laboratory", "C25", "8041/3"]


def _mutations(bundle: dict, rng) -> dict:
    """A copy of ``bundle`` with a few random edits of the kinds that break structure, profiles (slices,
    choices, bindings, claimed profiles), codes and references."""
    from converter.validate.fhir_profiles import rules

    profiles = sorted(rules().profiles)
    out = copy.deepcopy(bundle)
    nodes: list[tuple[object, object]] = []   # (container, key or index)
    stack: list[object] = [out]
    while stack:
        item = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, value in pairs:
            nodes.append((item, key))
            stack.append(value)
    for _ in range(rng.randint(1, 4)):
        container, key = rng.choice(nodes)
        value = container[key]
        kind = rng.randrange(18)
        if kind == 0 and isinstance(container, dict):
            del container[key]
        elif kind == 1 and isinstance(container, list):
            container.append(copy.deepcopy(value))
        elif kind == 2 and isinstance(value, str):
            container[key] = value + "x"
        elif kind == 3:
            container[key] = rng.choice([None, 0, 1.5, True, "", [], {}, [None], {"coding": []}])
        elif kind == 4 and isinstance(container, dict) and isinstance(key, str):
            container["_" + key.lstrip("_")] = rng.choice([
                {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}, {"id": "x"}, [None],
                {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                "valueCode": "unknown"}]}])
            if rng.random() < 0.3:
                container[key] = None
        elif kind == 5 and isinstance(value, dict):
            value.update({"system": SNOMED, "code": "0"} if rng.random() < 0.5 else {"reference": "#missing"})
        elif kind == 6 and isinstance(container, dict) and isinstance(key, str) and key.startswith("value"):
            container[rng.choice(["valueQuantity", "valueString", "valueCodeableConcept", "valueBoolean"])] = value
            if rng.random() < 0.5:
                del container[key]
        elif kind == 7 and isinstance(value, list) and value:
            value.pop(rng.randrange(len(value)))
        elif kind == 8 and key == "profile" and isinstance(value, list):
            value[:] = rng.choice([[], [rng.choice(profiles)], [rng.choice(profiles), rng.choice(profiles)],
                                   [f"{value[0]}|1.0" if value else "x"]])
        elif kind == 9 and isinstance(value, list) and value:
            value.insert(rng.randrange(len(value) + 1), copy.deepcopy(rng.choice(value)))
        elif kind == 10 and key == "code" and isinstance(value, str):
            container[key] = rng.choice(_SOME_CODES)
        elif kind == 11 and key == "system" and isinstance(value, str):
            container[key] = rng.choice([LOINC, SNOMED, "http://unitsofmeasure.org", "urn:x"])
        elif kind == 12 and key == "url" and isinstance(value, str):
            container[key] = rng.choice(profiles)
        elif kind == 13 and key == "reference" and isinstance(value, str):
            container[key] = rng.choice(["#", "#x", "Patient/none", f"{value}/_history/1", "urn:uuid:0"])
        elif kind == 14 and key == "resourceType":
            container[key] = rng.choice(["Observation", "Group", "Bundle", "Patient"])
        elif kind == 15 and isinstance(value, dict):
            value["contained"] = [{"resourceType": "Observation", "id": "c", "status": "final",
                                   "code": {"coding": [{"system": LOINC, "code": rng.choice(_SOME_CODES)}]}}]
        elif kind == 16 and isinstance(value, dict) and isinstance(value.get("coding"), list):
            value["coding"].append({"system": LOINC, "code": rng.choice(_SOME_CODES)})
        elif kind == 17 and isinstance(value, dict) and isinstance(value.get("code"), str):
            value["code"] = {"text": value["code"]} if rng.random() < 0.5 else value.pop("code")
    return out


def test_fast_path_accepts_the_seed_bundle(seed_bundle: dict) -> None:
    from converter.validate.fhir import _clean

    assert validate_bundle(seed_bundle) == []
    assert _clean(seed_bundle, None)   # the common case takes the fast path


def test_fast_path_never_hides_an_issue(seed_bundle: dict) -> None:
    import random

    from converter.validate.fhir import _clean, _validate

    rng = random.Random(20261124)
    clean = broken = 0
    for _ in range(400):
        bundle = _mutations(seed_bundle, rng)
        try:
            issues: list[Issue] | Exception = _validate(bundle, None, resolve_all=True)
        except Exception as exc:  # noqa: BLE001 - the detailed layers crash on some shapes (e.g. a dict system)
            issues = exc
        if _clean(bundle, None):
            assert issues == [], issues
            clean += 1
        broken += bool(issues)
        if isinstance(issues, Exception):
            with pytest.raises(type(issues)):
                validate_bundle(bundle)
        else:
            assert validate_bundle(bundle) == issues
    assert broken > 80 and clean > 40, (broken, clean)   # the mutations exercise both sides


def test_extension_rules_ride_on_the_extension_definition() -> None:
    """The R4 definitions type every place an extension can sit: the fast path checks extensions there."""
    from converter.validate import fhir_fast

    definitions, _ = fhir_schema_definitions()
    assert not fhir_fast._extensions_typed(definitions)   # xhtml admits anything ...
    schema, _ = fhir_fast._schema()
    assert fhir_fast._extensions_typed(schema["definitions"])   # ... so the fast schema narrows it
    assert "cb-anywhere" not in schema["definitions"]


def test_fast_path_choice_and_slices_match_the_detailed_check() -> None:
    """Hand-made extensions and components around the schema translation's shortcuts."""
    import jsonschema_rs

    from converter.validate.fhir_profiles import _Checker, children_schema, rules

    ruleset = rules()
    cases = [
        (ruleset.extension_base, {"url": "u", "valueString": "a"}),
        (ruleset.extension_base, {"valueString": "a", "valueCode": "b"}),          # no url, two types
        (ruleset.extension_base, {"url": "u", "valueString": "a", "valueCode": "b"}),
        (ruleset.extension_base, {"_url": {"id": "x"}, "valueString": "a"}),
        (ruleset.extension_base, {"url": "u", "valueString": "a", "_valueString": {"id": "y"}}),
        (ruleset.extension_base, {"url": "u", "valueString": None, "_valueCode": {}}),
    ]
    variant = ruleset.profiles[MCODE + "genomic-variant"]
    component = {"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
                 "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId", "code": "1"}]}}
    for components in ([component], [component, component], [component, {"code": {"text": "x"}}], []):
        cases.append((variant, {"resourceType": "Observation", "component": components}))
    for profile, instance in cases:
        issues: list[Issue] = []
        _Checker(profile, issues).children(profile.children, instance, "x")
        valid = jsonschema_rs.Draft201909Validator(children_schema(profile.children)).is_valid(instance)
        assert not valid or not issues, (instance, issues)


def test_fast_structure_check_agrees_on_official_examples() -> None:
    """Structure, profile and extension rules: the fast check passes an official example only when the
    detailed layers report none of their rules for it (codes and references are checked separately)."""
    from converter.validate import fhir_fast
    from converter.validate.fhir import _validate

    reference_path("fhir", "mcode-stu4", "example")  # skips, with the reason, where the examples are absent
    layers = ("fhir.schema", "fhir.profile.")
    passed = 0
    for path in _mcode_example_files():
        resource = json.loads(path.read_text(encoding="utf-8"))
        bundle = (resource if resource.get("resourceType") == "Bundle"
                  else {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]})
        found = fhir_fast.entries(bundle)
        if found is None or not fhir_fast.structure_clean(found):
            continue
        passed += 1
        assert [i for i in _validate(bundle, None, resolve_all=True) if i.rule.startswith(layers)] == [], path.name
    assert passed > 50


def test_fast_path_sees_extensions_where_the_schema_admits_anything(seed_bundle: dict) -> None:
    """R4's xhtml definition admits any value: an extension hidden in an object there is still checked."""
    from converter.validate.fhir import _clean

    bundle = copy.deepcopy(seed_bundle)
    resource = bundle["entry"][0]["resource"]
    resource["text"] = {"status": "generated", "div": {"extension": [{"valueString": "x"}]}}
    assert not _clean(bundle, None)
    label = f"{resource['resourceType']}/{resource['id']}"
    assert ("fhir.profile.required", f"{label}.text.div.extension[0].url") in [
        (i.rule, i.location) for i in validate_bundle(bundle)]


def test_fast_path_checks_extensions_anywhere_when_the_definitions_do_not_type_them(
        seed_bundle: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import jsonschema_rs

    from converter.validate import fhir_fast

    monkeypatch.setattr(fhir_fast, "_extensions_typed", lambda definitions: False)
    schema, _ = fhir_fast._schema()
    assert "cb-anywhere" in schema["definitions"]
    validator = jsonschema_rs.Draft201909Validator(schema)
    assert validator.is_valid(fhir_fast.entries(seed_bundle).groups)
    bundle = copy.deepcopy(seed_bundle)
    bundle["entry"][0]["resource"]["identifier"] = [{"extension": [{"valueString": "no url"}], "value": "x"}]
    assert not validator.is_valid(fhir_fast.entries(bundle).groups)


def test_fast_scans_of_references_and_codings() -> None:
    """The serialised-bundle scans find every reference and checked coding once, and give up (None) on what
    only the detailed layers can judge."""
    import orjson

    from converter.validate.fhir_fast import codings, references

    def text(*nodes: object) -> bytes:
        return orjson.dumps({"resourceType": "Bundle", "x": list(nodes)})

    refs = [{"reference": "urn:uuid:1"}, {"reference": "Patient/p"}, {"reference": "urn:uuid:1"}]
    assert references(text(*refs)) == {"urn:uuid:1", "Patient/p"}
    assert references(text({"display": "no reference here"})) == set()
    assert references(text(*refs, {"reference": "#c1"})) is None        # local: the detailed layers resolve it
    assert references(text(*refs, {"reference": 'a"b'})) is None        # escaped
    checked = frozenset({LOINC.encode(), SNOMED.encode()})
    loinc = {"system": LOINC, "code": "48018-6"}
    assert codings(text(loinc, loinc, {"system": "urn:x", "code": "1"}), checked) == {(LOINC, "48018-6")}
    assert codings(text(loinc, {"code": "2", "system": SNOMED}), checked) == {(LOINC, "48018-6"), (SNOMED, "2")}
    assert codings(text(loinc, {"system": SNOMED}), checked) is None     # no code next to the system
    assert codings(text(loinc), frozenset()) == set()


def test_fast_path_resolves_type_and_id_references() -> None:
    from converter.validate.fhir import _clean

    patient = {"resourceType": "Patient", "id": "p1"}
    for ref, clean in (("Patient/p1", True), ("Patient/p1/_history/2", True), ("Patient/p2", False)):
        obs = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
               "subject": {"reference": ref}}
        bundle = _bundle(patient, obs)
        assert _clean(bundle, _terminology()) is clean, ref
        assert (validate_bundle(bundle, _terminology()) == []) is clean
