"""Per-case FHIR files staged by the converting process and placed by the run (converter/write/case_files.py),
and report.json streamed with its inputs spilled (converter/run.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import orjson
import pytest

from converter.run import RunReport, _Spill
from converter.validate.issues import Issue
from converter.write import case_files
from converter.write.case_files import CaseFiles, NdjsonAssembler, copy_range, make_staging, place_bundle

LINES = [("Patient", b'{"id":"p1"}\n'), ("Condition", b'{"id":"c1"}\n'), ("Patient", b'{"id":"p2"}\n'),
         ("Condition", b'{"id":"c2"}\n'), ("Observation", b'{"id":"o1"}\n')]


def test_pieces_are_copied_by_type_in_the_order_added(tmp_path: Path) -> None:
    files = CaseFiles(make_staging(tmp_path))
    first, second = files.add_ndjson(LINES), files.add_ndjson(LINES[:2])
    assert first.sizes == (("Patient", 24), ("Condition", 24), ("Observation", 12))
    assembler = NdjsonAssembler(tmp_path / "ndjson")
    assembler.add(second)
    assembler.add(first)
    paths = assembler.commit()
    assert [p.name for p in paths] == ["Condition.ndjson", "Observation.ndjson", "Patient.ndjson"]
    assert (tmp_path / "ndjson" / "Patient.ndjson").read_bytes() == b'{"id":"p1"}\n{"id":"p1"}\n{"id":"p2"}\n'
    assert (tmp_path / "ndjson" / "Condition.ndjson").read_bytes() == b'{"id":"c1"}\n{"id":"c1"}\n{"id":"c2"}\n'
    assert [p.name for p in (tmp_path / "ndjson").iterdir() if p.name.endswith(".tmp")] == []


def test_a_consumed_part_file_is_deleted_when_its_writer_moves_on(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(case_files, "_PART_BYTES", 1)
    files = CaseFiles(make_staging(tmp_path))
    pieces = [files.add_ndjson(LINES) for _ in range(3)]
    assert len({p.part for p in pieces}) == 3
    assembler = NdjsonAssembler(tmp_path / "ndjson")
    assembler.add(pieces[0])
    assembler.skip(pieces[1])  # a refused case: nothing copied, its part released all the same
    assert not Path(pieces[0].part).exists() and Path(pieces[1].part).exists()
    assembler.add(pieces[2])
    assert not Path(pieces[1].part).exists()
    assembler.commit()
    assert (tmp_path / "ndjson" / "Observation.ndjson").read_bytes() == b'{"id":"o1"}\n' * 2


def test_discard_removes_the_unfinished_ndjson_files(tmp_path: Path) -> None:
    files = CaseFiles(make_staging(tmp_path))
    assembler = NdjsonAssembler(tmp_path / "ndjson")
    assembler.add(files.add_ndjson(LINES))
    assembler.discard()
    assert list((tmp_path / "ndjson").iterdir()) == []


@pytest.mark.parametrize("failure", [AttributeError("no copy_file_range"), OSError(errno.EXDEV, "cross-device")])
def test_copy_range_without_copy_file_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            failure: Exception) -> None:
    def unavailable(*_args: object) -> int:
        raise failure

    monkeypatch.setattr(case_files.os, "copy_file_range", unavailable, raising=False)
    (tmp_path / "src").write_bytes(b"0123456789")
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT)
    try:
        copy_range(src, dst, 2, 5)
        copy_range(src, dst, 0, 2)
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "dst").read_bytes() == b"2345601"


def test_copy_range_reports_a_real_error_and_a_short_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").write_bytes(b"0123")
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError, match="ends before offset 9"):
            copy_range(src, dst, 2, 7)

        def full(*_args: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(case_files.os, "copy_file_range", full, raising=False)
        with pytest.raises(OSError, match="No space"):
            copy_range(src, dst, 0, 2)
    finally:
        os.close(src)
        os.close(dst)


def test_staged_bundle_is_placed_creating_the_folder(tmp_path: Path) -> None:
    staged = CaseFiles(make_staging(tmp_path)).stage_bundle(b"{}\n")
    assert Path(staged).name.startswith(".") and staged.endswith(".tmp")
    target = place_bundle(staged, tmp_path / "fhir" / "x.bundle.json")
    assert target.read_bytes() == b"{}\n" and not Path(staged).exists()


def test_report_json_with_spilled_inputs_has_the_bytes_of_one_indented_document(tmp_path: Path) -> None:
    """The inputs are streamed, yet report.json's head keeps the layout orjson.OPT_INDENT_2 gives the whole."""
    for entries in ([], [{"source": "a.yaml", "case_id": "a", "status": "converted", "fhir": "out/fhir/a.json"},
                         {"source": "b.yaml", "case_id": None, "status": "quarantined", "error": "q/b", "errors": 2}]):
        report = RunReport(meta={"version": "x", "options": {"to": ["fhir"]}}, resource_counts={"Patient": 1},
                           files=["out/fhir/a.json"], timings={"total": 1.5})
        report.spills = {name: _Spill(tmp_path, name, "list" if name in ("inputs", "issues") else "object",
                                      indent=name == "inputs") for name in ("inputs", "issues", "unmapped", "unused")}
        for entry in entries:
            report.add_input(entry)
        report.add_issues([Issue("warning", "r", "m", "a.yaml")])
        text = b"".join(report.report_chunks())
        whole = {"casebridge": report.meta, "summary": {"inputs": len(entries), "converted": report.converted,
                                                        "failed": report.failed},
                 "inputs": entries, "resource_counts": {"Patient": 1}, "domain_counts": {},
                 "issue_counts": {"warning:r": 1}, "timings_s": {"total": 1.5}, "files": ["out/fhir/a.json"]}
        head = orjson.dumps(whole, option=orjson.OPT_INDENT_2)[:-2]
        assert text.startswith(head + b',\n  "issues": ')
        assert orjson.loads(text) == {**whole, "issues": [Issue("warning", "r", "m", "a.yaml").to_dict()],
                                      "unmapped": {}, "unused_facts": {}}
        assert (report.converted, report.failed) == ((1, 1) if entries else (0, 0))
        assert report.inputs == entries  # still there for the caller of convert, read back from the spill


def test_a_bundle_is_placed_across_file_systems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fhir/ may be a symbolic link to another file system, where a rename cannot reach."""
    staged = CaseFiles(make_staging(tmp_path)).stage_bundle(b"{}\n")
    real_replace = os.replace

    def cross_device(src: str, dst: Path) -> None:
        if str(src) == staged:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(case_files.os, "replace", cross_device)
    (tmp_path / "fhir").mkdir()
    target = place_bundle(staged, tmp_path / "fhir" / "x.bundle.json")
    assert target.read_bytes() == b"{}\n" and not Path(staged).exists()
    assert [p.name for p in (tmp_path / "fhir").iterdir()] == ["x.bundle.json"]
