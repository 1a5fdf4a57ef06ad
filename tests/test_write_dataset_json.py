"""Dataset-JSON 1.1 and CSV writers: schema-valid, round trip, deterministic."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import jsonschema
import pytest

from conftest import REFERENCE, reference_path
from converter import __version__
from converter.sdtm.model import Dataset, Study, Variable
from converter.write.csv_out import csv_bytes, write_csv
from converter.write.dataset_json import dataset_json_bytes, write_dataset_json
from converter.write.define_xml import describe_dataset

CREATED = datetime(2025, 3, 28, 14, 5, 9, tzinfo=timezone.utc)
STUDY = Study("CB01")


def _cm() -> Dataset:
    variables = [
        Variable("STUDYID", "Study Identifier", "Char", core="Req"),
        Variable("DOMAIN", "Domain Abbreviation", "Char", core="Req"),
        Variable("USUBJID", "Unique Subject Identifier", "Char", core="Req"),
        Variable("CMSEQ", "Sequence Number", "Num", core="Req"),
        Variable("CMTRT", "Reported Name of Drug, Med, or Therapy", "Char", core="Req"),
        Variable("CMDOSE", "Dose per Administration", "Num"),
        Variable("CMSTDTC", "Start Date/Time of Medication", "Char"),
        Variable("CMENDTC", "End Date/Time of Medication", "Char"),
        Variable("CMRFDTC", "Reference Date/Time", "Char"),
    ]
    rows = [
        {"STUDYID": "CB01", "DOMAIN": "CM", "USUBJID": "CB01-001", "CMSEQ": 1, "CMTRT": "CISPLATIN",
         "CMDOSE": 75.0, "CMSTDTC": "2021-05", "CMENDTC": "2021-06-02", "CMRFDTC": "2021-05-03T10:30:00"},
        {"STUDYID": "CB01", "DOMAIN": "CM", "USUBJID": "CB01-001", "CMSEQ": 2.0, "CMTRT": 'ETOPOSIDE, "VP-16"',
         "CMDOSE": 100.5, "CMSTDTC": "2021", "CMENDTC": None, "CMRFDTC": None},
        {"STUDYID": "CB01", "DOMAIN": "CM", "USUBJID": "CB01-002", "CMSEQ": 3, "CMTRT": "ANLOTINIB\nline 2",
         "CMDOSE": None, "CMSTDTC": None, "CMENDTC": "", "CMRFDTC": "2022-01-01T00:00:00"},
    ]
    return Dataset("CM", "Concomitant/Prior Medications", variables, rows,
                   keys=["STUDYID", "USUBJID", "CMTRT", "CMSTDTC"], domain_class="Interventions")


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema_file = REFERENCE / "cdisc" / "dataset-json-1.1" / "schema" / "dataset.schema.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    return jsonschema.Draft201909Validator(schema)


def schema_errors(document: object) -> list[str]:
    """Messages of the Dataset-JSON 1.1 JSON Schema for one document."""
    reference_path("cdisc", "dataset-json-1.1", "schema", "dataset.schema.json")
    return [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(document)]


def _write(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    path, issues = write_dataset_json(_cm(), STUDY, tmp_path, CREATED)
    assert issues == [] and path == tmp_path / "cm.json"
    return json.loads(path.read_bytes())


def test_output_validates_against_the_schema(tmp_path: Path) -> None:
    assert schema_errors(_write(tmp_path)) == []


def test_top_level_attributes_in_specification_order(tmp_path: Path) -> None:
    doc = _write(tmp_path)
    assert list(doc) == ["datasetJSONCreationDateTime", "datasetJSONVersion", "fileOID", "originator",
                         "sourceSystem", "studyOID", "metaDataVersionOID", "metaDataRef", "itemGroupOID", "records",
                         "name", "label", "columns", "rows"]
    assert doc["datasetJSONCreationDateTime"] == "2025-03-28T14:05:09"
    assert doc["datasetJSONVersion"] == "1.1.0"
    assert doc["sourceSystem"] == {"name": "CaseBridge", "version": __version__}
    assert (doc["studyOID"], doc["metaDataVersionOID"], doc["itemGroupOID"]) == ("STDY.CB01", "MDV.CB01.SDTMIG.3.4",
                                                                                   "IG.CM")
    assert (doc["name"], doc["label"], doc["records"]) == ("CM", "Concomitant/Prior Medications", 3)


def test_columns(tmp_path: Path) -> None:
    columns = {c["name"]: c for c in _write(tmp_path)["columns"]}
    assert list(columns) == [v.name for v in _cm().variables]
    assert columns["STUDYID"] == {"itemOID": "IT.CM.STUDYID", "name": "STUDYID", "label": "Study Identifier",
                                  "dataType": "string", "length": 4, "keySequence": 1}
    assert columns["CMSEQ"] == {"itemOID": "IT.CM.CMSEQ", "name": "CMSEQ", "label": "Sequence Number",
                                "dataType": "integer"}
    assert columns["CMDOSE"]["dataType"] == "double"
    assert columns["CMSTDTC"]["dataType"] == "string"   # partial dates: text, never a made-up day
    assert columns["CMSTDTC"]["keySequence"] == 4
    assert columns["CMENDTC"]["dataType"] == "date"
    assert columns["CMRFDTC"]["dataType"] == "datetime"
    assert columns["CMTRT"]["length"] == len('ETOPOSIDE, "VP-16"')


def test_rows_round_trip(tmp_path: Path) -> None:
    doc = _write(tmp_path)
    names = [c["name"] for c in doc["columns"]]
    back = [dict(zip(names, row, strict=True)) for row in doc["rows"]]
    expected = [{k: (int(v) if k == "CMSEQ" else v) for k, v in row.items()} for row in _cm().rows]
    assert back == expected
    assert doc["rows"][0][names.index("CMSTDTC")] == "2021-05"
    assert isinstance(doc["rows"][1][names.index("CMSEQ")], int)
    assert doc["rows"][2][names.index("CMENDTC")] == "" and doc["rows"][2][names.index("CMDOSE")] is None


def test_rerun_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(CREATED.timestamp())))
    columns, _ = describe_dataset(_cm())
    first = dataset_json_bytes(_cm(), STUDY, columns)
    assert first == dataset_json_bytes(_cm(), STUDY, columns)
    assert first == dataset_json_bytes(_cm(), STUDY, columns, CREATED)
    assert first.endswith(b"\n") and b"2025-03-28T14:05:09" in first


def test_empty_dataset_is_valid() -> None:
    empty = Dataset("CM", "Concomitant/Prior Medications", _cm().variables, [])
    doc = json.loads(dataset_json_bytes(empty, STUDY, describe_dataset(empty)[0], CREATED))
    assert doc["records"] == 0 and doc["rows"] == []
    assert schema_errors(doc) == []


def test_refuses_a_dataset_with_errors(tmp_path: Path) -> None:
    dataset = _cm()
    dataset.rows[0]["CMDOSE"] = "75 mg"
    path, issues = write_dataset_json(dataset, STUDY, tmp_path, CREATED)
    assert path is None and not (tmp_path / "cm.json").exists()
    assert [(i.rule, i.location) for i in issues] == [
        ("sdtm.write.type", "CM[USUBJID=CB01-001,CMSEQ=1,row=1].CMDOSE")]


def test_schema_check_catches_a_broken_document(tmp_path: Path) -> None:
    doc = _write(tmp_path)
    del doc["itemGroupOID"]
    doc["columns"][0]["dataType"] = "text"
    assert len(schema_errors(doc)) == 2


def _msg2_json_files() -> list[str]:
    folder = REFERENCE / "cdisc" / "examples" / "sdtm-msg2" / "dataset-json"
    return sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else ["(reference material absent)"]


@pytest.mark.parametrize("name", _msg2_json_files())
def test_reference_dataset_json_validates_with_the_same_check(name: str) -> None:
    path = reference_path("cdisc", "examples", "sdtm-msg2", "dataset-json", name)
    assert schema_errors(json.loads(path.read_bytes())) == []


def test_csv_is_rfc4180(tmp_path: Path) -> None:
    path, issues = write_csv(_cm(), tmp_path)
    assert issues == [] and path == tmp_path / "cm.csv"
    data = path.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    assert data.startswith(b"STUDYID,DOMAIN,USUBJID,CMSEQ,CMTRT,CMDOSE,CMSTDTC,CMENDTC,CMRFDTC\r\n")
    assert b'"ETOPOSIDE, ""VP-16"""' in data and b'"ANLOTINIB\nline 2"' in data
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[1] == ["CB01", "CM", "CB01-001", "1", "CISPLATIN", "75", "2021-05", "2021-06-02", "2021-05-03T10:30:00"]
    assert rows[2][3:6] == ["2", 'ETOPOSIDE, "VP-16"', "100.5"]
    assert rows[3][5] == "" and len(rows) == 4
    assert data == csv_bytes(describe_dataset(_cm())[0])
