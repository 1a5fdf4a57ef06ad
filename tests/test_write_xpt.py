"""SAS XPORT v5 writer: read back with pandas and pyreadstat, determinism, and the v5 guards."""

from __future__ import annotations

import math
import struct
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest

from conftest import reference_path
from converter.errors import CaseBridgeError
from converter.sdtm.model import Dataset, Variable
from converter.write.define_xml import describe_dataset
from converter.write.xpt import check_xpt, ibm_float, sas_datetime, write_xpt, xpt_bytes

CREATED = datetime(2025, 3, 28, 14, 5, 9, tzinfo=timezone.utc)
LONG_LABEL = "L" * 40
TEXT_200 = "A" + "b" * 198 + "Z"


def _ae(**overrides: object) -> Dataset:
    variables = [
        Variable("STUDYID", "Study Identifier", "Char", core="Req"),
        Variable("DOMAIN", "Domain Abbreviation", "Char", core="Req"),
        Variable("USUBJID", "Unique Subject Identifier", "Char", core="Req"),
        Variable("AESEQ", "Sequence Number", "Num", core="Req"),
        Variable("AETERM", "Reported Term for the Adverse Event", "Char", core="Req"),
        Variable("AETOXGR", "Standard Toxicity Grade", "Char"),
        Variable("AESTDTC", "Start Date/Time of Adverse Event", "Char"),
        Variable("AEENDTC", "End Date/Time of Adverse Event", "Char"),
        Variable("AESTDY", "Study Day of Start of Adverse Event", "Num"),
        Variable("LONGLAB8", LONG_LABEL, "Num"),
    ]
    rows = [
        {"STUDYID": "CB01", "DOMAIN": "AE", "USUBJID": "CB01-001", "AESEQ": 1, "AETERM": "INFUSION RELATED REACTION",
         "AETOXGR": "2", "AESTDTC": "2021-05", "AEENDTC": "2021-05-03T10:30", "AESTDY": None, "LONGLAB8": -0.1},
        {"STUDYID": "CB01", "DOMAIN": "AE", "USUBJID": "CB01-001", "AESEQ": 2.0, "AETERM": TEXT_200,
         "AETOXGR": None, "AESTDTC": "2023-03-01", "AEENDTC": "", "AESTDY": 655, "LONGLAB8": float("nan")},
        {"STUDYID": "CB01", "DOMAIN": "AE", "USUBJID": "CB01-002", "AESEQ": 3, "AETERM": " leading blank",
         "AETOXGR": "5", "AESTDTC": "2023", "AEENDTC": None, "AESTDY": -3, "LONGLAB8": 1.5e-70},
        {"STUDYID": "CB01", "DOMAIN": "AE", "USUBJID": "CB01-003", "AESEQ": 4, "AETERM": "X",
         "AETOXGR": "1", "AESTDTC": None, "AEENDTC": None, "AESTDY": 0, "LONGLAB8": 7.2e75},
    ]
    values = {"name": "AE", "label": "Adverse Events", "variables": variables, "rows": rows,
              "keys": ["STUDYID", "USUBJID", "AETERM"], "domain_class": "Events"}
    values.update(overrides)
    return Dataset(**values)  # type: ignore[arg-type]


def _expected(dataset: Dataset, name: str) -> list[object]:
    """What a reader must return for a column: blanks for missing text, NaN for missing numbers."""
    var = next(v for v in dataset.variables if v.name == name)
    if var.type == "Char":
        return ["" if v is None else str(v) for v in dataset.column(name)]
    return [math.nan if v is None or v != v else float(v) for v in dataset.column(name)]  # type: ignore[arg-type]


# pandas decodes the IBM zero word as 16**-65 (pandas-dev/pandas#50670, open); ReadStat reads it as 0.0.
_PANDAS_ZERO = 16.0 ** -65


def read_with_pandas(path: Path) -> tuple[pd.DataFrame, dict[str, str], str, str]:
    """Data, variable labels, dataset name and label as pandas' XPORT reader sees them."""
    with pd.read_sas(path, format="xport", iterator=True, encoding="ascii") as reader:
        labels = {f["name"].decode("ascii"): f["label"].decode("ascii") for f in reader.fields}
        info = reader.member_info
        # reading zero observations raises StopIteration in pandas; an empty frame is the answer
        frame = reader.read() if reader.nobs else pd.DataFrame(columns=list(labels))
    numeric = frame.select_dtypes("number").columns
    frame[numeric] = frame[numeric].mask(frame[numeric] == _PANDAS_ZERO, 0.0)
    return frame, labels, info["set_name"], info["label"]


def read_with_pyreadstat(path: Path) -> tuple[pd.DataFrame, dict[str, str], str, str]:
    """The same view through ReadStat."""
    frame, meta = pyreadstat.read_xport(str(path))
    return frame, dict(zip(meta.column_names, meta.column_labels)), meta.table_name, meta.file_label


def _same(actual: list[object], expected: list[object]) -> bool:
    return all((isinstance(e, float) and math.isnan(e) and math.isnan(a))  # type: ignore[arg-type]
               or a == e for a, e in zip(actual, expected, strict=True))


@pytest.mark.parametrize("reader", [read_with_pandas, read_with_pyreadstat])
def test_round_trip_through_both_readers(tmp_path: Path, reader) -> None:  # type: ignore[no-untyped-def]
    dataset = _ae()
    path, issues = write_xpt(dataset, tmp_path, CREATED)
    assert issues == [] and path == tmp_path / "ae.xpt"
    frame, labels, name, label = reader(path)
    assert (name, label) == ("AE", "Adverse Events")
    assert list(frame.columns) == [v.name for v in dataset.variables]
    assert labels == {v.name: v.label for v in dataset.variables}
    for var in dataset.variables:
        assert _same(frame[var.name].tolist(), _expected(dataset, var.name)), var.name


def test_lengths_are_the_longest_value_and_dates_come_from_the_timestamp(tmp_path: Path) -> None:
    dataset = _ae()
    path, _ = write_xpt(dataset, tmp_path, CREATED)
    _, meta = pyreadstat.read_xport(str(path))
    assert meta.variable_storage_width["AETERM"] == 200
    assert meta.variable_storage_width["AETOXGR"] == 1
    assert meta.variable_storage_width["AEENDTC"] == len("2021-05-03T10:30")
    assert meta.variable_storage_width["AESEQ"] == 8
    assert meta.creation_time == CREATED.replace(tzinfo=None)
    assert meta.modification_time == CREATED.replace(tzinfo=None)
    assert path.read_bytes().count(sas_datetime(CREATED)) == 4  # library and member, created and modified


def test_all_missing_text_column_is_one_byte_wide(tmp_path: Path) -> None:
    dataset = _ae()
    for row in dataset.rows:
        row["AETOXGR"] = None
    path, _ = write_xpt(dataset, tmp_path, CREATED)
    _, meta = pyreadstat.read_xport(str(path))
    assert meta.variable_storage_width["AETOXGR"] == 1


def test_declared_length_is_kept(tmp_path: Path) -> None:
    dataset = _ae()
    dataset.variables[5] = Variable("AETOXGR", "Standard Toxicity Grade", "Char", length=20)
    path, issues = write_xpt(dataset, tmp_path, CREATED)
    assert issues == []
    _, meta = pyreadstat.read_xport(str(path))
    assert meta.variable_storage_width["AETOXGR"] == 20


def test_rerun_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(CREATED.timestamp())))
    first, _ = write_xpt(_ae(), tmp_path / "one")
    second, _ = write_xpt(_ae(), tmp_path / "two")
    assert first is not None and second is not None
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() == xpt_bytes(_ae(), describe_dataset(_ae())[0], CREATED)
    assert len(first.read_bytes()) % 80 == 0


def test_empty_dataset_is_valid(tmp_path: Path) -> None:
    path, issues = write_xpt(_ae(rows=[]), tmp_path, CREATED)
    assert issues == []
    for reader in (read_with_pandas, read_with_pyreadstat):
        frame, _, name, _ = reader(path)
        assert name == "AE" and len(frame) == 0


def _decode_ibm(data: bytes) -> float:
    (word,) = struct.unpack(">Q", data)
    if word & 0x7FFFFFFFFFFFFFFF == 0:
        return 0.0
    sign = -1.0 if word >> 63 else 1.0
    exponent = (word >> 56) & 0x7F
    return sign * (word & 0x00FFFFFFFFFFFFFF) * 2.0 ** -56 * 16.0 ** (exponent - 64)


@pytest.mark.parametrize("value", [0.0, 1.0, -1.0, 0.1, -2.5, 655.0, 1 / 3, math.pi, 2.0 ** 52 + 1, 1e-70,
                                   7.2e75, 5.5e-79, 123456789.123456789])
def test_ibm_float_is_exact(value: float) -> None:
    encoded = ibm_float(value)
    assert len(encoded) == 8
    assert _decode_ibm(encoded) == value


def test_ibm_float_known_encodings() -> None:
    assert ibm_float(1.0) == bytes.fromhex("4110000000000000")
    assert ibm_float(-118.625) == bytes.fromhex("C276A00000000000")
    with pytest.raises(OverflowError):
        ibm_float(1e76)


def _rules(issues: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(i.rule, i.location) for i in issues]


def test_guard_long_and_non_ascii_values(tmp_path: Path) -> None:
    dataset = _ae()
    dataset.rows[1]["AETERM"] = TEXT_200 + "!"
    dataset.rows[2]["AETERM"] = "Fieber – Grad 2"
    path, issues = write_xpt(dataset, tmp_path, CREATED)
    assert path is None and not (tmp_path / "ae.xpt").exists()
    assert ("xpt.value", "AE[USUBJID=CB01-001,AESEQ=2,row=2].AETERM") in _rules(issues)
    assert ("xpt.value", "AE[USUBJID=CB01-002,AESEQ=3,row=3].AETERM") in _rules(issues)
    messages = " ".join(i.message for i in issues)
    assert "201 bytes" in messages and "U+2013" in messages
    assert ("xpt.length", "AE.AETERM") in _rules(issues)  # the column would be 201 bytes wide


def test_guard_names_and_labels() -> None:
    dataset = _ae(name="AdvEvent9", label="A" * 41, keys=[])
    dataset.variables[4] = Variable("AETERM_LONG", "x" * 41, "Char")
    for row in dataset.rows:
        row["AETERM_LONG"] = row.pop("AETERM")
    columns, issues = describe_dataset(dataset)
    assert issues == []
    found = _rules(check_xpt(dataset, columns))
    assert ("xpt.name", "AdvEvent9") in found
    assert ("xpt.label", "AdvEvent9") in found
    assert ("xpt.name", "AdvEvent9.AETERM_LONG") in found
    assert ("xpt.label", "AdvEvent9.AETERM_LONG") in found


def test_guard_lower_case_names() -> None:
    dataset = _ae(name="ae")
    columns, _ = describe_dataset(dataset)
    assert ("xpt.name", "ae") in _rules(check_xpt(dataset, columns))


def test_guard_numbers_outside_ibm_range() -> None:
    dataset = _ae()
    dataset.rows[0]["LONGLAB8"] = 1e80
    dataset.rows[1]["LONGLAB8"] = -1e-300
    columns, _ = describe_dataset(dataset)
    found = _rules(check_xpt(dataset, columns))
    assert ("xpt.value", "AE[USUBJID=CB01-001,AESEQ=1,row=1].LONGLAB8") in found
    assert ("xpt.value", "AE[USUBJID=CB01-001,AESEQ=2,row=2].LONGLAB8") in found


def test_guard_wrong_cell_types_and_declared_length(tmp_path: Path) -> None:
    dataset = _ae()
    dataset.rows[0]["AETOXGR"] = 2
    dataset.rows[1]["AESTDY"] = "655"
    dataset.variables[2] = Variable("USUBJID", "Unique Subject Identifier", "Char", length=7)
    path, issues = write_xpt(dataset, tmp_path, CREATED)
    assert path is None
    found = _rules(issues)
    assert ("sdtm.write.type", "AE[USUBJID=CB01-001,AESEQ=1,row=1].AETOXGR") in found
    assert ("sdtm.write.type", "AE[USUBJID=CB01-001,AESEQ=2,row=2].AESTDY") in found
    assert ("sdtm.write.length", "AE[USUBJID=CB01-001,AESEQ=1,row=1].USUBJID") in found


def test_guard_reports_unknown_row_keys_and_keys() -> None:
    dataset = _ae(keys=["STUDYID", "AEDECOD"])
    dataset.rows[2]["AEBODSYS"] = "Infections"
    _, issues = describe_dataset(dataset)
    assert ("sdtm.write.keys", "AE.AEDECOD") in _rules(issues)
    assert ("sdtm.write.variables", "AE[USUBJID=CB01-002,AESEQ=3,row=3].AEBODSYS") in _rules(issues)


def test_trailing_blank_record_is_flagged() -> None:
    text_only = Dataset("XX", "Text only", [Variable("A", "A", "Char")], [{"A": "AB"}, {"A": None}])
    assert _rules(check_xpt(text_only, describe_dataset(text_only)[0])) == [("xpt.blank_record", "XX[row=2]")]
    dataset = _ae()
    dataset.rows.append({})   # a Num column makes the record non-blank ("." for missing)
    assert check_xpt(dataset, describe_dataset(dataset)[0]) == []


def test_many_bad_cells_are_summarised() -> None:
    dataset = _ae(rows=[{"AETERM": "é"} for _ in range(25)])
    columns, _ = describe_dataset(dataset)
    issues = [i for i in check_xpt(dataset, columns) if i.rule == "xpt.value"]
    assert len(issues) == 21
    assert issues[-1].message.startswith("5 more AETERM")


def test_builder_refuses_instead_of_truncating() -> None:
    dataset = _ae()
    columns, _ = describe_dataset(dataset)
    columns[4] = replace(columns[4], length=10)  # AETERM holds 200 bytes
    with pytest.raises(CaseBridgeError, match="nothing was truncated"):
        xpt_bytes(dataset, columns, CREATED)
    columns, _ = describe_dataset(dataset)
    columns[5].values[0] = "größer"  # not ASCII: never written as something else
    with pytest.raises(CaseBridgeError, match="cannot be written"):
        xpt_bytes(dataset, columns, CREATED)


def test_writer_writes_the_values_it_checked(tmp_path: Path) -> None:
    dataset = _ae()
    columns, _ = describe_dataset(dataset)
    dataset.rows[0]["AETOXGR"] = "changed after the check"
    (tmp_path / "ae.xpt").write_bytes(xpt_bytes(dataset, columns, CREATED))
    assert read_with_pyreadstat(tmp_path / "ae.xpt")[0]["AETOXGR"].tolist() == ["2", "", "5", "1"]


@pytest.mark.parametrize("name", ["ae", "dm", "relrec"])
def test_reference_xpt_reads_the_same_with_both_readers(name: str) -> None:
    path = reference_path("cdisc", "examples", "sdtm-msg2", "xpt", f"{name}.xpt")
    pandas_frame, pandas_labels, pandas_name, pandas_label = read_with_pandas(path)
    stat_frame, stat_labels, stat_name, stat_label = read_with_pyreadstat(path)
    assert (pandas_name, pandas_label) == (stat_name, stat_label) and stat_name == name.upper()
    assert pandas_labels == stat_labels and list(pandas_frame.columns) == list(stat_frame.columns)
    assert len(pandas_frame) == len(stat_frame) > 0
    for column in stat_frame.columns:
        assert _same(pandas_frame[column].tolist(), stat_frame[column].tolist()), column


def test_reference_xpt_survives_a_rewrite(tmp_path: Path) -> None:
    """Read SDTM-MSG's AE, write it with CaseBridge, read it back: same names, labels and values."""
    path = reference_path("cdisc", "examples", "sdtm-msg2", "xpt", "ae.xpt")
    frame, meta = pyreadstat.read_xport(str(path))
    variables = [Variable(n, l, "Num" if meta.readstat_variable_types[n] == "double" else "Char")
                 for n, l in zip(meta.column_names, meta.column_labels)]
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]
    original = Dataset("AE", meta.file_label, variables, rows)
    written, issues = write_xpt(original, tmp_path, CREATED)
    assert issues == []
    again, again_meta = pyreadstat.read_xport(str(written))
    assert again_meta.column_labels == meta.column_labels
    for column in frame.columns:
        assert _same(again[column].tolist(), frame[column].tolist()), column


def test_column_wise_observations_equal_the_cell_by_cell_encoding() -> None:
    from itertools import chain

    from converter.write.xpt import _ibm_column, _plain_observations

    dataset = _ae()
    dataset.rows[1]["AETERM"] = None
    columns, issues = describe_dataset(dataset)
    assert not issues
    cells = [[(v or "").encode("ascii").ljust(m.length) for v in m.values] if m.variable.type == "Char"
             else _ibm_column(m.values) for m in columns]
    assert _plain_observations(columns) == b"".join(chain.from_iterable(zip(*cells)))
    for odd in ("größer", 7, "x" * 300):  # not ASCII, not text, longer than the column: left to the detailed path
        columns[4].values[0] = odd
        assert _plain_observations(columns) is None
