"""A spilled dataset read a part at a time (``DatasetParts``) gives exactly what the whole dataset gives.

The end of a large run never holds a whole dataset: the spilled runs are merged in order, described and
summarised a part at a time, and written piece by piece. Every step is checked here against the whole-dataset
functions on random rows, with tiny runs, pieces and parts so that every boundary is crossed.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from converter.mapping.engine import MappingSet
from converter.run import RunReport, _Spill, _write_sdtm
from converter.sdtm import build
from converter.sdtm.build import DatasetParts, StudyBuilder, case_tables
from converter.sdtm.model import Dataset, Variable
from converter.validate.sdtm import StudyCheck
from converter.write import StudyWriter
from converter.write.define_xml import (ColumnStats, DefineParts, column_meta, describe_dataset, describe_part,
                                        summarise_dataset)

from test_study_builder import _random_case

STAMP = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of 2 rows and parts of 5: every run, piece and part boundary is crossed many times."""
    monkeypatch.setattr(build, "PIECE_ROWS", 2)
    monkeypatch.setattr(build, "PART_ROWS", 5)


def _cases(seed: int, count: int = 30) -> list[dict[str, list[dict[str, Any]]]]:
    rng = random.Random(seed)
    cases = [_random_case(rng, f"S-{rng.randint(1, 12)}") for _ in range(count)]  # a subject in several cases
    for case in cases:
        for row in case["AE"]:
            if rng.random() < 0.3:
                row["AETERM"] = rng.choice([None, "", "Rash", 7, "Zoster"])  # blank or odd keys sort too
    return cases


def _builders(tmp_path: Path, cases: list[dict[str, list[dict[str, Any]]]], budget: int) -> tuple[StudyBuilder, StudyBuilder]:
    whole, spilled = StudyBuilder("S"), StudyBuilder("S", spill_dir=tmp_path, budget=budget)
    for case in cases:
        whole.accept(case_tables(case))
        spilled.accept(case_tables(case))
    spilled.rows["AE"] = [{"STUDYID": "S", "DOMAIN": "AE", "USUBJID": "S-5", "AETERM": "Added"}]  # add() rows last
    whole.rows["AE"] = list(spilled.rows["AE"])
    return whole, spilled


@pytest.mark.parametrize("seed", range(6))
def test_parts_in_order_are_the_assembled_dataset(tmp_path: Path, tiny: None, seed: int) -> None:
    whole, spilled = _builders(tmp_path, _cases(seed), budget=[1, 2_000, 9_000][seed % 3])
    expected = whole.study(release=True)
    found = list(spilled.datasets(release=True, parts=True))
    assert [d.shell.name for d in found if isinstance(d, DatasetParts)] == ["AE", "LB"]
    for parts in found:
        assert isinstance(parts, DatasetParts)
        with parts:
            want = expected.datasets[parts.shell.name]
            assert parts.shell.variables == want.variables and parts.shell.keys == want.keys
            assert parts.count == len(want.rows) and parts.mergeable
            ordered = list(parts.parts(ordered=True))
            assert all(5 <= len(p.rows) < 5 + 2 for p in ordered[:-1])  # PART_ROWS, plus less than a piece
            assert [r for p in ordered for r in p.rows] == want.rows
            assert [r for p in ordered for r in zip(*p.columns.values())] == [tuple(r.values()) for r in want.rows]
            last = ordered[-1].rows  # made from the columns when read
            assert len(last) and last[-1] == list(last)[-1] == want.rows[-1] and last[0:2] == list(last)[:2]
            with pytest.raises(IndexError):
                last[len(last)]
            unordered = [r for p in parts.parts(ordered=False) for r in p.rows]
            assert sorted(map(repr, unordered)) == sorted(map(repr, want.rows))
            assert parts.assemble() == want
    assert list(tmp_path.iterdir()) == []  # closing the parts removed the spill files


def _random_column(rng: random.Random, var: Variable, count: int) -> list[Any]:
    if var.type == "Num":
        pool: list[Any] = [None, 0, 3, -12, 2.5, 1e-7, 123456.75, 4.0, math.nan, 10 ** 17]
    elif var.name.endswith("DTC"):
        pool = [None, "2021", "2021-05", "2021-05-03", "2021-05-03T10:20:30", "2021-05-03T10", "--05-03",
                "P3D", "2021-05/2021-06"]
    else:
        pool = [None, "A", "longer text", "x" * rng.randint(1, 30), "12", "3.25", "café"]
    weights = [rng.random() for _ in pool]
    return rng.choices(pool, weights, k=count)


@pytest.mark.parametrize("seed", range(40))
def test_statistics_of_parts_give_the_metadata_and_summary_of_the_whole(seed: int) -> None:
    rng = random.Random(seed)
    variables = [Variable("STUDYID", "Study Identifier", "Char"), Variable("QNAM", "Qualifier Name", "Char"),
                 Variable("QLABEL", "Label", "Char"), Variable("QVAL", "Value", "Char", codelist="C66742"),
                 Variable("QORIG", "Origin", "Char"), Variable("AESTDTC", "Start", "Char"),
                 Variable("AEDUR", "Duration", "Char"), Variable("AESTDY", "Day", "Num"),
                 Variable("AETERM", "Term", "Char", length=rng.choice([None, 40]))]
    count = rng.randint(1, 60)
    columns = {v.name: _random_column(rng, v, count) for v in variables}
    columns["QNAM"] = rng.choices(["AESTDTC", "DOSE", "NOTE", None], k=count)
    columns["QORIG"] = rng.choices(["CRF", "Derived", None], k=count)
    rows = [dict(zip(columns, r)) for r in zip(*columns.values())]
    whole = Dataset("SUPPAE", "Supplemental AE", variables, rows, ["STUDYID", "QNAM"], "Relationship", "", columns)
    metas, _ = describe_dataset(whole)

    cuts = sorted(rng.sample(range(1, count), min(count - 1, rng.randint(0, 6)))) if count > 1 else []
    stats = [ColumnStats() for _ in variables]
    summary = DefineParts(replace(whole, rows=[], columns=None), [replace(m, values=[]) for m in metas])
    for start, end in zip([0, *cuts], [*cuts, count]):
        part_columns = {name: values[start:end] for name, values in columns.items()}
        part = Dataset("SUPPAE", "Supplemental AE", variables, rows[start:end], whole.keys, whole.domain_class, "",
                       part_columns)
        part_stats, _ = describe_part(part)
        for total, more in zip(stats, part_stats):
            total.merge(more)
        summary.add([replace(m, values=part_columns[m.name]) for m in metas])
    merged = [column_meta(v, st, m.key_sequence, m.values) for v, st, m in zip(variables, stats, metas)]
    assert merged == metas
    assert summary.finish() == summarise_dataset(whole, metas)


def _write(tmp_path: Path, builder: StudyBuilder, name: str) -> tuple[list[Any], dict[str, bytes]]:
    mapping_set = MappingSet.load(None)
    report = RunReport()
    report.spills = {"issues": _Spill(tmp_path, "issues", "list")}
    _write_sdtm(builder, tmp_path / name, mapping_set, {"xpt", "json", "csv"}, STAMP, report)
    issues = orjson.loads(b"".join(report.spills["issues"].chunks()))
    files = {p.relative_to(tmp_path / name).as_posix(): p.read_bytes() for p in (tmp_path / name).rglob("*") if p.is_file()}
    return issues, files


def _recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """What StudyWriter.add_parts answered, per dataset."""
    answers: dict[str, bool] = {}
    original = StudyWriter.add_parts

    def add_parts(self: StudyWriter, dataset: Any) -> bool:
        answers[dataset.shell.name] = original(self, dataset)
        return answers[dataset.shell.name]

    monkeypatch.setattr(StudyWriter, "add_parts", add_parts)
    return answers


@pytest.mark.parametrize("problem", [None, "iso8601", "blank_last", "dm_twice"])
def test_written_a_part_at_a_time_or_whole_when_a_part_has_a_problem(tmp_path: Path, tiny: None, problem: str | None,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cases = _cases(7, 25)
    for n, case in enumerate(cases):
        case["DM"] = [{"STUDYID": "S", "DOMAIN": "DM", "USUBJID": f"S-{n:03d}", "SEX": "F", "AGE": 40 + n}]
    if problem == "iso8601":
        cases[9]["AE"][0]["AESTDTC"] = "last spring"  # a warning that names its row
    if problem == "dm_twice":
        cases[20]["DM"][0]["USUBJID"] = "S-013"  # the twin is in another run and another part
    if problem == "blank_last":  # keys all blank: the rows keep their order, and the last one is blank
        blank = dict.fromkeys(("STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "QNAM", "QLABEL", "QVAL",
                               "QORIG", "QEVAL"))
        cases += [{"SUPPAE": [{**blank, "QVAL": f"v{n}"}]} for n in range(9)] + [{"SUPPAE": [blank]}]
    whole, spilled = StudyBuilder("S"), StudyBuilder("S", spill_dir=tmp_path / "spill", budget=3_000)
    for case in cases:
        whole.accept(case_tables(case))
        spilled.accept(case_tables(case))
    expected = _write(tmp_path, whole, "whole")
    answers = _recorded(monkeypatch)
    assert _write(tmp_path, spilled, "parts") == expected
    assert set(answers) >= {"AE", "LB"}
    assert [name for name, ok in answers.items() if not ok] == {
        None: [], "iso8601": ["AE"], "blank_last": ["SUPPAE"], "dm_twice": []}[problem]
    if problem == "dm_twice":
        assert "DM" not in answers  # refused by the study-level check, read a part at a time
        assert any(i["rule"] == "sdtm.dm.unique" for i in expected[0])
    assert list((tmp_path / "spill").iterdir()) == []


def test_dm_parts_with_more_than_one_study_are_checked_whole(tmp_path: Path, tiny: None) -> None:
    builder = StudyBuilder("S", spill_dir=tmp_path, budget=1)
    for n in range(12):
        builder.accept(case_tables({"DM": [{"STUDYID": f"S{n % 2}", "DOMAIN": "DM", "USUBJID": f"S-{n % 5}", "SEX": "F"}]}))
    (parts,) = builder.datasets(release=True, parts=True)
    assert isinstance(parts, DatasetParts)
    with parts:
        whole = parts.assemble()
        check = StudyCheck(MappingSet.load(None).terminology)
        assert check.add_parts(parts.parts(ordered=True)) is None and check.report.issues == []
        assert check.add(whole) == StudyCheck(MappingSet.load(None).terminology).add(whole)
