"""Define-XML 2.1: built from a hand-made Study + Terminology, checked with the reference XSD and
validate_define; validate_define on CDISC's examples; write_study end to end."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import pytest
from lxml import etree

from conftest import reference_path
from converter.mapping.terminology import Codelist, Term, Terminology
from converter.sdtm.model import Dataset, Study, Variable
from converter.validate.define_xsd import load_define_schema, odmlib_define_dir, validate_define
from converter.write import write_study
from converter.write.define_xml import define_xml_bytes, describe_dataset, iso8601_data_type, write_define

CREATED = datetime(2025, 3, 28, 14, 5, 9, tzinfo=timezone.utc)
NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3", "def": "http://www.cdisc.org/ns/def/v2.1",
      "xlink": "http://www.w3.org/1999/xlink"}
V = Variable


def _codelist(name: str, code: str, long_name: str, extensible: bool, *terms: Term) -> Codelist:
    cl = Codelist(name, code, long_name, extensible, Path(f"{name}.csv"), list(terms))
    cl.values.update(t.submission_value for t in terms)
    return cl


def _terminology() -> Terminology:
    lists = [
        _codelist("NY", "C66742", "No Yes Response", False, Term("N", "C49487", "No"), Term("Y", "C49488", "Yes")),
        _codelist("AESEV", "C66769", "Severity/Intensity Scale for Adverse Events", False,
                  Term("MILD", "C41338", "Mild"), Term("MODERATE", "C41339", "Moderate"),
                  Term("SEVERE", "C41340", "Severe")),
        _codelist("MITSCD", "C132263", "SDTM Microscopic Findings Test Code", True,
                  Term("KI67", "C123557", "Ki-67"), Term("PDL1", "C154807", "PD-L1"),
                  Term("SYP", "", "Synaptophysin", extension=True)),
        _codelist("UNIT", "C71620", "Unit", True, Term("%", "C25613", "Percentage"), Term("ng/L", "C67327", "ng/L")),
        _codelist("LBTESTCD", "C65047", "Laboratory Test Code", True, Term("PROGRP", "C156523", "ProGRP")),
        _codelist("SEX", "C66731", "Sex", False, Term("F", "C16576", "Female"), Term("M", "C20197", "Male")),
        _codelist("ROUTE", "C66729", "Route of Administration Response", True, Term("ORAL", "C38288", "Oral")),
    ]
    return Terminology(codelists={cl.name: cl for cl in lists}, ct_version="2025-03-28")


def _study() -> Study:
    common = [V("STUDYID", "Study Identifier", "Char", core="Req"), V("DOMAIN", "Domain Abbreviation", "Char", core="Req"),
              V("USUBJID", "Unique Subject Identifier", "Char", core="Req")]
    dm = Dataset("DM", "Demographics", [
        *common, V("SUBJID", "Subject Identifier for the Study", "Char", core="Req"),
        V("SEX", "Sex", "Char", core="Req", codelist="C66731", origin="Collected"),
        V("DTHDTC", "Date/Time of Death", "Char", core="Exp", origin="Collected"),
        V("DTHFL", "Subject Death Flag", "Char", core="Exp", codelist="C66742", origin="Derived"),
        V("AGE", "Age", "Num", core="Exp", origin="Collected")],
        [{"STUDYID": "CB01", "DOMAIN": "DM", "USUBJID": "CB01-001", "SUBJID": "001", "SEX": "M", "DTHDTC": "2023-03",
          "DTHFL": "Y", "AGE": 64}],
        keys=["STUDYID", "USUBJID"], domain_class="Special-Purpose")
    ae = Dataset("AE", "Adverse Events", [
        *common, V("AESEQ", "Sequence Number", "Num", core="Req", origin="Derived"),
        V("AETERM", "Reported Term for the Adverse Event", "Char", core="Req", origin="Collected"),
        V("AESEV", "Severity/Intensity", "Char", core="Perm", codelist="C66769", origin="Collected"),
        V("AESER", "Serious Event", "Char", core="Exp", codelist="C66742", origin="Collected"),
        V("AEROUTE", "Route of Administration", "Char", core="Perm", codelist="C66729"),
        V("AESTDTC", "Start Date/Time of Adverse Event", "Char", core="Exp", origin="Collected"),
        V("AEENDTC", "End Date/Time of Adverse Event", "Char", core="Exp", origin="Collected")],
        [{"STUDYID": "CB01", "DOMAIN": "AE", "USUBJID": "CB01-001", "AESEQ": 1, "AETERM": "INFUSION RELATED REACTION",
          "AESEV": "MODERATE", "AESER": "N", "AESTDTC": "2021-05-03", "AEENDTC": "2021-05-03"},
         {"STUDYID": "CB01", "DOMAIN": "AE", "USUBJID": "CB01-001", "AESEQ": 2, "AETERM": "RESPIRATORY FAILURE",
          "AESEV": "SEVERE", "AESER": "Y", "AESTDTC": "2023-03", "AEENDTC": "2023-03"}],
        keys=["STUDYID", "USUBJID", "AETERM", "AESTDTC"], domain_class="Events")
    lb = Dataset("LB", "Laboratory Test Results", [
        *common, V("LBSEQ", "Sequence Number", "Num", core="Req"),
        V("LBTESTCD", "Lab Test or Examination Short Name", "Char", core="Req", codelist="C65047"),
        V("LBTEST", "Lab Test or Examination Name", "Char", core="Req"),
        V("LBORRES", "Result or Finding in Original Units", "Char", core="Exp", origin="Collected"),
        V("LBORRESU", "Original Units", "Char", core="Exp", codelist="C71620", origin="Collected"),
        V("LBSTRESC", "Character Result/Finding in Std Format", "Char", core="Exp", origin="Derived"),
        V("LBSTRESN", "Numeric Result/Finding in Standard Units", "Num", core="Exp", origin="Derived"),
        V("LBDTC", "Date/Time of Specimen Collection", "Char", core="Exp", origin="Collected")],
        [{"STUDYID": "CB01", "DOMAIN": "LB", "USUBJID": "CB01-001", "LBSEQ": 1, "LBTESTCD": "PROGRP",
          "LBTEST": "Pro-Gastrin-Releasing Peptide", "LBORRES": "455.3", "LBORRESU": "ng/L", "LBSTRESC": "455.3",
          "LBSTRESN": 455.3, "LBDTC": "2021-04-28T09:15"}],
        keys=["STUDYID", "USUBJID", "LBTESTCD", "LBDTC"], domain_class="Findings")
    mi = Dataset("MI", "Microscopic Findings", [
        *common, V("MISEQ", "Sequence Number", "Num", core="Req"),
        V("MITESTCD", "Microscopic Examination Short Name", "Char", core="Req", codelist="C132263"),
        V("MITEST", "Microscopic Examination Name", "Char", core="Req"),
        V("MIORRES", "Result or Findings in Original Units", "Char", core="Exp", origin="Collected"),
        V("MIORRESU", "Original Units", "Char", core="Exp", codelist="C71620", origin="Collected")],
        [{"STUDYID": "CB01", "DOMAIN": "MI", "USUBJID": "CB01-001", "MISEQ": 1, "MITESTCD": "KI67",
          "MITEST": "Ki-67", "MIORRES": "80", "MIORRESU": "%"},
         {"STUDYID": "CB01", "DOMAIN": "MI", "USUBJID": "CB01-001", "MISEQ": 2, "MITESTCD": "SYP",
          "MITEST": "Synaptophysin", "MIORRES": "POSITIVE", "MIORRESU": None},
         {"STUDYID": "CB01", "DOMAIN": "MI", "USUBJID": "CB01-001", "MISEQ": 3, "MITESTCD": "PDL1",
          "MITEST": "PD-L1", "MIORRES": None, "MIORRESU": None}],
        keys=["STUDYID", "USUBJID", "MITESTCD"], domain_class="Findings")
    suppae = Dataset("SUPPAE", "Supplemental Qualifiers for AE", [
        V("STUDYID", "Study Identifier", "Char", core="Req"), V("RDOMAIN", "Related Domain Abbreviation", "Char", core="Req"),
        V("USUBJID", "Unique Subject Identifier", "Char", core="Req"), V("IDVAR", "Identifying Variable", "Char", core="Exp"),
        V("IDVARVAL", "Identifying Variable Value", "Char", core="Exp"),
        V("QNAM", "Qualifier Variable Name", "Char", core="Req"), V("QLABEL", "Qualifier Variable Label", "Char", core="Req"),
        V("QVAL", "Data Value", "Char", core="Req"), V("QORIG", "Origin", "Char", core="Req"),
        V("QEVAL", "Evaluator", "Char", core="Exp")],
        [{"STUDYID": "CB01", "RDOMAIN": "AE", "USUBJID": "CB01-001", "IDVAR": "AESEQ", "IDVARVAL": "1",
          "QNAM": "AETRTEM", "QLABEL": "Treatment Emergent Flag", "QVAL": "Y", "QORIG": "Derived", "QEVAL": None},
         {"STUDYID": "CB01", "RDOMAIN": "AE", "USUBJID": "CB01-001", "IDVAR": "AESEQ", "IDVARVAL": "2",
          "QNAM": "AEVERB", "QLABEL": "Verbatim Term in Case Report", "QVAL": "tracheo-oesophageal fistula",
          "QORIG": "COLLECTED", "QEVAL": None}],
        keys=["STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "QNAM"], domain_class="Relationship")
    return Study("CB01", {d.name: d for d in (suppae, mi, lb, ae, dm)})


@cache
def _define() -> tuple[bytes, tuple]:  # type: ignore[type-arg]
    data, issues = define_xml_bytes(_study(), _terminology(), CREATED)
    return data, tuple(issues)


def _doc() -> etree._Element:
    return etree.fromstring(_define()[0])


def _one(xpath: str) -> etree._Element:
    found = _doc().xpath(xpath, namespaces=NS)
    assert len(found) == 1, (xpath, found)
    return found[0]


def test_build_reports_no_problems() -> None:
    assert _define()[1] == ()


def test_passes_the_reference_xsd_and_validate_define() -> None:
    xsd = reference_path("cdisc", "define-xml-2.1", "schema", "cdisc-define-2.1", "define2-1-0.xsd")
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    assert schema.validate(etree.fromstring(_define()[0])), schema.error_log
    assert validate_define(_define()[0]) == []


def test_root_and_standards() -> None:
    root = _doc()
    assert root.get("ODMVersion") == "1.3.2" and root.get("CreationDateTime") == "2025-03-28T14:05:09"
    assert root.get(f"{{{NS['def']}}}Context") == "Submission" and root.get("FileType") == "Snapshot"
    assert root.get("FileOID")
    assert _one("//odm:GlobalVariables/odm:StudyName").text == "CB01"
    standards = [dict(s.attrib) for s in root.iterfind(".//def:Standard", NS)]
    assert standards == [
        {"OID": "STD.SDTMIG.3.4", "Name": "SDTMIG", "Type": "IG", "Version": "3.4", "Status": "Final"},
        {"OID": "STD.CT.SDTM.2025-03-28", "Name": "CDISC/NCI", "Type": "CT", "PublishingSet": "SDTM",
         "Version": "2025-03-28", "Status": "Final"}]


def test_lists_exactly_the_datasets_and_variables_written() -> None:
    study = _study()
    groups = _doc().findall(".//odm:ItemGroupDef", NS)
    assert [g.get("Name") for g in groups] == ["DM", "AE", "LB", "MI", "SUPPAE"]  # SDTMIG class order
    for group in groups:
        dataset = study.datasets[group.get("Name")]
        refs = [r.get("ItemOID") for r in group.findall("odm:ItemRef", NS)]
        assert refs == [f"IT.{dataset.name}.{v.name}" for v in dataset.variables]
        assert [r.get("OrderNumber") for r in group.findall("odm:ItemRef", NS)] == [
            str(i) for i in range(1, len(refs) + 1)]
    variable_defs = {oid for oid in _doc().xpath("//odm:ItemDef/@OID", namespaces=NS) if oid.count(".") == 2}
    assert variable_defs == {f"IT.{d.name}.{v.name}" for d in study.datasets.values() for v in d.variables}


def test_item_group_attributes() -> None:
    dm = _one("//odm:ItemGroupDef[@Name='DM']")
    assert dm.get("Repeating") == "No" and dm.get("IsReferenceData") == "No" and dm.get("Purpose") == "Tabulation"
    assert dm.get("SASDatasetName") == "DM" and dm.get("Domain") == "DM"
    assert dm.get(f"{{{NS['def']}}}StandardOID") == "STD.SDTMIG.3.4"
    assert dm.get(f"{{{NS['def']}}}Structure") == "One record per USUBJID"
    assert dm.find("def:Class", NS).get("Name") == "SPECIAL PURPOSE"
    leaf = dm.find("def:leaf", NS)
    assert leaf.get("ID") == dm.get(f"{{{NS['def']}}}ArchiveLocationID") == "LF.DM"
    assert leaf.get(f"{{{NS['xlink']}}}href") == "dm.xpt" and leaf.find("def:title", NS).text == "dm.xpt"
    supp = _one("//odm:ItemGroupDef[@Name='SUPPAE']")
    assert supp.get("Domain") == "AE" and supp.find("def:Class", NS).get("Name") == "RELATIONSHIP"
    assert _one("//odm:ItemGroupDef[@Name='AE']").get("Repeating") == "Yes"


def test_item_refs_keys_and_mandatory() -> None:
    refs = {r.get("ItemOID"): r for r in _one("//odm:ItemGroupDef[@Name='AE']").findall("odm:ItemRef", NS)}
    assert {k: r.get("KeySequence") for k, r in refs.items() if r.get("KeySequence")} == {
        "IT.AE.STUDYID": "1", "IT.AE.USUBJID": "2", "IT.AE.AETERM": "3", "IT.AE.AESTDTC": "4"}
    assert refs["IT.AE.AETERM"].get("Mandatory") == "Yes"    # Req
    assert refs["IT.AE.AESER"].get("Mandatory") == "No"      # Exp
    assert refs["IT.AE.AESEV"].get("Mandatory") == "No"      # Perm


def _item(oid: str) -> etree._Element:
    return _one(f"//odm:ItemDef[@OID='{oid}']")


def test_item_defs_data_types_and_lengths() -> None:
    assert dict(_item("IT.AE.AETERM").attrib) == {"OID": "IT.AE.AETERM", "Name": "AETERM", "DataType": "text",
                                                  "Length": "25", "SASFieldName": "AETERM"}
    assert _item("IT.AE.AESEQ").get("DataType") == "integer" and _item("IT.AE.AESEQ").get("Length") == "1"
    assert _item("IT.DM.AGE").get("DataType") == "integer" and _item("IT.DM.AGE").get("Length") == "2"
    stresn = _item("IT.LB.LBSTRESN")
    assert (stresn.get("DataType"), stresn.get("Length"), stresn.get("SignificantDigits")) == ("float", "5", "1")
    assert _item("IT.DM.DTHDTC").get("DataType") == "partialDate" and _item("IT.DM.DTHDTC").get("Length") is None
    assert _item("IT.AE.AESTDTC").get("DataType") == "partialDate"
    assert _item("IT.AE.AEENDTC").get("DataType") == "partialDate"
    assert _item("IT.LB.LBDTC").get("DataType") == "partialDatetime"
    description = _item("IT.AE.AETERM").find("odm:Description/odm:TranslatedText", NS)
    assert description.text == "Reported Term for the Adverse Event"
    assert description.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert dict(_item("IT.AE.AETERM").find("def:Origin", NS).attrib) == {"Type": "Collected", "Source": "Investigator"}
    assert dict(_item("IT.DM.DTHFL").find("def:Origin", NS).attrib) == {"Type": "Derived", "Source": "Sponsor"}


def test_codelists_hold_only_the_values_used() -> None:
    codelists = {c.get("OID"): c for c in _doc().findall(".//odm:CodeList", NS)}
    assert list(codelists) == ["CL.AESEV", "CL.LBTESTCD", "CL.MITSCD", "CL.NY", "CL.SEX", "CL.UNIT"]
    aesev = codelists["CL.AESEV"]
    assert [i.get("CodedValue") for i in aesev.findall("odm:EnumeratedItem", NS)] == ["MODERATE", "SEVERE"]
    assert [i.find("odm:Alias", NS).get("Name") for i in aesev.findall("odm:EnumeratedItem", NS)] == ["C41339", "C41340"]
    assert aesev.find("odm:Alias", NS).attrib == {"Context": "nci:ExtCodeID", "Name": "C66769"}
    assert aesev.get("Name") == "Severity/Intensity Scale for Adverse Events"
    assert aesev.get(f"{{{NS['def']}}}StandardOID") == "STD.CT.SDTM.2025-03-28"
    assert [i.get("CodedValue") for i in codelists["CL.NY"].findall("odm:EnumeratedItem", NS)] == ["N", "Y"]
    assert [i.get("CodedValue") for i in codelists["CL.UNIT"].findall("odm:EnumeratedItem", NS)] == ["%", "ng/L"]


def test_sponsor_extension_is_marked_and_has_no_c_code() -> None:
    items = {i.get("CodedValue"): i for i in _one("//odm:CodeList[@OID='CL.MITSCD']").findall("odm:EnumeratedItem", NS)}
    assert list(items) == ["KI67", "PDL1", "SYP"]
    assert items["SYP"].get(f"{{{NS['def']}}}ExtendedValue") == "Yes" and items["SYP"].find("odm:Alias", NS) is None
    assert items["KI67"].get(f"{{{NS['def']}}}ExtendedValue") is None
    assert items["KI67"].find("odm:Alias", NS).get("Name") == "C123557"


@pytest.mark.parametrize(("name", "values", "expected"), [
    ("AESTDTC", ["2021-05-03"], "date"),
    ("AESTDTC", ["2021-05-03T10:30:00", "2021-05-03T10:30:00.5+02:00"], "datetime"),
    ("AESTDTC", ["2021", "2021-05", "2021-05-03"], "partialDate"),
    ("AESTDTC", ["2021-05-03T10", "2021-05", "2021-05-03T10:30:00"], "partialDatetime"),
    ("AESTDTC", ["2003---15", "--12-15", "2021-05"], "incompleteDatetime"),
    ("AEDUR", ["P2Y3M", "PT5H30M", "P1W"], "durationDatetime"),
    ("QSEVLINT", ["2021-05-01/2021-05-31", "2021-05-01/P1M"], "intervalDatetime"),
    ("AESTDTC", [], "datetime"),
    ("CMDUR", [], "durationDatetime"),
    ("AESTDTC", ["2021-05", "P1M"], "text"),
])
def test_iso8601_data_types(name: str, values: list[str], expected: str) -> None:
    assert iso8601_data_type(name, values) == (expected, [])


def test_non_iso_dates_are_text_with_a_warning() -> None:
    assert iso8601_data_type("AESTDTC", ["2021-05", "May 2021", "2021-5"]) == ("text", ["2021-5", "May 2021"])
    dataset = _study().datasets["AE"]
    dataset.rows[1]["AESTDTC"] = "03/2023"
    columns, issues = describe_dataset(dataset)
    assert [(i.severity, i.rule, i.location) for i in issues] == [
        ("warning", "sdtm.write.iso8601", "AE[USUBJID=CB01-001,AESEQ=2,row=2].AESTDTC")]
    assert next(c for c in columns if c.name == "AESTDTC").data_type == "text"


def test_code_list_refs_only_where_a_codelist_was_written() -> None:
    assert _item("IT.AE.AESEV").find("odm:CodeListRef", NS).get("CodeListOID") == "CL.AESEV"
    assert _item("IT.AE.AESER").find("odm:CodeListRef", NS).get("CodeListOID") == "CL.NY"
    assert _item("IT.DM.DTHFL").find("odm:CodeListRef", NS).get("CodeListOID") == "CL.NY"
    assert _item("IT.AE.AEROUTE").find("odm:CodeListRef", NS) is None   # no value used: no empty CodeList
    assert _item("IT.AE.AETERM").find("odm:CodeListRef", NS) is None


def test_value_level_metadata_for_test_codes() -> None:
    assert _item("IT.LB.LBORRES").find("def:ValueListRef", NS).get("ValueListOID") == "VL.LB.LBORRES"
    refs = _one("//def:ValueListDef[@OID='VL.LB.LBORRES']").findall("odm:ItemRef", NS)
    assert [(r.get("ItemOID"), r.find("def:WhereClauseRef", NS).get("WhereClauseOID")) for r in refs] == [
        ("IT.LB.LBORRES.PROGRP", "WC.LB.LBTESTCD.PROGRP")]
    check = _one("//def:WhereClauseDef[@OID='WC.LB.LBTESTCD.PROGRP']/odm:RangeCheck")
    assert (check.get("Comparator"), check.get(f"{{{NS['def']}}}ItemOID"), check.find("odm:CheckValue", NS).text) == (
        "EQ", "IT.LB.LBTESTCD", "PROGRP")
    progrp = _item("IT.LB.LBORRES.PROGRP")
    assert (progrp.get("Name"), progrp.get("DataType"), progrp.get("SignificantDigits")) == ("PROGRP", "float", "1")
    assert progrp.find("odm:Description/odm:TranslatedText", NS).text == "Pro-Gastrin-Releasing Peptide"
    assert _one("//def:ValueListDef[@OID='VL.LB.LBSTRESC']") is not None
    mi = {r.get("ItemOID"): r.get("Mandatory")
          for r in _one("//def:ValueListDef[@OID='VL.MI.MIORRES']").findall("odm:ItemRef", NS)}
    assert mi == {"IT.MI.MIORRES.KI67": "Yes", "IT.MI.MIORRES.SYP": "Yes"}   # PDL1 has no result: no entry
    assert _item("IT.MI.MIORRES.KI67").get("DataType") == "integer"
    assert _item("IT.MI.MIORRES.SYP").get("DataType") == "text" and _item("IT.MI.MIORRES.SYP").get("Length") == "8"


def test_value_level_metadata_for_supplemental_qualifiers() -> None:
    refs = _one("//def:ValueListDef[@OID='VL.SUPPAE.QVAL']").findall("odm:ItemRef", NS)
    assert [r.get("ItemOID") for r in refs] == ["IT.SUPPAE.QVAL.AETRTEM", "IT.SUPPAE.QVAL.AEVERB"]
    verbatim = _item("IT.SUPPAE.QVAL.AEVERB")
    assert verbatim.find("odm:Description/odm:TranslatedText", NS).text == "Verbatim Term in Case Report"
    assert verbatim.get("Length") == str(len("tracheo-oesophageal fistula"))
    assert verbatim.find("def:Origin", NS).get("Type") == "Collected"
    assert _item("IT.SUPPAE.QVAL.AETRTEM").find("def:Origin", NS).get("Type") == "Derived"
    check = _one("//def:WhereClauseDef[@OID='WC.SUPPAE.QNAM.AEVERB']/odm:RangeCheck")
    assert check.get(f"{{{NS['def']}}}ItemOID") == "IT.SUPPAE.QNAM"


def test_output_is_deterministic_and_sorted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(CREATED.timestamp())))
    shuffled = _study()
    shuffled.datasets = dict(reversed(list(shuffled.datasets.items())))
    assert define_xml_bytes(shuffled, _terminology())[0] == _define()[0]
    oids = _doc().xpath("//odm:ItemDef/@OID", namespaces=NS)
    assert oids == sorted(oids)


def test_problems_in_codelists_and_origins_are_reported() -> None:
    study = _study()
    study.datasets["AE"].rows[0]["AESEV"] = "LIFE THREATENING"
    study.datasets["LB"].rows[0]["LBORRESU"] = "pg/mL"
    study.datasets["DM"].variables[4] = V("SEX", "Sex", "Char", codelist="C99999", origin="CRF")
    study.datasets["MI"].domain_class = "Findings (oncology)"
    study.datasets["DM"].variables[7] = V("AGE", "Age", "Num", codelist="C66781")
    data, issues = define_xml_bytes(study, _terminology(), CREATED)
    found = {(i.severity, i.rule, i.location) for i in issues}
    assert ("error", "define.codelist", "AE.AESEV") in found             # non-extensible
    assert ("warning", "define.codelist", "LB.LBORRESU, MI.MIORRESU") in found   # extensible: sponsor value
    assert ("warning", "define.codelist", "DM.SEX") in found              # C99999 unknown
    assert ("warning", "define.origin", "DM.SEX") in found
    assert ("warning", "define.class", "MI") in found
    assert ("warning", "define.codelist", "DM.AGE") in found
    assert validate_define(data) == []
    doc = etree.fromstring(data)
    unit = doc.xpath("//odm:CodeList[@OID='CL.UNIT']/odm:EnumeratedItem[@CodedValue='pg/mL']", namespaces=NS)[0]
    assert unit.get(f"{{{NS['def']}}}ExtendedValue") == "Yes"
    assert doc.xpath("//odm:ItemDef[@OID='IT.DM.SEX']/odm:CodeListRef", namespaces=NS) == []


def test_ct_version_falls_back_to_the_study_and_disagreement_is_reported() -> None:
    terminology = _terminology()
    study = _study()
    study.ct_version = "SDTM CT 2025-03-28"
    assert define_xml_bytes(study, terminology, CREATED)[1] == []
    study.ct_version = "SDTM CT 2024-09-27"
    data, issues = define_xml_bytes(study, terminology, CREATED)
    assert b'Version="2025-03-28"' in data and [i.rule for i in issues] == ["define.standards"]
    terminology.ct_version = ""
    data, issues = define_xml_bytes(study, terminology, CREATED)
    assert b'Version="2024-09-27"' in data and issues == []
    study.ct_version = ""
    data, issues = define_xml_bytes(study, terminology, CREATED)
    assert b"CDISC/NCI" not in data and [i.rule for i in issues] == ["define.standards"]
    assert validate_define(data) == []


def test_write_define_writes_or_refuses(tmp_path: Path) -> None:
    path, issues = write_define(_study(), _terminology(), tmp_path, CREATED)
    assert path == tmp_path / "define.xml" and issues == [] and path.read_bytes() == _define()[0]
    study = _study()
    study.datasets["AE"].rows[0]["AETERM"] = "FEVER\x07"
    study.datasets["LB"].variables[5] = V("LBTEST", "Lab Test\x00Name", "Char")
    path, issues = write_define(study, _terminology(), tmp_path / "refused", CREATED)
    assert path is None and not (tmp_path / "refused").exists()
    assert {(i.rule, i.location) for i in issues} == {
        ("sdtm.write.control_char", "AE[USUBJID=CB01-001,AESEQ=1,row=1].AETERM"),
        ("sdtm.write.control_char", "LB.LBTEST")}


def test_validate_define_accepts_cdisc_example() -> None:
    path = reference_path("cdisc", "define-xml-2.1", "examples", "DefineXML-2-1-SDTM", "defineV21-SDTM.xml")
    assert validate_define(path) == []


def test_validate_define_flags_the_msg2_standard_name_typo() -> None:
    path = reference_path("cdisc", "examples", "sdtm-msg2", "define.xml")
    issues = validate_define(path)
    semantic = [i for i in issues if i.rule == "define.standard"]
    assert len(semantic) == 1 and "'STDTMIG'" in semantic[0].message
    assert semantic[0].location == f"{path}:63"
    assert any(i.rule == "define.xsd" and "STDTMIG" in i.message and i.location.endswith(":63") for i in issues)


def test_validate_define_reports_dangling_references_with_lines() -> None:
    broken = _define()[0].replace(b'<CodeListRef CodeListOID="CL.AESEV"/>', b'<CodeListRef CodeListOID="CL.SEVERITY"/>')
    issues = validate_define(broken)
    assert [(i.rule, i.message) for i in issues] == [
        ("define.reference", "CodeListRef/@CodeListOID 'CL.SEVERITY' names no CodeList")]
    line = next(n for n, text in enumerate(broken.decode().splitlines(), 1) if "CL.SEVERITY" in text)
    assert issues[0].location == f"define.xml:{line}"


def test_validate_define_reports_xsd_errors_and_bad_xml(tmp_path: Path) -> None:
    invalid = _define()[0].replace(b'Repeating="Yes"', b'Repeating="Often"', 1)
    issues = validate_define(invalid)
    assert [i.rule for i in issues] == ["define.xsd"] and "Often" in issues[0].message
    assert issues[0].location.startswith("define.xml:")
    torn = tmp_path / "define.xml"
    torn.write_bytes(_define()[0][:500])
    assert [i.rule for i in validate_define(torn)] == ["define.syntax"]
    assert [i.rule for i in validate_define(tmp_path / "missing.xml")] == ["define.read"]


def test_schema_imports_resolve_inside_odmlib(tmp_path: Path) -> None:
    """A copy of odmlib's Define-XML folder on its own has no ../../odm/1.3.2: the resolver finds it in odmlib."""
    copy = tmp_path / "define" / "2.1"
    shutil.copytree(odmlib_define_dir(), copy)
    assert not (tmp_path / "odm" / "1.3.2" / "ODM1-3-2-foundation.xsd").exists()
    schema = load_define_schema(copy)
    assert schema.validate(etree.fromstring(_define()[0])), schema.error_log
    assert load_define_schema() is load_define_schema()


def _written(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_write_study_writes_every_format_and_a_matching_define(tmp_path: Path) -> None:
    paths, issues = write_study(_study(), tmp_path / "one", _terminology(), {"xpt", "json", "csv"}, CREATED)
    assert [i for i in issues if i.severity != "info"] == []
    files = _written(tmp_path / "one")
    assert set(files) == {f"sdtm/{n}.xpt" for n in ("ae", "dm", "lb", "mi", "suppae")} | {
        f"sdtm/json/{n}.json" for n in ("ae", "dm", "lb", "mi", "suppae")} | {
        f"sdtm/csv/{n}.csv" for n in ("ae", "dm", "lb", "mi", "suppae")} | {"sdtm/define.xml"}
    assert sorted(paths) == sorted(tmp_path / "one" / f for f in files)
    assert validate_define(tmp_path / "one" / "sdtm" / "define.xml") == []
    again, _ = write_study(_study(), tmp_path / "two", _terminology(), {"csv", "json", "xpt"}, CREATED)
    assert _written(tmp_path / "two") == files


def test_write_study_refuses_a_dataset_and_leaves_it_out_of_define(tmp_path: Path) -> None:
    write_study(_study(), tmp_path, _terminology(), created=CREATED)
    assert (tmp_path / "sdtm" / "ae.xpt").exists()
    study = _study()
    study.datasets["AE"].rows[1]["AETERM"] = "Ösophagusfistel"
    paths, issues = write_study(study, tmp_path, _terminology(), created=CREATED)
    assert ("error", "xpt.value") in {(i.severity, i.rule) for i in issues}
    assert ("error", "sdtm.write.refused", "AE") in {(i.severity, i.rule, i.location) for i in issues}
    assert not (tmp_path / "sdtm" / "ae.xpt").exists() and not (tmp_path / "sdtm" / "json" / "ae.json").exists()
    assert {i.location for i in issues if i.rule == "sdtm.write.stale"} == {
        str(tmp_path / "sdtm" / "ae.xpt"), str(tmp_path / "sdtm" / "json" / "ae.json")}
    define = etree.parse(str(tmp_path / "sdtm" / "define.xml"))
    assert define.xpath("//odm:ItemGroupDef/@Name", namespaces=NS) == ["DM", "LB", "MI", "SUPPAE"]
    assert define.xpath("//odm:ItemDef[starts-with(@OID, 'IT.AE.')]", namespaces=NS) == []
    assert tmp_path / "sdtm" / "define.xml" in paths


def test_write_study_with_nothing_to_write_removes_the_old_define(tmp_path: Path) -> None:
    write_study(_study(), tmp_path, _terminology(), created=CREATED)
    study = _study()
    study.datasets = {"AE": study.datasets["AE"]}
    study.datasets["AE"].rows[0]["AESEQ"] = "1"
    paths, issues = write_study(study, tmp_path, _terminology(), created=CREATED)
    assert paths == [] and not (tmp_path / "sdtm" / "define.xml").exists()
    assert str(tmp_path / "sdtm" / "define.xml") in {i.location for i in issues if i.rule == "sdtm.write.stale"}


def test_write_study_json_only_accepts_text_xpt_cannot_hold(tmp_path: Path) -> None:
    study = _study()
    study.datasets["AE"].rows[1]["AETERM"] = "Ösophagusfistel"
    paths, issues = write_study(study, tmp_path, _terminology(), {"json"}, CREATED)
    assert issues == []
    assert {p.name for p in paths} == {"ae.json", "dm.json", "lb.json", "mi.json", "suppae.json", "define.xml"}
    define = etree.parse(str(tmp_path / "sdtm" / "define.xml"))
    assert define.xpath("//def:leaf[@ID='LF.AE']/@xlink:href", namespaces=NS) == ["json/ae.json"]


def test_write_study_problems_become_issues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, issues = write_study(_study(), tmp_path, _terminology(), {"sas7bdat"}, CREATED)
    assert paths == [] and [i.rule for i in issues] == ["sdtm.write.format"]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    paths, issues = write_study(_study(), blocker, _terminology(), created=CREATED)
    assert paths == [] and issues[-1].rule == "sdtm.write.io"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    paths, issues = write_study(_study(), tmp_path, _terminology())
    assert paths == [] and [i.rule for i in issues] == ["env.source_date_epoch"]
