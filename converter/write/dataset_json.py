"""CDISC Dataset-JSON 1.1 (``OUT/sdtm/json/<dataset>.json``).

Attributes follow the order the specification recommends (streaming readers rely on it); rows are arrays in
variable order. OIDs match define.xml (``IG.AE``, ``IT.AE.AETERM``, the study and metadata-version OIDs).
Column ``dataType`` is derived from the Define-XML data type: ``text`` → ``string``, ``integer`` →
``integer``, ``float`` → ``double``, complete ``date``/``datetime`` → ``date``/``datetime``; ISO 8601
values that are partial, incomplete, durations or intervals are declared ``string`` so that no reader turns
``2021-05`` into a made-up day. Missing values are ``null``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import orjson

from converter import __version__
from converter.sdtm.model import Cell, Dataset, Study
from converter.validate.issues import Issue, has_errors
from converter.write.atomic import reproducible_timestamp, write_bytes_atomic
from converter.write.define_xml import ColumnMeta, describe_dataset, item_oid, metadata_version_oid, study_oid

DATASET_JSON_VERSION = "1.1.0"
_JSON_TYPES = {"text": "string", "integer": "integer", "float": "double", "date": "date", "datetime": "datetime"}


def json_data_type(meta: ColumnMeta) -> str:
    """Dataset-JSON ``dataType`` of a column."""
    return _JSON_TYPES.get(meta.data_type, "string")


def _column(dataset: Dataset, meta: ColumnMeta) -> dict[str, object]:
    col: dict[str, object] = {"itemOID": item_oid(dataset.name, meta.name), "name": meta.name,
                              "label": meta.variable.label, "dataType": json_data_type(meta)}
    if meta.variable.type == "Char":
        col["length"] = meta.length
    if meta.key_sequence:
        col["keySequence"] = meta.key_sequence
    return col


def _values(meta: ColumnMeta) -> list[object]:
    values: list[Cell] = meta.values
    if meta.variable.type == "Char":
        return values  # type: ignore[return-value]
    if meta.data_type == "integer":
        return [None if v is None or v != v else int(v) for v in values]  # type: ignore[arg-type]
    return [None if v is None or v != v else float(v) for v in values]  # type: ignore[arg-type]


def dataset_json_document(dataset: Dataset, study: Study, columns: Sequence[ColumnMeta], created: datetime | None = None,
                          metadata_ref: str | None = "../define.xml", records: int | None = None) -> dict[str, object]:
    """The Dataset-JSON 1.1 object of a dataset (``metadata_ref``: where define.xml is, relative to the file).

    ``records`` overrides the number of rows (``dataset`` without rows: the rows are written a part at a time).
    """
    stamp = reproducible_timestamp(created)
    doc: dict[str, object] = {
        "datasetJSONCreationDateTime": stamp.strftime("%Y-%m-%dT%H:%M:%S"),
        "datasetJSONVersion": DATASET_JSON_VERSION,
        "fileOID": f"{study_oid(study)}.{dataset.name}.{stamp.strftime('%Y%m%dT%H%M%S')}",
        "originator": "CaseBridge",
        "sourceSystem": {"name": "CaseBridge", "version": __version__},
        "studyOID": study_oid(study),
        "metaDataVersionOID": metadata_version_oid(study),
    }
    if metadata_ref:
        doc["metaDataRef"] = metadata_ref
    doc.update({
        "itemGroupOID": f"IG.{dataset.name}",
        "records": len(dataset.rows) if records is None else records,
        "name": dataset.name,
        "label": dataset.label,
        "columns": [_column(dataset, m) for m in columns],
        "rows": list(zip(*(_values(m) for m in columns))),  # orjson writes tuples as arrays
    })
    return doc


def dataset_json_bytes(dataset: Dataset, study: Study, columns: Sequence[ColumnMeta],
                       created: datetime | None = None, metadata_ref: str | None = "../define.xml") -> bytes:
    """The Dataset-JSON file content (UTF-8, compact, deterministic) of a dataset that passed the guards."""
    return orjson.dumps(dataset_json_document(dataset, study, columns, created, metadata_ref),
                        option=orjson.OPT_APPEND_NEWLINE)


def dataset_json_head(dataset: Dataset, study: Study, columns: Sequence[ColumnMeta], records: int,
                      created: datetime | None = None, metadata_ref: str | None = "../define.xml") -> bytes:
    """The file content before the first row, for a file written a part at a time (see :func:`dataset_json_rows`).

    The file is the head, the parts' rows joined by ``,``, then :data:`DATASET_JSON_TAIL`.
    """
    doc = dataset_json_document(dataset, study, columns, created, metadata_ref, records)
    doc["rows"] = []
    text = orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)
    assert text.endswith(b"[" + DATASET_JSON_TAIL)
    return text[:-len(DATASET_JSON_TAIL)]


#: What ends a Dataset-JSON file after its last row.
DATASET_JSON_TAIL = b"]}\n"


def dataset_json_rows(columns: Sequence[ColumnMeta]) -> bytes:
    """The rows of ``columns``' values as they appear in the file, without the enclosing brackets (b"" for none)."""
    return orjson.dumps(list(zip(*(_values(m) for m in columns))))[1:-1]


def write_dataset_json(dataset: Dataset, study: Study, json_dir: Path,
                       created: datetime | None = None) -> tuple[Path | None, list[Issue]]:
    """Write ``<json_dir>/<dataset>.json`` atomically, or refuse (path None) when the guards report errors."""
    columns, issues = describe_dataset(dataset)
    if has_errors(issues):
        return None, issues
    path = json_dir / f"{dataset.name.lower()}.json"
    return write_bytes_atomic(path, dataset_json_bytes(dataset, study, columns, created)), issues
