"""Accepted SDTM rows held column by column (``sdtm.build.Columns``): the same cells as the rows, out of the GC's way."""

from __future__ import annotations

import gc
import random
from typing import Any

from converter.sdtm.build import JOIN, Columns, case_table

VARIABLES = ("STUDYID", "USUBJID", "CMTRT", "CMDOSE", "CMSTDTC", "CMENRF")


def _expected(batches: list[list[dict[str, Any]]]) -> dict[str, list[Any]]:
    """Each variable in the order first seen, None where a row lacks it."""
    rows = [row for batch in batches for row in batch]
    names = list(dict.fromkeys(name for row in rows for name in row))
    return {name: [row.get(name) for row in rows] for name in names}


def _batch(rng: random.Random) -> list[dict[str, Any]]:
    names = [v for v in VARIABLES if rng.random() < 0.7]
    shared = rng.random() < 0.7  # the usual case: every row of the batch has the same variables
    out = []
    for _ in range(rng.randint(1, 6)):
        row_names = names if shared else [v for v in names if rng.random() < 0.6]
        out.append({v: rng.choice([None, "", "x", rng.randint(0, 9), 1.5, f"t{rng.randint(0, 99)}"]) for v in row_names})
    return out


def test_columns_hold_the_cells_of_the_rows_added_whatever_the_order_of_reads_and_appends() -> None:
    rng = random.Random(7)
    for _ in range(60):
        columns, other, added, other_added = Columns(), Columns(), [], []
        for step in range(rng.randint(1, 3 * JOIN)):
            batch = _batch(rng)
            if rng.random() < 0.2:
                other.add_table(case_table(batch))
                other_added.append(batch)
            else:
                columns.add_table(case_table(batch))
                added.append(batch)
            if rng.random() < 0.05:  # reading the lists, then adding more, keeps every cell
                assert columns.values == _expected(added)
        assert columns.count == sum(map(len, added))
        take = rng.random() < 0.5
        columns.append(other, take=take)
        got = columns.values
        expected = _expected(added + other_added)
        assert got == expected and list(got) == list(expected)
        assert columns.count == sum(map(len, added + other_added))
        if not take:  # left as it was
            assert other.count == sum(map(len, other_added)) and other.values == _expected(other_added)


def test_an_empty_columns_takes_the_cells_it_appends() -> None:
    source, target = Columns(), Columns()
    source.add_table(case_table([{"A": "1", "B": 2}, {"A": "3"}]))
    target.append(source, take=True)
    assert target.values == {"A": ["1", "3"], "B": [2, None]} and target.count == 2
    assert source.count == 0 and source.values == {}


def test_the_cells_held_are_not_tracked_by_the_garbage_collector() -> None:
    """A full collection must not walk every cell held: the cells sit in untracked tuples, few per variable."""
    columns = Columns()
    for n in range(10 * JOIN):
        columns.add_table(case_table([{"USUBJID": f"S-{n}", "CMTRT": "DRUG", "CMDOSE": n}, {"USUBJID": f"S-{n}", "CMTRT": None}]))
    gc.collect()
    held = [t for store in (columns._joined, columns._batches) for parts in store.values() for t in parts]
    assert held and not any(gc.is_tracked(t) for t in held)
    assert max(len(parts) for parts in columns._batches.values()) < JOIN  # joined as they accumulate
    assert max(len(parts) for parts in columns._joined.values()) <= 10
    assert columns.values["CMDOSE"] == [v for n in range(10 * JOIN) for v in (n, None)]

