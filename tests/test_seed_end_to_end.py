"""The seed case through the CLI, its output checked by independent validators and readers.

FHIR against the official R4 JSON Schema; every XPT read back by pandas and pyreadstat; every Dataset-JSON
against the CDISC Dataset-JSON 1.1 schema; define.xml against the reference Define-XML 2.1 XSD and
describing exactly the datasets written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from conftest import ROOT, reference_path

SEED = ROOT / "samples" / "lcnec-cadonilimab-anlotinib.yaml"
NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3", "def": "http://www.cdisc.org/ns/def/v2.1"}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("seed") / "out"
    proc = subprocess.run([sys.executable, "-m", "converter", "convert", str(SEED), "--out", str(target),
                           "--fhir-ndjson", "--sdtm-format", "xpt,json,csv", "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, env={"SOURCE_DATE_EPOCH": "1700000000",
                                                                            "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    return target


def test_bundle_passes_the_official_r4_schema(out: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(reference_path("fhir", "r4-json-schema", "fhir.schema.r4-4.0.1.json").read_text())
    bundle = json.loads((out / "fhir" / "lcnec-cadonilimab-anlotinib.bundle.json").read_text())
    errors = [e.message for e in jsonschema.Draft6Validator(schema).iter_errors(bundle)]
    assert errors == []
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    refs = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                refs.add(node["reference"])
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)
    collect(bundle)
    assert refs and refs <= full_urls  # every reference resolves inside the bundle


def test_every_xpt_reads_back_equal_with_two_independent_readers(out: Path) -> None:
    pd = pytest.importorskip("pandas")
    pyreadstat = pytest.importorskip("pyreadstat")
    xpts = sorted((out / "sdtm").glob("*.xpt"))
    assert {"dm.xpt", "ae.xpt", "cm.xpt", "mi.xpt", "gf.xpt", "rs.xpt", "relrec.xpt"} <= {p.name for p in xpts}
    for path in xpts:
        frame, meta = pyreadstat.read_xport(str(path))
        other = pd.read_sas(str(path), format="xport", encoding="ascii")
        assert list(frame.columns) == list(other.columns) == meta.column_names
        doc = json.loads((out / "sdtm" / "json" / f"{path.stem}.json").read_text())
        assert [c["name"] for c in doc["columns"]] == meta.column_names
        assert len(frame) == len(other) == len(doc["rows"]) == doc["records"]
        for i, row in enumerate(doc["rows"]):
            for name, value in zip(meta.column_names, row):
                a, b = frame.iloc[i][name], other.iloc[i][name]
                if value is None:
                    assert a in ("", None) or a != a  # missing: empty string or NaN
                elif isinstance(value, (int, float)):
                    assert float(a) == pytest.approx(float(value)) and float(b) == pytest.approx(float(value))
                else:
                    assert a == value == b


def test_every_dataset_json_passes_the_cdisc_schema(out: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(reference_path("cdisc", "dataset-json-1.1", "schema", "dataset.schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    files = sorted((out / "sdtm" / "json").glob("*.json"))
    assert files
    for path in files:
        errors = [e.message for e in validator.iter_errors(json.loads(path.read_text()))]
        assert errors == [], path.name


def test_define_xml_passes_the_reference_xsd_and_lists_exactly_the_datasets(out: Path) -> None:
    xsd_path = reference_path("cdisc", "define-xml-2.1", "schema", "cdisc-define-2.1", "define2-1-0.xsd")
    schema = etree.XMLSchema(etree.parse(str(xsd_path)))
    define = etree.parse(str(out / "sdtm" / "define.xml"))
    assert schema.validate(define), schema.error_log
    described = {e.get("Name") for e in define.iterfind(".//odm:ItemGroupDef", NS)}
    written = {p.stem.upper() for p in (out / "sdtm").glob("*.xpt")}
    assert described == written
    for group in define.iterfind(".//odm:ItemGroupDef", NS):
        name = group.get("Name")
        refs = [define.find(f".//odm:ItemDef[@OID='{r.get('ItemOID')}']", NS).get("Name")
                for r in group.iterfind("odm:ItemRef", NS)]
        doc = json.loads((out / "sdtm" / "json" / f"{name.lower()}.json").read_text())
        assert refs == [c["name"] for c in doc["columns"]], name


def test_casebridge_validate_accepts_its_own_output(out: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "converter", "validate", str(out)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_report_accounts_for_every_fact(out: Path) -> None:
    report = json.loads((out / "report.json").read_text())
    assert report["summary"] == {"inputs": 1, "converted": 1, "failed": 0}
    assert report["unused_facts"] == {}  # every leaf of the seed is read by some rule
    uncoded = {u["text"] for u in report["unmapped"]["lcnec-cadonilimab-anlotinib"]}
    assert {"tracheoesophageal fistula", "cadonilimab", "IIIA"} <= uncoded  # kept as text, never a guessed code
