"""Per-case SDTM validation (validate_case): the same issues as the detailed one-subject path, faster."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from converter.case.loader import Record, load_case, load_record
from converter.mapping.engine import MappingSet
from converter.mapping.terminology import Terminology
from converter.pipeline import Options, Pipeline
from converter.sdtm.build import StudyBuilder
from converter.sdtm.model import Cell, Study
from converter.validate import sdtm_case
from converter.validate.sdtm import validate_study
from converter.validate.sdtm_case import validate_case
from test_sdtm_validate import CASES, S, _broken, clean_study

SAMPLES = sorted((ROOT / "samples").glob("*.yaml"))
STUDY_LEVEL = {"sdtm.dataset.unknown", "sdtm.dataset.empty", "sdtm.dataset.name", "sdtm.dataset.label",
               "sdtm.variable.unknown", "sdtm.variable.model", "sdtm.variable.name", "sdtm.variable.label.length",
               "sdtm.variable.label.mismatch", "sdtm.variable.type", "sdtm.variable.required.missing",
               "sdtm.variable.expected.missing", "sdtm.variable.order", "sdtm.dm.unique", "sdtm.ex.absent"}
STUDY_ONLY = STUDY_LEVEL - {"sdtm.dm.unique", "sdtm.variable.type"}  # both also found in one subject's cells


@pytest.fixture(scope="module")
def mappings() -> MappingSet:
    return MappingSet.load(None)


@pytest.fixture(scope="module")
def terminology(mappings: MappingSet) -> Terminology:
    return mappings.terminology


def _rows_of(study: Study) -> dict[str, list[dict[str, Cell]]]:
    """A study's rows as StudyBuilder.add returns them (nulls left out, as mapped rows leave them out)."""
    return {name: [{k: v for k, v in row.items() if v is not None} for row in ds.rows]
            for name, ds in study.datasets.items() if ds.rows}


def _both(rows: dict[str, list[dict[str, Cell]]], terminology: Terminology) -> tuple[list[Any], list[Any]]:
    """validate_case and the detailed path on copies of the same rows."""
    fast = validate_case(copy.deepcopy(rows), terminology, S)
    detailed = sdtm_case._detailed(copy.deepcopy(rows), terminology, S, True, 25)
    return [i.to_dict() for i in fast], [i.to_dict() for i in detailed]


def _case_rows(mappings: MappingSet, path: Path) -> dict[str, list[dict[str, Cell]]]:
    mapped = mappings.apply(load_case(path), frozenset({"sdtm"}))
    return StudyBuilder("CASEBRIDGE", mappings.terminology.ct_version).add(mapped)


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_samples_take_the_fast_path_with_the_detailed_issues(mappings: MappingSet, terminology: Terminology,
                                                             path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _case_rows(mappings, path)
    detailed = sdtm_case._detailed(copy.deepcopy(rows), terminology, "CASEBRIDGE", True, 25)

    def refuse(*_: Any) -> None:
        raise AssertionError("the detailed path was taken")
    monkeypatch.setattr(sdtm_case, "_detailed", refuse)
    assert [i.to_dict() for i in validate_case(rows, terminology, "CASEBRIDGE")] == [i.to_dict() for i in detailed]


def test_clean_subject_has_no_subject_level_issue(terminology: Terminology) -> None:
    fast, detailed = _both(_rows_of(clean_study()), terminology)
    assert fast == detailed == []


@pytest.mark.parametrize(("case", "rule"), [(c[0], c[1]) for c in CASES], ids=[c[0] for c in CASES])
def test_every_broken_subject_gives_the_detailed_issues(terminology: Terminology, case: str, rule: str) -> None:
    rows = _rows_of(_broken(case))
    if case in ("dataset.unknown", "dataset.name"):  # no SDTMIG dataset: the builder cannot assemble it either
        with pytest.raises(KeyError):
            validate_case(rows, terminology, S)
        return
    fast, detailed = _both(rows, terminology)
    assert fast == detailed
    assert not {i["rule"] for i in fast} & STUDY_ONLY


@pytest.mark.parametrize(("case", "rule"), [
    ("variable.required.null", "sdtm.variable.required.null"), ("dictionary.uncoded", "sdtm.dictionary.uncoded"),
    ("ct.extensible", "sdtm.ct.extensible"), ("value.ascii", "sdtm.value.ascii"), ("iso8601", "sdtm.iso8601"),
    ("iso8601.calendar", "sdtm.iso8601"), ("ct.pair", "sdtm.ct.pair"), ("dy.value", "sdtm.dy.value"),
    ("supp.qnam", "sdtm.supp.qnam"), ("ae.fatal_sdth", "sdtm.ae.fatal_sdth"), ("dm.unique", "sdtm.dm.unique")])
def test_subject_level_rules_are_reported_per_case(terminology: Terminology, case: str, rule: str) -> None:
    assert rule in {i.rule for i in validate_case(_rows_of(_broken(case)), terminology, S)}


def test_cells_are_normalised_in_place_like_the_study_does(terminology: Terminology) -> None:
    rows = _rows_of(clean_study())
    rows["LB"][0].update(LBSTRESC=120.0, LBSTRESN="120", LBORRES="")
    rows["AE"][0]["AESER"] = False
    fast, detailed = _both(rows, terminology)
    assert fast == detailed
    validate_case(rows, terminology, S)
    assert (rows["LB"][0]["LBSTRESC"], rows["LB"][0]["LBSTRESN"], rows["LB"][0]["LBORRES"]) == ("120", 120.0, None)
    assert rows["AE"][0]["AESER"] == "N"


def test_one_and_true_are_different_cells(terminology: Terminology) -> None:
    rows = _rows_of(clean_study())
    rows["AE"][0]["AESEQ"], rows["AE"][1]["AESEQ"] = 1, True  # True is no number: it becomes 1.0, a duplicate
    fast, detailed = _both(rows, terminology)
    assert fast == detailed
    assert "sdtm.seq.unique" in {i["rule"] for i in fast}


@pytest.mark.parametrize("value", [
    "Infusion related reaction", "x" * 200, "x" * 201, "caf\u00e9", " ", "a\tb", "a\x7fb", "", 0, 1, 2.5, -3,
    float("nan"), float("inf"), 1e80, 1e-80, True, "2021-06-01", "2021-06", "2021", "2021-02-30", "2021-13",
    "01/06/2021", "2021-06-01T10:00", "2021-06-01/2021-07", "2021-06-01/2021-02-30", "2021-06-01\n", "P3M", "--06-01"])
@pytest.mark.parametrize(("dataset", "var"), [("AE", "AETERM"), ("AE", "AESTDTC"), ("AE", "AEENDTC"),
                                              ("LB", "LBSTRESN"), ("AE", "AESTDY"), ("CO", "COVAL"),
                                              ("SUPPAE", "QVAL"), ("AE", "AEDUR"), ("MI", "MITEST")])
def test_quick_verdicts_agree_with_the_detailed_checks(terminology: Terminology, dataset: str, var: str,
                                                       value: Any) -> None:
    plan = sdtm_case._compiled(terminology).plan(dataset)
    assert plan is not None
    memo = plan.memo(var)
    if memo.quick is not None and memo.quick(value):
        assert plan.judge(var, value) is None


def test_study_level_pass_reports_only_study_level_rules(terminology: Terminology) -> None:
    for case, _, _, _ in CASES:
        rules = {i.rule for i in validate_study(_broken(case), terminology, rows_checked=True)}
        assert rules <= STUDY_LEVEL, (case, rules - STUDY_LEVEL)
    model = validate_study(_broken("variable.model"), terminology, rows_checked=True)
    assert [(i.rule, i.location) for i in model if i.rule != "sdtm.ex.absent"] == [
        ("sdtm.variable.model", "CM.CMLNKGRP")]


def test_full_and_split_validation_report_the_same_rules(terminology: Terminology) -> None:
    for case, _, _, _ in CASES:
        study = _broken(case)
        full = {i.rule for i in validate_study(study, terminology)}
        study_level = {i.rule for i in validate_study(study, terminology, rows_checked=True)}
        assert study_level <= full
        assert full - study_level <= full - STUDY_ONLY


def test_pipeline_reports_dataset_notes_once_per_study_not_per_case(mappings: MappingSet) -> None:
    path = ROOT / "samples" / "lcnec-cadonilimab-anlotinib.yaml"
    result = Pipeline(mappings, Options()).process(Record(str(path), path.read_text(encoding="utf-8"), "yaml"))
    rules = {i.rule for i in result.issues}
    assert result.ok and "sdtm.ct.extensible" in rules
    assert not rules & {"sdtm.variable.model", "sdtm.ex.absent"}


MUTATIONS: list[Any] = [" ", "", "caf\u00e9", "x" * 201, "2021-02-30", "01/06/2021", "2021-06", 3.0, 7, True, False,
                        ["a", "b"], None, "120", float("nan"), 1e80, "a\x01b", "DEATH", "Y", "N", "FATAL", "CGA"]


@pytest.mark.parametrize("seed", range(8))
def test_random_cell_mutations_give_the_detailed_issues(mappings: MappingSet, terminology: Terminology,
                                                        seed: int) -> None:
    rng = random.Random(seed)
    base = _case_rows(mappings, ROOT / "samples" / "lcnec-cadonilimab-anlotinib.yaml")
    for _ in range(15):
        rows = copy.deepcopy(base)
        for _ in range(rng.randint(1, 4)):
            row = rng.choice(rows[rng.choice(sorted(rows))])
            row[rng.choice(sorted(row))] = copy.copy(rng.choice(MUTATIONS))
        _agree(rows, terminology)


def _generated_rows(mappings: MappingSet, count: int, seed: int) -> list[dict[str, list[dict[str, Cell]]]]:
    """StudyBuilder.add rows of generated cases (benchmarks/gen.py), as the pipeline validates them."""
    from test_benchmark_gen import gen

    out = []
    for index, doc in enumerate(gen.generate(count, seed)):
        case = load_record(Record(f"gen-{index}.json", json.dumps(doc), "json"))
        out.append(StudyBuilder("CASEBRIDGE", mappings.terminology.ct_version).add(
            mappings.apply(case, frozenset({"sdtm"}))))
    return out


def _agree(rows: dict[str, list[dict[str, Cell]]], terminology: Terminology) -> None:
    """validate_case gives the detailed path's issues, or fails as it does."""
    try:
        detailed = [i.to_dict() for i in sdtm_case._detailed(copy.deepcopy(rows), terminology, S, True, 25)]
    except Exception as exc:  # noqa: BLE001 - then the fast path must fail the same way
        with pytest.raises(type(exc)):
            validate_case(rows, terminology, S)
        return
    assert [i.to_dict() for i in validate_case(rows, terminology, S)] == detailed


def test_generated_cases_give_the_detailed_issues(mappings: MappingSet, terminology: Terminology) -> None:
    for rows in _generated_rows(mappings, 40, 3):
        _agree(rows, terminology)


#: Cells equal to common values but of another type or form: judged apart from the values they equal.
TWINS: list[Any] = [True, False, 1, 1.0, 0, 0.0, -0.0, "1", " 1", "", None]


@pytest.mark.parametrize("seed", range(6))
def test_mutations_after_clean_cases_give_the_detailed_issues(mappings: MappingSet, terminology: Terminology,
                                                              seed: int) -> None:
    """Columns whose values were all seen clean before are judged by whole sets: a twin of a clean value
    (``1.0``, ``True`` for ``1``), a variable some rows lack, a Required one dropped must still be found."""
    rng = random.Random(seed)
    cases = _generated_rows(mappings, 6, 100 + seed)
    for rows in cases:  # the clean sets now hold these cases' values
        validate_case(copy.deepcopy(rows), terminology, S)
    for _ in range(25):
        rows = copy.deepcopy(rng.choice(cases))
        for _ in range(rng.randint(1, 3)):
            table = rows[rng.choice(sorted(rows))]
            row = rng.choice(table)
            var = rng.choice(sorted(row))
            kind = rng.randrange(4)
            if kind == 0:
                del row[var]  # some rows lack the variable (a Required one too)
            elif kind == 1 and isinstance(row[var], (int, float)) and not isinstance(row[var], bool):
                row[var] = rng.choice([float(row[var]), int(row[var]), row[var] == 1, str(row[var])])
            elif kind == 2:
                row[var] = copy.copy(rng.choice(TWINS))
            else:  # another row's value of the same variable
                row[var] = rng.choice([r.get(var) for r in table])
        _agree(rows, terminology)


def test_true_and_float_twins_of_clean_numbers_give_the_detailed_issues(mappings: MappingSet,
                                                                         terminology: Terminology) -> None:
    base = _case_rows(mappings, ROOT / "samples" / "lcnec-cadonilimab-anlotinib.yaml")
    validate_case(copy.deepcopy(base), terminology, S)  # every number of the case is known clean now
    numbers = [(name, index, var) for name, table in sorted(base.items()) for index, row in enumerate(table)
               for var, value in row.items() if value.__class__ in (int, float)]
    assert len(numbers) > 20
    for name, index, var in numbers:
        for twin in (True, float(base[name][index][var]), str(base[name][index][var])):
            rows = copy.deepcopy(base)
            rows[name][index][var] = twin
            _agree(rows, terminology)
