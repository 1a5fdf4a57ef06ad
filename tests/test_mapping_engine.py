"""The mapping engine: verbs, paths, conditions, lint with line numbers, provenance and accounting."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from converter.case.loader import Record, load_record
from converter.errors import MappingError
from converter.mapping.engine import MappingSet
from converter.mapping.lint import lint_folder
from converter.mapping.testing import run_tests

HEADER = "text,synonyms,system,code,display,equivalence,status,verified_in,note\n"

CASE = textwrap.dedent("""
    case_id: t1
    source: {title: test}
    patient: {id: patient, sex: male, age: {value: 61, unit: years}}
    pathology:
      - {id: p1, marker: Ki-67, method: IHC, result: "+", value: {value: 30, unit: "%"}}
      - {id: p2, marker: Mystery-9, method: IHC, result: "-"}
      - {id: p3, marker: H&E morphology, method: H&E, result: carcinoma}
    therapy_lines:
      - id: l1
        number: 1
        start: 2021-03
        agents:
          - {id: a1, drug: cisplatin, dose: {value: 75, unit: mg/m2}}
          - {id: a2, drug: platinum doublet}
    adverse_events:
      - {id: e1, term: nausea, grade: 2, onset: {text: day 8 of cycle 2, anchor: l1, cycle: 2, day: 8}, suspected_agents: [a1]}
""")


def write_set(root: Path, files: dict[str, str], tables: dict[str, str] | None = None) -> Path:
    """A small mapping folder in tmp."""
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    term = root / "terminology"
    term.mkdir(parents=True, exist_ok=True)
    for name, rows in (tables or {}).items():
        (term / f"{name}.csv").write_text(HEADER + textwrap.dedent(rows))
    return root


TABLES = {
    "markers": "Ki-67,Ki67|MIB-1,http://loinc.org,29593-1,Ki-67 Ag,equivalent,approved,test,\n"
               "Mystery-9,,,,,equivalent,unreviewed,,no verified code\n",
    "drugs": "cisplatin,,http://www.nlm.nih.gov/research/umls/rxnorm,2555,cisplatin,equivalent,approved,test,\n",
    "ucum": "%,percent,http://unitsofmeasure.org,%,percent,equivalent,approved,test,\n"
            "mg/m2,,http://unitsofmeasure.org,mg/m2,mg/m2,equivalent,approved,test,\n",
}

OBS = """
    target: fhir
    resource: Observation
    rules:
      - id: ihc
        for_each: pathology
        when: {path: method, equals: ihc}
        resource:
          status: final
          code: {$code: marker, table: markers}
          subject: {$ref: /patient}
          valueQuantity: {$quantity: value}
          valueString: {$value: result, $when: {missing: value}}
"""
PATIENT = """
    target: fhir
    resource: Patient
    rules:
      - id: patient
        for_each: patient
        resource:
          gender: {$value: sex}
"""
MED = """
    target: fhir
    resource: MedicationAdministration
    rules:
      - id: med-admin
        for_each: therapy_lines.agents
        resource:
          status: completed
          medicationCodeableConcept: {$code: drug, table: drugs}
          subject: {$ref: /patient}
          note:
            - text: {$format: "line {../number} started {../start}"}
          dosage:
            dose: {$quantity: dose}
"""


@pytest.fixture
def case():
    return load_record(Record("case.yaml", CASE, "yaml"))


def test_verbs_paths_conditions_and_refs(tmp_path: Path, case) -> None:
    ms = MappingSet.load(write_set(tmp_path, {"fhir/observation.yaml": OBS, "fhir/patient.yaml": PATIENT,
                                              "fhir/med.yaml": MED}, TABLES))
    mapped = ms.apply(case)
    by_rule = {}
    for res, rule in zip(mapped.resources, mapped.resource_rules):
        by_rule.setdefault(rule.id, []).append(res)
    patient = by_rule["patient"][0]
    ki67, mystery = by_rule["ihc"]  # H&E is filtered out by `when`
    assert ki67["code"] == {"coding": [{"system": "http://loinc.org", "code": "29593-1", "display": "Ki-67 Ag"}], "text": "Ki-67"}
    assert ki67["valueQuantity"] == {"value": 30, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    assert "valueString" not in ki67 and mystery["valueString"] == "-"
    assert mystery["code"] == {"text": "Mystery-9"}  # known term without a verified code: text only
    assert ki67["subject"] == {"reference": f"urn:uuid:{patient['id']}"}
    cis, doublet = by_rule["med-admin"]
    assert cis["note"] == [{"text": "line 1 started 2021-03"}]
    assert cis["dosage"]["dose"]["code"] == "mg/m2"
    assert doublet["medicationCodeableConcept"] == {"text": "platinum doublet"}
    assert "dosage" not in doublet  # an object whose computed fields are all empty is dropped
    flagged = {(u["path"], u["reason"].split(" in ")[0]) for u in mapped.unmapped}
    assert ("pathology[1].marker", "no approved code") in flagged
    assert ("therapy_lines[0].agents[1].drug", "unknown term") in flagged


def test_ids_are_deterministic(tmp_path: Path, case) -> None:
    ms = MappingSet.load(write_set(tmp_path, {"fhir/observation.yaml": OBS, "fhir/patient.yaml": PATIENT}, TABLES))
    first = [r["id"] for r in ms.apply(case).resources]
    again = [r["id"] for r in MappingSet.load(tmp_path).apply(case).resources]
    assert first == again and len(set(first)) == len(first)


def test_unused_facts_are_reported(tmp_path: Path, case) -> None:
    ms = MappingSet.load(write_set(tmp_path, {"fhir/patient.yaml": PATIENT}, TABLES))
    unused = ms.apply(case).unused_facts()
    assert "patient.sex" not in unused
    assert "patient.age.value" in unused and "adverse_events[0].grade" in unused


def test_sdtm_rows_supp_and_relrec(tmp_path: Path, case) -> None:
    ae = """
        target: sdtm
        domain: AE
        rules:
          - id: ae
            for_each: adverse_events
            row:
              AETERM: {$value: term}
              AETOXGR: {$value: grade, as: text}
              AESTDTC: {$date: onset}
              AESTTPT: {$date: onset, part: text}
              AESTRTPT: {$date: onset, part: direction}
            supp:
              AESPEC: {label: Suspected agent ids, value: {$value: "suspected_agents[]", join: ", "}}
            relrec: suspected_agents[]
    """
    ms = MappingSet.load(write_set(tmp_path, {"sdtm/ae.yaml": ae}, TABLES))
    (row,) = ms.apply(case).rows
    assert row.values == {"AETERM": "nausea", "AETOXGR": "2", "AESTTPT": "day 8 of cycle 2", "AESTRTPT": "AFTER"}
    assert row.supp == [("AESPEC", "Suspected agent ids", "a1", "CRF")]
    assert row.related == ["a1"]


@pytest.mark.parametrize("body, line, fragment", [
    ("""
     target: fhir
     resource: Patient
     rules:
       - id: p
         for_each: patient
         resource:
           gender: {$vlaue: sex}
     """, 8, "unknown verb '$vlaue'"),
    ("""
     target: fhir
     resource: Patient
     rules:
       - id: p
         for_each: patient
         resource:
           gender: {$value: sexx}
     """, 8, "source path 'sexx' is not in the case-report schema; did you mean sex?"),
    ("""
     target: fhir
     resource: Observation
     rules:
       - id: o
         for_each: pathology
         resource:
           code: {$code: marker, table: markerz}
     """, 8, "unknown terminology table 'markerz'"),
    ("""
     target: fhir
     resource: Patient
     rules:
       - id: p
         for_each: patient
         resource:
           gender: {$value: sex
           birthDate: 1
     """, 9, "YAML syntax error"),
    ("""
     target: fhir
     resource: Patient
     rules:
       - id: p
         for_each: patients
         resource: {gender: {$value: sex}}
     """, 6, "source path 'patients' is not in the case-report schema"),
])
def test_lint_reports_the_right_line(tmp_path: Path, body: str, line: int, fragment: str) -> None:
    _, issues = lint_folder(write_set(tmp_path, {"fhir/x.yaml": body}, TABLES))
    assert any(fragment in i.message and i.location.startswith(f"fhir/x.yaml:{line}:") for i in issues), \
        [str(i) for i in issues]


def test_lint_rejects_sdtm_variable_not_in_domain(tmp_path: Path) -> None:
    pytest.importorskip("converter.sdtm.metadata")
    body = """
        target: sdtm
        domain: AE
        rules:
          - id: ae
            for_each: adverse_events
            row:
              AETERM: {$value: term}
              AEGRADE: {$value: grade}
    """
    _, issues = lint_folder(write_set(tmp_path, {"sdtm/ae.yaml": body}, TABLES))
    assert any("AEGRADE is not a variable of AE" in i.message and i.location.startswith("sdtm/ae.yaml:9:")
               for i in issues), [str(i) for i in issues]


def test_lint_rejects_fhir_element_not_in_resource(tmp_path: Path) -> None:
    body = """
        target: fhir
        resource: Patient
        rules:
          - id: p
            for_each: patient
            resource:
              gendre: {$value: sex}
    """
    _, issues = lint_folder(write_set(tmp_path, {"fhir/p.yaml": body}, TABLES))
    assert any("'gendre' is not an element of Patient" in i.message and "did you mean gender" in i.message
               and i.location.startswith("fhir/p.yaml:8:") for i in issues), [str(i) for i in issues]


def test_load_strict_raises_with_every_problem(tmp_path: Path) -> None:
    body = """
        target: fhir
        resource: Patient
        rules:
          - id: p
            for_each: patient
            resource:
              gender: {$nope: sex}
              birthDate: {$value: nothere}
    """
    with pytest.raises(MappingError) as err:
        MappingSet.load(write_set(tmp_path, {"fhir/p.yaml": body}, TABLES))
    assert len(err.value.issues) == 2


def test_terminology_rows_are_checked(tmp_path: Path) -> None:
    _, issues = lint_folder(write_set(tmp_path, {"fhir/patient.yaml": PATIENT},
                                      {"bad": "x,,http://loinc.org,1-8,x,equivalent,maybe,test,\n"}))
    assert any("status 'maybe'" in i.message and i.location.endswith("bad.csv:2:1") for i in issues)


def test_mapping_tests_blocks_report_field_diffs(tmp_path: Path) -> None:
    body = PATIENT + """
    tests:
      - name: male
        case: {patient: {sex: male}}
        expect: [{gender: male}]
      - name: wrong on purpose
        case: {patient: {sex: female}}
        expect: [{gender: male}]
    """
    outcomes = run_tests(MappingSet.load(write_set(tmp_path, {"fhir/patient.yaml": body}, TABLES)))
    assert [o.passed for o in outcomes] == [True, False]
    assert outcomes[1].diffs == ["output 1.gender: expected 'male', got 'female'"]


def test_shipped_mappings_lint_clean_and_their_tests_pass() -> None:
    ms, issues = lint_folder()
    assert not [str(i) for i in issues if i.severity == "error"]
    failed = [(o.file, o.line, o.name, o.diffs) for o in run_tests(ms) if not o.passed]
    assert not failed


# --- the generated code (converter/mapping/codegen.py) ------------------------------------------------------

def test_resource_ids_are_uuid5(case) -> None:
    import uuid

    from converter.mapping.verbs import NAMESPACE, resource_id

    for key in ("patient", "therapy_lines[0].agents[1]", "ü/ΔNp63|x", "", "a" * 300):
        assert resource_id("case-1", "rule", key) == str(uuid.uuid5(NAMESPACE, f"case-1|rule|{key}"))


def test_reads_are_recorded_in_order_and_touched_is_built_from_them(tmp_path: Path, case) -> None:
    ms = MappingSet.load(write_set(tmp_path, {"fhir/observation.yaml": OBS, "fhir/patient.yaml": PATIENT}, TABLES))
    mapped = ms.apply(case)
    touched = mapped.touched
    assert len(mapped.reads) == 3 * len(touched)
    first_ihc = [(where, origin.target, current) for where, origin, current in touched
                 if origin.rule == "ihc" and where.startswith("pathology[0]")]
    made = ("Observation", mapped.resources[0]["id"])
    # the rule condition is read while the previous output is current (none yet), then the item's id and the
    # template in its order, the $when of valueString last
    assert first_ihc == [("pathology[0].method", "Observation (rule condition)", None),
                         ("pathology[0].id", "Observation", made),
                         ("pathology[0].marker", "Observation.code", made),
                         ("pathology[0].value.value", "Observation.valueQuantity", made),
                         ("pathology[0].value.unit", "Observation.valueQuantity", made),
                         ("pathology[0].value", "Observation.valueString (condition)", made)]


def test_unused_facts_match_a_leaf_by_leaf_check(tmp_path: Path, case) -> None:
    from converter.mapping.engine import _covered, _leaves

    ms = MappingSet.load(write_set(tmp_path, {"fhir/observation.yaml": OBS, "fhir/patient.yaml": PATIENT,
                                              "fhir/med.yaml": MED}, TABLES))
    case.data["extra"] = {"a.b": {"c": 1}, "a": {"b": 2}, "x[0]": [3]}  # keys that look like paths
    mapped = ms.apply(case)
    mapped.reads += ["extra.a", None, None]  # a read of extra.a covers extra.a.b and, by its text, extra.a.b.c
    used = set(mapped.reads[0::3])
    expected = [leaf for leaf in _leaves(case.data, "") if not _covered(leaf, used)]
    assert mapped.unused_facts() == expected
    assert "extra.a.b.c" not in expected and "extra.x[0][0]" in expected and "patient.age.value" in expected


@pytest.mark.parametrize("seed", range(30))
def test_unused_walk_matches_a_leaf_by_leaf_check_on_random_documents(seed: int) -> None:
    """Random nesting, empty containers, non-text keys and path-like keys, with random reads of leaves and of
    whole elements: the walk reports exactly the leaves no read covers, in document order."""
    import random

    from converter.case.model import Case
    from converter.mapping.engine import MappedCase, _covered, _leaves

    rng = random.Random(seed)

    def node(depth: int):
        kind = rng.random()
        if depth > 3 or kind < 0.3:
            return rng.choice(["x", 3, 2.5, True, None, ""])
        if kind < 0.55:
            return [node(depth + 1) for _ in range(rng.randint(0, 13))]
        keys = ["a", "b", "id", *rng.sample(["c.d", "e[0]", 7, True], k=rng.randint(0, 2))]
        return {k: node(depth + 1) for k in keys}

    data = {f"k{i}": node(0) for i in range(4)}
    paths: list[str] = []

    def every(v, where):  # every element's path, leaves and containers
        if where:
            paths.append(where)
        if isinstance(v, dict):
            for k, x in v.items():
                every(x, f"{where}.{k}" if where else str(k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                every(x, f"{where}[{i}]")

    every(data, "")
    texts = rng.sample(paths, k=len(paths) // 2)
    for key, text in (("c.d", "c"), ("e[0]", "e")):  # reads that cover a path-like key's leaves by their text
        texts += [p[: p.index(key)] + text for p in paths if key in p and rng.random() < 0.5]
    reads = [x for p in texts for x in (p, None, None)]
    mapped = MappedCase(Case(data, "c.json"), [], [], [], reads, [])
    used = set(reads[0::3])
    assert mapped.unused_facts() == [leaf for leaf in _leaves(data, "") if not _covered(leaf, used)]


def test_generated_code_names_the_mapping_line(tmp_path: Path, case, monkeypatch: pytest.MonkeyPatch) -> None:
    import linecache
    import traceback

    from converter.mapping import verbs

    def broken(text: str) -> str:
        raise RuntimeError("boom")
    monkeypatch.setattr(verbs, "_text", broken)  # an error inside the code generated for med.yaml
    ms = MappingSet.load(write_set(tmp_path, {"fhir/med.yaml": MED, "fhir/patient.yaml": PATIENT}, TABLES))
    case.data["therapy_lines"][0]["agents"][0]["drug"] = {"text": 7}  # not a string: goes through _text
    with pytest.raises(RuntimeError) as info:
        ms.apply(case)
    frames = traceback.extract_tb(info.value.__traceback__)
    generated = [f for f in frames if f.filename.startswith("<mapping ")]
    assert generated and generated[-1].filename == "<mapping fhir/med.yaml:5 rule med-admin produce>"
    above = linecache.getlines(generated[-1].filename)[: generated[-1].lineno]
    comment = next(line.strip() for line in reversed(above) if line.strip().startswith("#"))
    assert comment == "# fhir/med.yaml:9 MedicationAdministration.medicationCodeableConcept $code"  # the failing verb


def test_constant_first_alternative_still_checks_the_rest(tmp_path: Path, case) -> None:
    body = """
        target: fhir
        resource: Patient
        rules:
          - id: patient
            for_each: patient
            resource:
              gender: {$first: [unknown, {$value: sex}]}
    """
    ms = MappingSet.load(write_set(tmp_path, {"fhir/patient.yaml": body}, TABLES))
    mapped = ms.apply(case)
    assert mapped.resources[0]["gender"] == "unknown"
    assert [w for w, _, _ in mapped.touched] == ["patient.id"]  # the alternative after a constant never runs
    bad = body.replace("{$value: sex}", "{$value: sex, as: colour}")
    (tmp_path / "fhir/patient.yaml").write_text(textwrap.dedent(bad))
    with pytest.raises(MappingError, match="as: 'colour'"):
        MappingSet.load(tmp_path)


def test_term_lookups_are_memoised_within_a_bound() -> None:
    from converter.mapping.verbs import Memo

    calls: list[str] = []
    memo = Memo(lambda text: calls.append(text) or text.upper())
    assert [memo["a"], memo["a"], memo["b"]] == ["A", "A", "B"] and calls == ["a", "b"]
    for i in range(Memo.SIZE + 10):
        memo[str(i)]
    assert len(memo) <= Memo.SIZE
