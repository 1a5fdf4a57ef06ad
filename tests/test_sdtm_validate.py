"""The SDTM validator: a clean hand-built study passes; each rule fails on a broken copy; real SDTM is read."""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, reference_path
from converter.mapping.terminology import Terminology, load_terminology
from converter.sdtm import metadata
from converter.sdtm.model import Dataset, Study, Variable
from converter.validate.issues import Issue
from converter.validate.sdtm import read_sdtm_folder, rules, validate_study

S, U = "CASEBRIDGE", "CB-001"


@pytest.fixture(scope="module")
def terminology() -> Terminology:
    return load_terminology(ROOT / "mappings" / "terminology")


def _dataset(name: str, rows: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> Dataset:
    """A dataset with the SDTMIG Req/Exp variables, the Perm ones the rows use, and ``extra`` class variables."""
    used = {k for r in rows for k in r}
    variables = [v for v in metadata.variables(name) if v.core in ("Req", "Exp") or v.name in used]
    variables += [metadata.class_variable(name, e) for e in extra]  # type: ignore[misc]
    domain = {"DOMAIN": metadata.domain_meta(name).domain} if metadata.is_variable(name, "DOMAIN") else {}
    table = [{v.name: {"STUDYID": S, "USUBJID": U, **domain, **r}.get(v.name) for v in variables} for r in rows]
    return Dataset(name, metadata.dataset_label(name), variables, table, [], metadata.dataset_class(name))


def clean_study() -> Study:
    """One LCNEC-like subject: death from a fatal AE, an AE treated by a CM (RELREC), IHC, staging, proGRP."""
    datasets = [
        _dataset("DM", [{"SUBJID": "001", "RFSTDTC": "2021-05-14", "DTHDTC": "2023-03", "DTHFL": "Y", "SITEID": "01",
                         "AGE": 63, "AGEU": "YEARS", "SEX": "M", "ARMNRS": "NOT ASSIGNED", "COUNTRY": "CHN"}]),
        _dataset("AE", [
            {"AESEQ": 1, "AETERM": "Infusion related reaction", "AEDECOD": "Infusion related reaction",
             "AESER": "N", "AEOUT": "RECOVERED/RESOLVED", "AETOXGR": "2", "AESTDTC": "2021-06-01",
             "AEENDTC": "2021-06-02", "AESTDY": 19, "AEENDY": 20},
            {"AESEQ": 2, "AETERM": "Respiratory failure", "AEDECOD": "Respiratory failure", "AESER": "Y",
             "AEOUT": "FATAL", "AESDTH": "Y", "AETOXGR": "5", "AESTDTC": "2023-03", "AEENDTC": "2023-03"}]),
        _dataset("DS", [{"DSSEQ": 1, "DSTERM": "Death", "DSDECOD": "DEATH", "DSCAT": "DISPOSITION EVENT",
                         "DSSTDTC": "2023-03"}]),
        _dataset("CM", [{"CMSEQ": 1, "CMTRT": "Methylprednisolone", "CMDOSE": 40, "CMDOSU": "mg",
                         "CMROUTE": "INTRAVENOUS", "CMSTDTC": "2021-06-01", "CMSTDY": 19}]),
        _dataset("MI", [
            {"MISEQ": 1, "MITESTCD": "CGA", "MITEST": "Chromogranin A", "MIORRES": "POSITIVE", "MISTRESC": "POSITIVE",
             "MISPEC": "TUMOR TISSUE", "MIMETHOD": "IHC", "MIDTC": "2021-04-20", "MIDY": -24},
            {"MISEQ": 2, "MITESTCD": "NKX2_1", "MITEST": "NK2 Homeobox 1", "MIORRES": "POSITIVE",
             "MISTRESC": "POSITIVE", "MISPEC": "TUMOR TISSUE", "MIMETHOD": "IHC", "MIDTC": "2021-04-20", "MIDY": -24}]),
        _dataset("RS", [
            {"RSSEQ": 1, "RSTESTCD": "AJCC204", "RSTEST": "AJCC2-Anatomic Stage", "RSCAT": "AJCC V8",
             "RSORRES": "IIIA", "RSDTC": "2021-04-20", "RSDY": -24},
            {"RSSEQ": 2, "RSTESTCD": "OVRLRESP", "RSTEST": "Overall Response", "RSCAT": "RECIST 1.1",
             "RSORRES": "PR", "RSSTRESC": "PR", "RSDTC": "2021-08-01", "RSDY": 80}]),
        _dataset("LB", [{"LBSEQ": 1, "LBTESTCD": "PROGRP", "LBTEST": "Pro-gastrin Releasing Peptide", "LBORRES": "120",
                         "LBORRESU": "ng/L", "LBSTRESC": "120", "LBSTRESN": 120.0, "LBSTRESU": "ng/L",
                         "LBSPEC": "SERUM", "LBDTC": "2021-05-10", "LBDY": -4}]),
        _dataset("SUPPAE", [{"RDOMAIN": "AE", "IDVAR": "AESEQ", "IDVARVAL": "1", "QNAM": "AETRTEM",
                             "QLABEL": "Treatment Emergent Flag", "QVAL": "Y", "QORIG": "Derived"}]),
        _dataset("RELREC", [{"RDOMAIN": "AE", "IDVAR": "AESEQ", "IDVARVAL": "1", "RELID": "1"},
                            {"RDOMAIN": "CM", "IDVAR": "CMSEQ", "IDVARVAL": "1", "RELID": "1"}]),
    ]
    return Study(S, {d.name: d for d in datasets}, ct_version="2025-03-28")


def _run(study: Study, terminology: Terminology, **kw: Any) -> list[Issue]:
    return validate_study(study, terminology, **kw)


def _of(issues: list[Issue], rule: str) -> list[Issue]:
    return [i for i in issues if i.rule == rule]


def _set(study: Study, dataset: str, row: int, **values: Any) -> Study:
    study.datasets[dataset].rows[row].update(values)
    return study


def _drop_variable(study: Study, dataset: str, name: str) -> Study:
    ds = study.datasets[dataset]
    ds.variables = [v for v in ds.variables if v.name != name]
    for row in ds.rows:
        row.pop(name, None)
    return study


def test_clean_study_passes(terminology: Terminology) -> None:
    issues = _run(clean_study(), terminology)
    assert [str(i) for i in issues if i.severity != "info"] == []
    assert [(i.rule, i.message, i.location) for i in issues] == [
        ("sdtm.ex.absent", "EX not present: case report, no study treatment; anticancer therapy in CM", "EX")]


def test_rule_severities_come_from_the_rule_table(terminology: Terminology) -> None:
    table = rules()
    study = _set(clean_study(), "DM", 0, SEX="male")
    for issue in _run(study, terminology):
        assert issue.severity == table[issue.rule].severity


# One broken copy per rule: (rule id, mutation, expected location, a fragment of the message)
def _broken(name: str) -> Study:  # noqa: C901 - a table of small mutations
    s = clean_study()
    ae, dm = s.datasets["AE"], s.datasets["DM"]
    if name == "dataset.unknown":
        s.datasets["XX"] = Dataset("XX", "Custom", [Variable("STUDYID", "Study Identifier", "Char")], [{"STUDYID": S}])
    elif name == "dataset.empty":
        s.datasets["DS"].rows.clear()
        _set(s, "DM", 0, DTHFL=None, DTHDTC=None)
        s.datasets["AE"].rows.pop()
    elif name == "dataset.name":
        s.datasets["LONGNAME9"] = Dataset("LONGNAME9", "Custom", [], [{}])
    elif name == "dataset.label":
        s.datasets["AE"].label = ""
    elif name == "variable.unknown":
        ae.variables.append(Variable("AEFOO", "Foo", "Char"))
    elif name == "variable.model":
        s.datasets["CM"] = _dataset("CM", [{"CMSEQ": 1, "CMTRT": "Methylprednisolone", "CMLNKGRP": "L1"}],
                                    extra=("CMLNKGRP",))
    elif name == "variable.name":
        ae.variables.append(Variable("AE_LONGNAME", "Long", "Char"))
    elif name == "variable.label.length":
        ae.variables[4] = dataclasses.replace(ae.variables[4], label="x" * 41)
    elif name == "variable.label.mismatch":
        ae.variables[4] = dataclasses.replace(ae.variables[4], label="Term")
    elif name == "variable.type":
        _set(s, "AE", 0, AETOXGR=2)
    elif name == "variable.type.declared":
        ae.variables[3] = dataclasses.replace(ae.variables[3], type="Char")
    elif name == "variable.required.missing":
        _drop_variable(s, "AE", "AETERM")
    elif name == "variable.required.null":
        _set(s, "AE", 0, AETERM=None)
    elif name == "dictionary.uncoded":
        _set(s, "AE", 0, AEDECOD=None)
    elif name == "variable.required.unreported":
        _set(s, "DM", 0, COUNTRY=None)
    elif name == "variable.expected.missing":
        _drop_variable(s, "AE", "AESER")
    elif name == "variable.order":
        ae.variables[3], ae.variables[4] = ae.variables[4], ae.variables[3]
    elif name == "value.length":
        _set(s, "AE", 0, AETERM="x" * 201)
    elif name == "value.length.bytes":
        _set(s, "AE", 0, AETERM="é" * 150)
    elif name == "value.ascii":
        _set(s, "AE", 0, AETERM="Infusion\u2013related reaction")
    elif name == "iso8601":
        _set(s, "AE", 0, AESTDTC="01/06/2021", AESTDY=None)
    elif name == "iso8601.calendar":
        _set(s, "AE", 0, AEENDTC="2021-02-30", AEENDY=None)
    elif name == "domain.value":
        _set(s, "AE", 0, DOMAIN="CM")
    elif name == "testcd.format":
        _set(s, "MI", 0, MITESTCD="1CGA")
    elif name == "test.length":
        _set(s, "MI", 0, MITEST="x" * 41)
    elif name == "armcd.length":
        _set(s, "DM", 0, ARMCD="A" * 21)
    elif name == "dthfl.value":
        _set(s, "DM", 0, DTHFL="N")
    elif name == "ct.nonextensible":
        _set(s, "DM", 0, SEX="male")
    elif name == "ct.extensible":
        _set(s, "CM", 0, CMROUTE="drip")
    elif name == "ct.pair":
        _set(s, "MI", 1, MITEST="Ki-67")
    elif name == "seq.unique":
        _set(s, "AE", 1, AESEQ=1)
    elif name == "dm.unique":
        dm.rows.append(dict(dm.rows[0]))
    elif name == "usubjid.dm":
        _set(s, "CM", 0, USUBJID="CB-999")
    elif name == "studyid.consistent":
        _set(s, "CM", 0, STUDYID="OTHER")
    elif name == "death.dthdtc_dthfl":
        _set(s, "DM", 0, DTHFL=None)
    elif name == "death.dthfl_dthdtc":
        _set(s, "DM", 0, DTHDTC=None)
    elif name == "death.ds_dthfl":
        _set(s, "DM", 0, DTHFL=None, DTHDTC=None)
    elif name == "death.dthfl_ds":
        del s.datasets["DS"]
    elif name == "death.ds_date":
        _set(s, "DS", 0, DSSTDTC="2023-04")
    elif name == "ae.fatal_sdth":
        _set(s, "AE", 1, AESDTH=None)
    elif name == "ae.sdth_fatal":
        s.datasets["AE"] = _dataset("AE", [dict(r, AESDTH="Y") for r in ae.rows])
    elif name == "ae.fatal_dthfl":
        _set(s, "DM", 0, DTHFL=None)
    elif name == "ae.sdth_dthfl":
        _set(s, "DM", 0, DTHFL=None)
    elif name == "ae.fatal_date":
        _set(s, "AE", 1, AEENDTC="2023-02")
    elif name == "dd.dthfl":
        s.datasets["DD"] = _dataset("DD", [{"DDSEQ": 1, "DDTESTCD": "PRCDTH", "DDTEST": "Primary Cause of Death",
                                            "DDORRES": "Respiratory failure"}])
        _set(s, "DM", 0, DTHFL=None)
    elif name == "ref.dataset":
        _set(s, "RELREC", 1, RDOMAIN="PR")
    elif name == "ref.dataset.supp":
        _set(s, "SUPPAE", 0, RDOMAIN="CM")
    elif name == "ref.idvar":
        _set(s, "SUPPAE", 0, IDVAR="AEXSEQ")
    elif name == "ref.record":
        _set(s, "SUPPAE", 0, IDVARVAL="9")
    elif name == "ref.record.relrec":
        _set(s, "RELREC", 1, IDVARVAL="7")
    elif name == "relrec.reltype":
        _set(s, "RELREC", 0, RELTYPE="ONE")
    elif name == "relrec.relid":
        s.datasets["RELREC"].rows.pop()
    elif name == "supp.unique":
        s.datasets["SUPPAE"].rows.append(dict(s.datasets["SUPPAE"].rows[0]))
    elif name == "supp.qnam":
        _set(s, "SUPPAE", 0, QNAM="AESER", QLABEL="Serious Event")
    elif name == "dy.value":
        _set(s, "AE", 0, AESTDY=18)
    elif name == "dy.incomplete":
        _set(s, "AE", 1, AESTDY=5)
    elif name == "dy.missing":
        _set(s, "AE", 0, AESTDY=None)
    else:
        raise AssertionError(name)
    return s


A1, A2 = f"AE[USUBJID={U},AESEQ=1]", f"AE[USUBJID={U},AESEQ=2]"
SUPP = f"SUPPAE[USUBJID={U},IDVAR=AESEQ,IDVARVAL=1,QNAM=AETRTEM]"
CASES = [
    ("dataset.unknown", "sdtm.dataset.unknown", "XX", "not an SDTMIG 3.4 dataset"),
    ("dataset.empty", "sdtm.dataset.empty", "DS", "no records"),
    ("dataset.name", "sdtm.dataset.name", "LONGNAME9", "not 2-8"),
    ("dataset.label", "sdtm.dataset.label", "AE", "1-40 characters"),
    ("variable.unknown", "sdtm.variable.unknown", "AE.AEFOO", "not a variable of AE"),
    ("variable.model", "sdtm.variable.model", "CM.CMLNKGRP", "allows it in Interventions class domains"),
    ("variable.name", "sdtm.variable.name", "AE.AE_LONGNAME", "not 1-8"),
    ("variable.label.length", "sdtm.variable.label.length", "AE.AETERM", "41 characters"),
    ("variable.label.mismatch", "sdtm.variable.label.mismatch", "AE.AETERM",
     "SDTMIG 3.4 label is 'Reported Term for the Adverse Event'"),
    ("variable.type", "sdtm.variable.type", f"{A1}.AETOXGR", "AETOXGR = 2 is not Char"),
    ("variable.type.declared", "sdtm.variable.type", "AE.AESEQ", "AESEQ is Char; SDTMIG 3.4 type is Num"),
    ("variable.required.missing", "sdtm.variable.required.missing", "AE.AETERM", "Required variable AETERM"),
    ("variable.required.null", "sdtm.variable.required.null", f"{A1}.AETERM", "Required by SDTMIG 3.4 but null"),
    ("dictionary.uncoded", "sdtm.dictionary.uncoded", f"{A1}.AEDECOD", "no verified dictionary code"),
    ("variable.required.unreported", "sdtm.variable.required.unreported", "DM[USUBJID=CB-001].COUNTRY", "does not report it"),
    ("variable.expected.missing", "sdtm.variable.expected.missing", "AE.AESER", "Expected variable AESER"),
    ("variable.order", "sdtm.variable.order", "AE.AESEQ", "AESEQ should come before AETERM"),
    ("value.length", "sdtm.value.length", f"{A1}.AETERM", "201 characters; at most 200"),
    ("value.length.bytes", "sdtm.value.length", f"{A1}.AETERM", "300 bytes"),
    ("value.ascii", "sdtm.value.ascii", f"{A1}.AETERM", "non-ASCII"),
    ("iso8601", "sdtm.iso8601", f"{A1}.AESTDTC", "'01/06/2021' is not ISO 8601 datetime or interval"),
    ("iso8601.calendar", "sdtm.iso8601", f"{A1}.AEENDTC", "not a real calendar date"),
    ("domain.value", "sdtm.domain.value", f"{A1}.DOMAIN", "expected 'AE'"),
    ("testcd.format", "sdtm.testcd.format", f"MI[USUBJID={U},MISEQ=1].MITESTCD", "'1CGA' must be at most 8"),
    ("test.length", "sdtm.test.length", f"MI[USUBJID={U},MISEQ=1].MITEST", "at most 40 allowed"),
    ("armcd.length", "sdtm.armcd.length", f"DM[USUBJID={U}].ARMCD", "at most 20 allowed"),
    ("dthfl.value", "sdtm.dthfl.value", f"DM[USUBJID={U}].DTHFL", "must be 'Y' or null"),
    ("ct.nonextensible", "sdtm.ct.nonextensible", f"DM[USUBJID={U}].SEX",
     "'male' is not in non-extensible codelist SEX (C66731); did you mean 'M'?"),
    ("ct.extensible", "sdtm.ct.extensible", f"CM[USUBJID={U},CMSEQ=1].CMROUTE",
     "'drip' is not in extensible codelist ROUTE (C66729) and not declared as a sponsor extension"),
    ("ct.pair", "sdtm.ct.pair", f"MI[USUBJID={U},MISEQ=2].MITEST", "are different CT terms"),
    ("seq.unique", "sdtm.seq.unique", f"{A1}.AESEQ", "AESEQ = 1 is used twice for USUBJID 'CB-001'"),
    ("dm.unique", "sdtm.dm.unique", f"DM[USUBJID={U}].USUBJID", "more than one DM record"),
    ("usubjid.dm", "sdtm.usubjid.dm", "CM[USUBJID=CB-999,CMSEQ=1].USUBJID", "'CB-999' is not in DM"),
    ("studyid.consistent", "sdtm.studyid.consistent", f"CM[USUBJID={U},CMSEQ=1].STUDYID", "'OTHER' differs"),
    ("death.dthdtc_dthfl", "sdtm.death.dthdtc_dthfl", f"DM[USUBJID={U}].DTHFL",
     "DTHDTC present requires DTHFL = 'Y'; DTHFL = null"),
    ("death.dthfl_dthdtc", "sdtm.death.dthfl_dthdtc", f"DM[USUBJID={U}].DTHDTC", "requires DTHDTC present"),
    ("death.ds_dthfl", "sdtm.death.ds_dthfl", f"DS[USUBJID={U},DSSEQ=1].DSDECOD",
     "DS DSDECOD = 'DEATH' for USUBJID 'CB-001' requires a DM record with DTHFL = 'Y'"),
    ("death.dthfl_ds", "sdtm.death.dthfl_ds", f"DM[USUBJID={U}].DTHFL", "requires a DS record with DSDECOD = 'DEATH'"),
    ("death.ds_date", "sdtm.death.ds_date", f"DS[USUBJID={U},DSSEQ=1].DSSTDTC",
     "DSSTDTC = '2023-04' but DM.DTHDTC = '2023-03'"),
    ("ae.fatal_sdth", "sdtm.ae.fatal_sdth", f"{A2}.AESDTH", "AEOUT = 'FATAL' requires AESDTH = 'Y'"),
    ("ae.sdth_fatal", "sdtm.ae.sdth_fatal", f"{A1}.AEOUT", "AESDTH = 'Y' requires AEOUT = 'FATAL'"),
    ("ae.fatal_dthfl", "sdtm.ae.fatal_dthfl", f"{A2}.AEOUT", "requires a DM record with DTHFL = 'Y'"),
    ("ae.sdth_dthfl", "sdtm.ae.sdth_dthfl", f"{A2}.AESDTH", "requires a DM record with DTHFL = 'Y'"),
    ("ae.fatal_date", "sdtm.ae.fatal_date", f"{A2}.AEENDTC", "AEENDTC = '2023-02' but DM.DTHDTC = '2023-03'"),
    ("dd.dthfl", "sdtm.dd.dthfl", f"DD[USUBJID={U},DDSEQ=1].USUBJID", "DD any record"),
    ("ref.dataset", "sdtm.ref.dataset", f"RELREC[RDOMAIN=PR,USUBJID={U},IDVAR=CMSEQ,IDVARVAL=1,RELID=1].RDOMAIN",
     "RDOMAIN 'PR' is not a dataset of the study"),
    ("ref.dataset.supp", "sdtm.ref.dataset", f"{SUPP}.RDOMAIN", "RDOMAIN 'CM' does not match dataset SUPPAE"),
    ("ref.idvar", "sdtm.ref.idvar", f"SUPPAE[USUBJID={U},IDVAR=AEXSEQ,IDVARVAL=1,QNAM=AETRTEM].IDVAR",
     "IDVAR 'AEXSEQ' is not a variable of AE"),
    ("ref.record", "sdtm.ref.record", f"SUPPAE[USUBJID={U},IDVAR=AESEQ,IDVARVAL=9,QNAM=AETRTEM].IDVARVAL",
     "no AE record with USUBJID 'CB-001' and AESEQ = '9'"),
    ("ref.record.relrec", "sdtm.ref.record", f"RELREC[RDOMAIN=CM,USUBJID={U},IDVAR=CMSEQ,IDVARVAL=7,RELID=1].IDVARVAL",
     "no CM record"),
    ("relrec.reltype", "sdtm.relrec.reltype",
     f"RELREC[RDOMAIN=AE,USUBJID={U},IDVAR=AESEQ,IDVARVAL=1,RELID=1].RELTYPE", "RELTYPE must be null"),
    ("relrec.relid", "sdtm.relrec.relid", f"RELREC[RDOMAIN=AE,USUBJID={U},IDVAR=AESEQ,IDVARVAL=1,RELID=1].RELID",
     "relates only this record"),
    ("supp.unique", "sdtm.supp.unique", f"{SUPP}.QNAM", "repeats an earlier record"),
    ("supp.qnam", "sdtm.supp.qnam", f"SUPPAE[USUBJID={U},IDVAR=AESEQ,IDVARVAL=1,QNAM=AESER].QNAM",
     "'AESER' is a standard AE variable"),
    ("dy.value", "sdtm.dy.value", f"{A1}.AESTDY", "AESTDY = 18; AESTDTC 2021-06-01 with RFSTDTC 2021-05-14 gives 19"),
    ("dy.incomplete", "sdtm.dy.incomplete", f"{A2}.AESTDY", "AESTDTC = '2023-03'"),
    ("dy.missing", "sdtm.dy.missing", f"{A1}.AESTDY", "AESTDY is null"),
]


@pytest.mark.parametrize(("case", "rule", "location", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_fails_where_expected(terminology: Terminology, case: str, rule: str, location: str,
                                        fragment: str) -> None:
    issues = _run(_broken(case), terminology)
    found = _of(issues, rule)
    assert found, f"{rule} not reported; got {[str(i) for i in issues]}"
    assert any(i.location == location and fragment in i.message for i in found), [str(i) for i in found]


def test_every_validator_rule_has_a_failing_case() -> None:
    covered = {c[1] for c in CASES} | {"sdtm.ex.absent", "sdtm.ct.unavailable"}
    implemented = {r.id for r in rules().values() if r.kind != "read"}
    assert implemented - covered == set()


def test_sponsor_extension_needs_a_declared_row(terminology: Terminology) -> None:
    study = _set(clean_study(), "MI", 0, MITESTCD="SYNAPTO", MITEST="Synaptophysin")
    found = _of(_run(study, terminology), "sdtm.ct.extensible")
    assert [i.location for i in found] == [f"MI[USUBJID={U},MISEQ=1].MITESTCD"]  # SYP is declared, SYNAPTO is not


def test_codelist_missing_from_the_run_terminology_is_reported(terminology: Terminology) -> None:
    partial = copy.copy(terminology)
    partial.codelists = {k: v for k, v in terminology.codelists.items() if k != "ROUTE"}
    issues = _of(_run(clean_study(), partial), "sdtm.ct.unavailable")
    assert [(i.location, i.severity) for i in issues] == [("CM", "info")]
    assert "CMROUTE (C66729)" in issues[0].message


def test_ex_present_suppresses_the_info(terminology: Terminology) -> None:
    study = clean_study()
    study.datasets["EX"] = _dataset("EX", [{"EXSEQ": 1, "EXTRT": "Cadonilimab", "EXSTDTC": "2021-06-01",
                                            "EXSTDY": 19}])
    assert _of(_run(study, terminology), "sdtm.ex.absent") == []


def test_cell_issues_are_capped_with_a_summary(terminology: Terminology) -> None:
    study = clean_study()
    ae = study.datasets["AE"]
    ae.rows = [dict(ae.rows[0], AESEQ=n, AESTDTC="bad", AESTDY=None, AEENDY=None) for n in range(1, 31)]
    found = _of(_run(study, terminology, max_per_check=5), "sdtm.iso8601")
    assert len(found) == 6
    assert found[-1].location == "AE.AESTDTC" and found[-1].message.startswith("25 more of this in AE.AESTDTC")


def test_partial_dates_and_right_truncation_are_valid(terminology: Terminology) -> None:
    study = _set(clean_study(), "AE", 0, AESTDTC="2021", AEENDTC="2021-06-02T10:30", AESTDY=None)
    assert [i for i in _run(study, terminology) if i.rule.startswith(("sdtm.iso8601", "sdtm.dy"))] == []


# --- reading SDTM made elsewhere -------------------------------------------------------------------------------

def _rules_of(issues: list[Issue]) -> set[str]:
    return {i.rule for i in issues}


@pytest.mark.parametrize(("folder", "count"), [("xpt", 27), ("dataset-json", 28)])
def test_sdtm_msg2_example_is_read_and_reported(terminology: Terminology, folder: str, count: int) -> None:
    study, read_issues = read_sdtm_folder(reference_path("cdisc", "examples", "sdtm-msg2", folder))
    assert read_issues == []
    assert len(study.datasets) == count and study.study_id == "CDISCPILOT01"
    assert study.datasets["AE"].label == "Adverse Events" and len(study.datasets["AE"].rows) == 74
    issues = validate_study(study, terminology)
    kinds = _rules_of(issues)
    # SDTMIG 3.3 data with known problems: MedDRA codes typed Char, empty AEDECOD, a custom DI dataset,
    # fatal AEs ending the day before death; and its RELREC/SUPP-- references all resolve
    assert {"sdtm.variable.type", "sdtm.dictionary.uncoded", "sdtm.dataset.unknown", "sdtm.ae.fatal_date",
            "sdtm.ct.extensible", "sdtm.variable.model"} <= kinds
    assert not any(k.startswith("sdtm.ref.") for k in kinds)
    assert "sdtm.ex.absent" not in kinds
    fatal = [i.location for i in issues if i.rule == "sdtm.ae.fatal_date"]
    assert fatal == ["AE[USUBJID=CDISC008,AESEQ=1].AEENDTC", "AE[USUBJID=CDISC013,AESEQ=1].AEENDTC"]


def test_xpt_and_dataset_json_readers_agree() -> None:
    base = reference_path("cdisc", "examples", "sdtm-msg2")
    xpt, _ = read_sdtm_folder(base / "xpt")
    djs, _ = read_sdtm_folder(base / "dataset-json")
    for name in ("AE", "DM", "RELREC", "SUPPDM"):
        a, b = xpt.datasets[name], djs.datasets[name]
        assert [v.name for v in a.variables] == [v.name for v in b.variables]
        assert [{k: (str(int(v)) if isinstance(v, float) and v.is_integer() else v) for k, v in r.items()}
                for r in a.rows] == [{k: (str(v) if isinstance(v, int) else v) for k, v in r.items()} for r in b.rows]
    assert djs.datasets["AE"].keys[:2] == ["STUDYID", "USUBJID"]


def test_cdiscpilot01_cp1252_is_read_and_reported(terminology: Terminology) -> None:
    study, read_issues = read_sdtm_folder(reference_path("cdisc", "examples", "cdiscpilot01"))
    assert [(i.rule, Path(i.location).name) for i in read_issues if i.rule.startswith("sdtm.")] == [
        ("sdtm.read.encoding", "ts.xpt")]
    assert study.study_id == "CDISCPILOT01" and len(study.datasets) == 18
    assert any("\u2019" in str(r.get("TSVAL")) for r in study.datasets["TS"].rows)  # decoded as cp1252
    kinds = _rules_of(validate_study(study, terminology))
    assert {"sdtm.dataset.label", "sdtm.value.ascii", "sdtm.ae.fatal_date", "sdtm.variable.model"} <= kinds
    assert not any(k.startswith("sdtm.ref.") for k in kinds)


def test_unreadable_files_become_issues(tmp_path: Path) -> None:
    (tmp_path / "ae.xpt").write_bytes(b"this is not a SAS transport file" * 10)
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "cm.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "json" / "mh.json").write_text('{"clinicalData": {}}', encoding="utf-8")
    (tmp_path / "json" / "lb.json").write_text('{"name": "LB", "columns": [{"name": "A"}], "rows": [[1, 2]]}',
                                               encoding="utf-8")
    study, issues = read_sdtm_folder(tmp_path)
    assert study.datasets == {}
    assert sorted((i.rule, i.severity, Path(i.location).name) for i in issues) == [
        ("sdtm.read.error", "error", "ae.xpt"), ("sdtm.read.error", "error", "cm.json"),
        ("sdtm.read.error", "error", "lb.json"), ("sdtm.read.error", "error", "mh.json")]
    missing, issues = read_sdtm_folder(tmp_path / "nowhere")
    assert missing.datasets == {} and [i.rule for i in issues] == ["sdtm.read.error"]


def _linked_msg2(tmp_path: Path) -> Path:
    base = reference_path("cdisc", "examples", "sdtm-msg2")
    (tmp_path / "json").mkdir()
    for name in ("dm", "ae"):
        (tmp_path / f"{name}.xpt").symlink_to(base / "xpt" / f"{name}.xpt")
    (tmp_path / "json" / "ae.json").symlink_to(base / "dataset-json" / "ae.json")
    (tmp_path / "json" / "cm.json").symlink_to(base / "dataset-json" / "cm.json")
    (tmp_path / "define.xml").symlink_to(base / "define.xml")
    return tmp_path


def test_both_formats_prefers_xpt_and_reads_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "converter.validate.define_xsd", None)  # the define validator is absent
    study, issues = read_sdtm_folder(_linked_msg2(tmp_path))
    assert sorted(study.datasets) == ["AE", "CM", "DM"]
    assert [v.type for v in study.datasets["AE"].variables if v.name == "AESEQ"] == ["Num"]
    assert sorted((i.rule, Path(i.location).name) for i in issues) == [
        ("sdtm.define.unchecked", "define.xml"), ("sdtm.read.duplicate", "ae.json")]


def test_define_xml_is_validated_when_the_validator_exists(tmp_path: Path) -> None:
    pytest.importorskip("converter.validate.define_xsd", reason="the Define-XML validator is written in parallel")
    _, issues = read_sdtm_folder(_linked_msg2(tmp_path))
    define = [i for i in issues if i.location.startswith(str(tmp_path / "define.xml"))]
    assert define and any(i.severity == "error" for i in define)  # the known-invalid STDTMIG define
    assert "sdtm.define.unchecked" not in _rules_of(issues)


def test_docs_list_every_rule() -> None:
    doc = (ROOT / "docs" / "sdtm-validation.md").read_text(encoding="utf-8")
    table = {line.split("`")[1]: line.split("|")[2].strip() for line in doc.splitlines() if line.startswith("| `sdtm.")}
    assert table == {r.id: r.severity for r in rules().values()}


@pytest.mark.parametrize("column", [
    [1, 2, 30],                       # integers: str() at C speed
    [" a ", "b", "c "],               # text: stripped at C speed
    [1, True, 2.0, 2.5, None, " x "],  # anything else: one by one
    [True, False], [1.0, 3.0], [],
])
def test_column_text_is_the_text_of_each_cell(column: list[Any]) -> None:
    from converter.validate.sdtm import _text, _texts

    assert list(_texts(iter(column))) == [_text(cell) for cell in column]


def test_supp_checks_report_repeats_and_standard_qnams_in_row_order(terminology: Terminology) -> None:
    study = clean_study()
    supp = next(d for d in study.datasets.values() if d.name.startswith("SUPP"))
    first = dict(supp.rows[0])
    supp.rows.append(dict(first))                                  # a repeated record
    supp.rows.append({**first, "QNAM": "AESER", "IDVARVAL": 99})   # a standard variable as QNAM
    found = [i.rule for i in _run(study, terminology) if i.rule.startswith("sdtm.supp.")]
    assert found == ["sdtm.supp.unique", "sdtm.supp.qnam"]
