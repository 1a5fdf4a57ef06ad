"""StudyBuilder's storage of accepted rows and the column-wise assembly, checked against the per-cell rules."""

from __future__ import annotations

import random
from typing import Any

import pytest

from converter.sdtm import metadata
from converter.sdtm.build import StudyBuilder, _cell, case_tables, _dataset_variables, _sort_rows, _sortable, sort_keys
from converter.sdtm.model import Cell


def _reference(name: str, rows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Cell]]]:
    """The assembly rules cell by cell: variables used, cells converted, rows sorted by the natural keys."""
    used = {k for r in rows for k, v in r.items() if v not in (None, "")}
    variables = _dataset_variables(name, used)
    names = [v.name for v in variables]
    nums = {v.name for v in variables if v.type == "Num"}
    table = [{n: _cell(r.get(n), n in nums) for n in names} for r in rows]
    keys = [k for k in sort_keys(name, names) if k in names]
    table.sort(key=lambda r: tuple(_sortable(r[k]) for k in keys))
    return names, table


def _random_case(rng: random.Random, subject: str) -> dict[str, list[dict[str, Any]]]:
    """AE and LB rows of one subject, with the odd values the builder converts (blanks, numbers as text…)."""
    text = [None, "", "MILD", "SEVERE", "Y", "N", "b", "a"]
    ae = []
    for seq in range(1, rng.randint(1, 4)):
        row: dict[str, Any] = {"STUDYID": "S", "DOMAIN": "AE", "USUBJID": subject, "AESEQ": seq,
                               "AETERM": rng.choice(["Rash", "Fever", "Cough", ""]),
                               "AESTDTC": rng.choice([None, "2021-05", "2021-05-03", ""])}
        if rng.random() < 0.5:
            row["AESEV"] = rng.choice(text)
        if rng.random() < 0.3:
            row["AESTDY"] = rng.choice([None, 3, -2, "7", 4.0, ""])
        if rng.random() < 0.2:
            row["AESER"] = rng.choice([True, False, None])
        ae.append(dict(rng.sample(sorted(row.items()), len(row))))  # key order differs between rows
    lb = [{"STUDYID": "S", "DOMAIN": "LB", "USUBJID": subject, "LBSEQ": n, "LBTESTCD": rng.choice(["HGB", "WBC"]),
           "LBORRES": rng.choice(["12.1", "7", None]), "LBSTRESN": rng.choice([12.1, 7, None, "8.5"])}
          for n in range(1, rng.randint(2, 5))]
    return {"AE": ae, "LB": lb}


@pytest.mark.parametrize("seed", range(5))
def test_accepted_rows_assemble_like_the_cell_by_cell_rules(seed: int) -> None:
    rng = random.Random(seed)
    cases = [_random_case(rng, f"S-{rng.randint(1, 9)}") for _ in range(12)]
    builder = StudyBuilder("S")
    for case in cases:
        builder.accept(case_tables(case))
    study = builder.study()
    for name in ("AE", "LB"):
        names, table = _reference(name, [r for case in cases for r in case[name]])
        dataset = study.datasets[name]
        assert [v.name for v in dataset.variables] == names
        assert dataset.rows == table
        assert [list(r) for r in dataset.rows] == [names] * len(table)  # every row holds every variable, in order


def test_study_keeps_or_releases_the_accepted_rows() -> None:
    builder = StudyBuilder("S")
    builder.accept(case_tables(_random_case(random.Random(1), "S-1")))
    builder.accept(case_tables({"AE": [], "LB": []}))
    assert builder
    first, again = builder.study(), builder.study()
    assert first == again and builder.accepted
    released = builder.study(release=True)
    assert released == first
    assert not builder and builder.accepted == {} and builder.study().datasets == {}


def test_accepted_and_added_rows_of_one_dataset_together() -> None:
    builder = StudyBuilder("S")
    builder.accept(case_tables({"DM": [{"STUDYID": "S", "DOMAIN": "DM", "USUBJID": "S-2", "SEX": "F"}]}))
    builder.rows["DM"] = [{"STUDYID": "S", "DOMAIN": "DM", "USUBJID": "S-1", "AGE": 40}]
    rows = builder.study().datasets["DM"].rows
    assert [(r["USUBJID"], r["SEX"], r["AGE"]) for r in rows] == [("S-1", None, 40), ("S-2", "F", None)]
    assert builder.accepted["DM"].count == 1 and len(builder.rows["DM"]) == 1  # study() without release keeps both


def test_columns_hold_the_cells_not_the_row_dicts() -> None:
    rows = [{"STUDYID": "S", "DOMAIN": "DM", "USUBJID": f"S-{n}", "AGE": n} for n in range(3)]
    builder = StudyBuilder("S")
    builder.accept(case_tables({"DM": rows}))
    assert builder.accepted["DM"].values["AGE"] == [0, 1, 2]
    assert builder.accepted["DM"].values["USUBJID"][2] is rows[2]["USUBJID"]
    assert metadata.is_variable("DM", "AGE")


@pytest.mark.parametrize("seed", range(40))
def test_sort_rows_orders_a_case_as_sortable_tuples_do(seed: int) -> None:
    """``_sort_rows`` (case-constant keys skipped, plain text compared as it is) gives the order and tie order
    of a stable sort by ``_sortable`` of every key."""
    from converter.mapping.rules import Row

    rng = random.Random(seed)
    pools = [["b", "a", "c"], ["b", "a", None, ""], ["b", 3, None, 2.5, "", True]]
    pool = pools[seed % 3]
    rows = []
    for n in range(rng.randint(2, 9)):
        values: dict[str, Any] = {"STUDYID": "S", "DOMAIN": "AE", "USUBJID": "S-1", "n": n}
        for key in ("AESTDTC", "AETERM"):
            if rng.random() < 0.9:
                values[key] = rng.choice(pool)
        rows.append(Row("AE", values, None, str(n)))  # type: ignore[arg-type]
    keys = sort_keys("AE", ())
    expected = sorted(rows, key=lambda r: tuple(_sortable(r.values.get(k)) for k in keys))
    _sort_rows(rows, keys)
    assert [r.values["n"] for r in rows] == [r.values["n"] for r in expected]
