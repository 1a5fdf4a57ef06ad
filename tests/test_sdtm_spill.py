"""Accepted SDTM rows spilled to disk under a memory budget, and the study written a dataset at a time.

A run whose rows pass ``StudyBuilder``'s budget must give exactly the bytes of a run held in memory, and leave
no temporary file behind, also when it fails while writing the study.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from converter.run import convert
from converter.sdtm import build
from converter.sdtm.build import StudyBuilder, case_tables
from converter.write import StudyWriter

from test_benchmark_gen import gen
from test_study_builder import _random_case

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(str(p) for p in (ROOT / "samples").glob("*.y*ml"))


def _gen_cases(folder: Path, count: int) -> str:
    """``count`` generated cases (benchmarks/gen.py) in one NDJSON file."""
    folder.mkdir(parents=True)
    path = folder / "cases.ndjson"
    path.write_bytes(b"".join(orjson.dumps(case) + b"\n" for case in gen.generate(count, seed=3)))
    return str(path)


def _record_spills(monkeypatch: pytest.MonkeyPatch) -> list[build.ColumnSpill]:
    """Every spill file the builder opens from now on, in order."""
    spills: list[build.ColumnSpill] = []

    class Recorded(build.ColumnSpill):
        def __init__(self, folder: Path):
            super().__init__(folder)
            spills.append(self)

    monkeypatch.setattr(build, "ColumnSpill", Recorded)
    return spills


def _tree(out: Path) -> dict[str, bytes]:
    """Every file under OUT (report.json without its timings)."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    report = orjson.loads(files.pop("report.json"))
    report.pop("timings_s")
    files["report.json"] = orjson.dumps(report).replace(str(out).encode(), b"<OUT>")
    return files


@pytest.mark.parametrize("budget", [1, 5_000, 30_000])
def test_spilled_rows_assemble_like_rows_in_memory(tmp_path: Path, budget: int) -> None:
    rng = random.Random(budget)
    cases = [_random_case(rng, f"S-{rng.randint(1, 9)}") for _ in range(40)]
    held, spilled = StudyBuilder("S"), StudyBuilder("S", spill_dir=tmp_path / "spill", budget=budget)
    for case in cases:
        held.accept(case_tables(case))
        spilled.accept(case_tables(case))
    spilled.rows["DM"] = [{"STUDYID": "S", "DOMAIN": "DM", "USUBJID": "S-1", "AGE": 40}]  # rows of add() come last
    held.rows["DM"] = list(spilled.rows["DM"])
    assert spilled.spilled and spilled.held <= budget
    expected = held.study()
    assert spilled.study() == expected and spilled.study() == expected  # without release the spill stays
    assert list(spilled.names()) and spilled.names() == held.names()
    assert [ds.name for ds in spilled.datasets(release=True)] == sorted(expected.datasets)
    assert not spilled and not spilled.spilled
    assert list((tmp_path / "spill").iterdir()) == []  # the spill files have no name on disk


def test_close_removes_the_spill(tmp_path: Path) -> None:
    builder = StudyBuilder("S", spill_dir=tmp_path, budget=1)
    builder.accept(case_tables(_random_case(random.Random(0), "S-1")))
    handles = [spill.handle for spill in builder.spilled.values()]
    assert handles and not any(h.closed for h in handles)
    builder.close()
    assert all(h.closed for h in handles) and not builder


def test_a_run_over_the_budget_writes_the_bytes_of_a_run_in_memory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    inputs = [*SAMPLES, _gen_cases(tmp_path / "in", 40)]
    formats = ("xpt", "json", "csv")
    convert(inputs, tmp_path / "memory", sdtm_formats=formats)
    spills = _record_spills(monkeypatch)
    monkeypatch.setattr(build, "SPILL_BUDGET", 50_000)
    convert(inputs, tmp_path / "spilled", sdtm_formats=formats)
    assert len(spills) > 20 and max(s.chunks for s in spills) > 10  # every dataset spilled, many times
    assert all(s.handle.closed for s in spills)
    memory, spilled = _tree(tmp_path / "memory"), _tree(tmp_path / "spilled")
    assert any(name.startswith("sdtm/csv/") for name in memory)
    assert sorted(spilled) == sorted(memory)
    assert [name for name in memory if memory[name] != spilled[name]] == []


def test_a_failure_while_writing_the_study_leaves_no_temporary_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    spills = _record_spills(monkeypatch)

    written: list[object] = []  # datasets given to a writer so far (each dataset has a writer of its own)

    def failing(original: Any) -> Any:
        def fail(self: StudyWriter, dataset: object) -> Any:
            if written:  # the second dataset: the first one's files are staged
                raise RuntimeError("disk on fire")
            written.append(dataset)
            return original(self, dataset)
        return fail

    monkeypatch.setattr(build, "SPILL_BUDGET", 1)
    monkeypatch.setattr(StudyWriter, "add", failing(StudyWriter.add))  # datasets assembled whole
    monkeypatch.setattr(StudyWriter, "add_parts", failing(StudyWriter.add_parts))  # spilled, a part at a time
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk on fire"):
        convert(SAMPLES, out)
    assert spills and all(s.handle.closed for s in spills)
    assert not (out / "sdtm").exists() or not any((out / "sdtm").rglob("*.*"))  # nothing staged is left
    assert not [p for p in out.iterdir() if p.name.startswith(".sdtm.")]


def test_the_study_written_a_dataset_at_a_time_is_the_study_checked_and_written_whole(tmp_path: Path) -> None:
    """``_write_sdtm`` (one dataset at a time, spilled) against validate_study + write_study of the whole study."""
    from datetime import datetime, timezone

    from converter.case.loader import read_records
    from converter.mapping.engine import MappingSet
    from converter.pipeline import Options, Pipeline
    from converter.run import RunReport, _Spill, _write_sdtm
    from converter.validate.issues import Issue
    from converter.validate.sdtm import validate_study
    from converter.write import write_study

    mapping_set = MappingSet.load(None)
    pipeline = Pipeline(mapping_set, Options(to=frozenset({"sdtm"})))
    cases = [pipeline.process(r).sdtm for path in SAMPLES for r in read_records(path)]
    cases.append({"DM": cases[0]["DM"]})  # the same subject twice: DM fails the study-level checks and is refused
    stamp = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    whole = StudyBuilder("CASEBRIDGE", mapping_set.terminology.ct_version)
    streamed = StudyBuilder("CASEBRIDGE", mapping_set.terminology.ct_version, spill_dir=tmp_path / "spill", budget=1)
    for tables in cases:
        whole.accept(tables)
        streamed.accept(tables)

    study = whole.study(release=True)
    expected = validate_study(study, mapping_set.terminology, rows_checked=True)
    assert "DM" in {i.location.split("[")[0] for i in expected if i.severity == "error"}
    del study.datasets["DM"]
    expected.append(Issue("error", "sdtm.refused", "dataset DM not written: it failed validation", "DM"))
    paths, found = write_study(study, tmp_path / "whole", mapping_set.terminology, {"xpt", "json", "csv"}, stamp)
    expected += found

    report = RunReport()
    report.spills = {"issues": _Spill(tmp_path, "issues", "list")}
    _write_sdtm(streamed, tmp_path / "streamed", mapping_set, {"xpt", "json", "csv"}, stamp, report)
    issues = orjson.loads(b"".join(report.spills["issues"].chunks()))
    assert issues == [orjson.loads(orjson.dumps(i)) for i in expected]
    assert not (tmp_path / "streamed" / "sdtm" / "dm.xpt").exists()
    assert len(report.files) == len(paths) > 3
    for path in paths:
        twin = tmp_path / "streamed" / path.relative_to(tmp_path / "whole")
        assert twin.read_bytes() == path.read_bytes(), twin
    assert not streamed and list((tmp_path / "spill").iterdir()) == []


def test_the_sdtm_memory_option_sets_the_budget_and_never_the_output(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``casebridge convert --sdtm-memory 1`` spills (1 MB is less than 40 cases' rows) and writes the same bytes."""
    from click.testing import CliRunner

    from converter.cli import cli

    spills = _record_spills(monkeypatch)
    inputs = [_gen_cases(tmp_path / "in", 40)]
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    runner = CliRunner()
    default = runner.invoke(cli, ["convert", *inputs, "--out", str(tmp_path / "default"), "-q"], env=env)
    assert default.exit_code == 0, default.output
    assert spills == []  # 40 cases stay far below the default budget
    small = runner.invoke(cli, ["convert", *inputs, "--out", str(tmp_path / "small"), "-q", "--sdtm-memory", "1"], env=env)
    assert small.exit_code == 0, small.output
    assert spills and all(s.handle.closed for s in spills)
    assert _tree(tmp_path / "small") == _tree(tmp_path / "default")
    refused = runner.invoke(cli, ["convert", *inputs, "--out", str(tmp_path / "x"), "--sdtm-memory", "0"], env=env)
    assert refused.exit_code == 2 and "--sdtm-memory" in refused.output
