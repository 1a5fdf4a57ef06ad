"""A data manager's change — a synonym row, a new marker — takes effect with no Python change."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from converter.case.loader import Record, load_record
from converter.mapping.engine import MappingSet
from converter.resources import mappings_dir

CASE = textwrap.dedent("""
    case_id: dm-change
    source: {title: test}
    patient: {id: patient, sex: female}
    pathology:
      - {id: p1, method: IHC, marker: GATA3, result: "+"}
    therapy_lines:
      - id: l1
        number: 1
        start: 2022-01
        agents: [{id: a1, drug: Platinol, dose: {value: 75, unit: mg/m2}, route: intravenous}]
""")


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(mappings_dir(), target)
    return target


def _case():
    return load_record(Record("case.yaml", CASE, "yaml"))


def _medication(ms: MappingSet) -> dict:
    mapped = ms.apply(_case(), frozenset({"fhir"}))
    return next(r for r in mapped.resources if r["resourceType"] == "MedicationAdministration")


def test_adding_a_drug_synonym_row_codes_a_brand_name(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    before = _medication(MappingSet.load(folder))
    assert before["medicationCodeableConcept"] == {"text": "Platinol"}  # unknown term: text kept, no code
    drugs = folder / "terminology" / "drugs.csv"
    text = drugs.read_text(encoding="utf-8")
    assert "cisplatin,DDP|" in text
    drugs.write_text(text.replace("cisplatin,DDP|", "cisplatin,Platinol|DDP|", 1), encoding="utf-8")
    after = _medication(MappingSet.load(folder))
    assert after["medicationCodeableConcept"]["coding"][0]["code"] == "2555"  # RxNorm cisplatin
    assert after["medicationCodeableConcept"]["text"] == "Platinol"         # the printed text is kept


def test_declaring_a_new_ihc_marker_in_the_ct_extensions(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    rows = lambda ms: [r.values for r in ms.apply(_case(), frozenset({"sdtm"})).rows if r.domain == "MI"]  # noqa: E731
    before = rows(MappingSet.load(folder))[0]
    assert before["MITESTCD"] != "GATA3"  # not in CT: a sponsor code derived from the text, flagged for review
    with (folder / "terminology" / "cdisc-ct" / "MITSCD.csv").open("a", encoding="utf-8") as fh:
        fh.write("C132263,SDTM Microscopic Findings Test Code,Yes,GATA3,,GATA Binding Protein 3,,GATA-3,Y\n")
    after = rows(MappingSet.load(folder))[0]
    assert after["MITESTCD"] == "GATA3"
