"""One CSV file per dataset (``OUT/sdtm/csv/<dataset>.csv``): a convenience view, not a submission format.

RFC 4180: UTF-8 without BOM, CRLF line ends, header = variable names, fields quoted only when they hold a
comma, quote or line break. Missing values are empty fields; numbers are written as define.xml shows them
(``3``, not ``3.0``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from converter.sdtm.model import Dataset
from converter.validate.issues import Issue, has_errors
from converter.write.atomic import write_bytes_atomic
from converter.write.define_xml import ColumnMeta, describe_dataset, num_text


def csv_bytes(columns: Sequence[ColumnMeta]) -> bytes:
    """The CSV content of the columns of a dataset that passed :func:`describe_dataset` without errors."""
    return csv_header(columns) + csv_rows(columns)


def csv_header(columns: Sequence[ColumnMeta]) -> bytes:
    """The header line of the CSV file (the rows follow: :func:`csv_rows`)."""
    return _csv_text([[m.name for m in columns]])


def csv_rows(columns: Sequence[ColumnMeta]) -> bytes:
    """The CSV lines of ``columns``' values (all rows of a dataset, or a part of them, in order)."""
    cols = []
    for meta in columns:
        values = meta.values
        if meta.variable.type == "Char":
            cols.append(["" if v is None else v for v in values])
        else:
            cols.append(["" if v is None or v != v else num_text(v) for v in values])  # type: ignore[arg-type]
    return _csv_text(zip(*cols))


def _csv_text(rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_csv(dataset: Dataset, csv_dir: Path) -> tuple[Path | None, list[Issue]]:
    """Write ``<csv_dir>/<dataset>.csv`` atomically, or refuse (path None) when the guards report errors."""
    columns, issues = describe_dataset(dataset)
    if has_errors(issues):
        return None, issues
    return write_bytes_atomic(csv_dir / f"{dataset.name.lower()}.csv", csv_bytes(columns)), issues
