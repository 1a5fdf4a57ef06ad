"""The end of a run shared among processes: the same bytes and issues as one process doing every dataset.

Real runs: generated cases and the samples converted with one job and with several, in memory and spilled; a
process that dies or fails leaves its datasets to the main process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from converter import study_end
from converter.run import convert

from test_sdtm_spill import SAMPLES, _gen_cases, _tree

CREATED = "2024-01-02T03:04:05"
CHILD_MAIN = study_end._child_main  # the real ones, for the stand-ins below
FINISH = study_end._finish


def _convert(out: Path, inputs: list[str], **options: Any) -> Any:
    from datetime import datetime

    return convert(inputs, out, created=datetime.fromisoformat(CREATED), **options)


def _children(monkeypatch: pytest.MonkeyPatch) -> list[study_end._Child]:
    """Every process the end of a run starts from now on."""
    started: list[study_end._Child] = []

    class Recorded(study_end._Child):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            started.append(self)

    monkeypatch.setattr(study_end, "_Child", Recorded)
    return started


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".casebridge-" in p.name]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return [*SAMPLES, _gen_cases(tmp_path_factory.mktemp("in") / "gen", 30)]


@pytest.fixture(scope="module")
def one_job(tmp_path_factory: pytest.TempPathFactory, inputs: list[str]) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("one") / "out"
    _convert(out, inputs, jobs=1)
    return _tree(out)


def _without_jobs(tree: dict[str, bytes]) -> dict[str, bytes]:
    report = orjson.loads(tree["report.json"])
    report["casebridge"]["options"].pop("jobs")
    return {**tree, "report.json": orjson.dumps(report)}


@pytest.mark.parametrize("jobs,memory", [(2, None), (3, None), (2, 1)])
def test_datasets_shared_among_processes_give_the_bytes_of_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               inputs: list[str], one_job: dict[str, bytes],
                                                               jobs: int, memory: int | None) -> None:
    """In memory and spilled (1 MB holds fewer rows than these cases have), two and three processes."""
    started = _children(monkeypatch)
    out = tmp_path / "out"
    _convert(out, inputs, jobs=jobs, sdtm_memory_mb=memory)
    assert len(started) == jobs - 1 and all(child.names for child in started)
    assert all(child.process.exitcode == 0 for child in started)
    shared = [name for child in started for name in child.names]
    assert len(shared) == len(set(shared))
    assert _without_jobs(_tree(out)) == _without_jobs(one_job)
    assert not _leftovers(out)


def _dies(builder: Any, names: list[str], settings: Any, send: Any) -> None:
    os._exit(3)  # killed before it sends anything


def _fails_late(builder: Any, names: list[str], settings: Any, send: Any) -> None:
    """Finishes its first dataset, then fails on the next: its staged files must go, the parent redoes both."""
    real = study_end._finish
    calls = []

    def finish(dataset: Any, settings: Any) -> Any:
        calls.append(dataset)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real(dataset, settings)

    study_end._finish = finish  # in the forked process only
    CHILD_MAIN(builder, names, settings, send)


@pytest.mark.parametrize("child", [_dies, _fails_late])
def test_a_process_that_fails_leaves_its_datasets_to_the_main_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      inputs: list[str], one_job: dict[str, bytes],
                                                                      child: Any) -> None:
    started = _children(monkeypatch)
    monkeypatch.setattr(study_end, "_child_main", child)
    out = tmp_path / "out"
    _convert(out, inputs, jobs=2)
    assert len(started) == 1 and len(started[0].names) > 1
    assert started[0].process.exitcode == (3 if child is _dies else 0)
    tree = _tree(out)
    report = orjson.loads(tree["report.json"])
    retried = [i for i in report["issues"] if i["rule"] == "run.retried"]
    why = "it ended with exit code 3" if child is _dies else "OSError: [Errno 28] No space left on device"
    assert [i["message"] for i in retried] == [
        f"the process writing {', '.join(started[0].names)} failed ({why}); the main process wrote them instead"]
    report["issues"].remove(retried[0])
    assert report["issue_counts"].pop("warning:run.retried") == 1
    assert _without_jobs({**tree, "report.json": orjson.dumps(report)}) == _without_jobs(one_job)
    assert not _leftovers(out)


def test_a_failure_of_the_main_process_stops_the_others_and_removes_what_they_staged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inputs: list[str]) -> None:
    """The main process fails while another process, having staged a dataset, is still working."""
    import time

    started = _children(monkeypatch)
    out = tmp_path / "out"

    def slow_child(builder: Any, names: list[str], settings: Any, send: Any) -> None:
        def finish(dataset: Any, settings: Any) -> Any:
            done = FINISH(dataset, settings)  # staged, not handed over yet
            time.sleep(120)
            return done

        study_end._finish = finish  # in the forked process only
        CHILD_MAIN(builder, names, settings, send)

    def failing_finish(dataset: Any, settings: Any) -> Any:
        deadline = time.monotonic() + 60
        while not _leftovers(out / "sdtm"):  # until the other process has staged something
            assert time.monotonic() < deadline, "the other process staged nothing"
            time.sleep(0.05)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(study_end, "_child_main", slow_child)
    monkeypatch.setattr(study_end, "_finish", failing_finish)
    with pytest.raises(OSError, match="No space left"):
        _convert(out, inputs, jobs=2)
    assert len(started) == 1 and not started[0].process.is_alive()
    assert not _leftovers(out)


def test_shares_put_the_largest_datasets_first_each_on_the_least_loaded_process() -> None:
    sizes = {"AE": 10, "CM": 40, "DM": 1, "LB": 30, "SUPPCM": 35, "TR": 5}
    assert study_end._shares(sizes, 1) == [sorted(sizes)]
    two = study_end._shares(sizes, 2)
    assert two == [["AE", "CM", "DM", "TR"], ["LB", "SUPPCM"]]  # CM, SUPPCM, LB, AE, TR, DM in turn: 56 and 65 rows
    three = study_end._shares(sizes, 3)
    assert sorted(n for share in three for n in share) == sorted(sizes) and len(three) == 3
    assert study_end._shares({"DM": 1}, 4) == [["DM"]]  # no process without a dataset
    assert study_end._shares({}, 2) == [[]]


def test_a_large_dataset_held_in_memory_is_written_a_part_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     inputs: list[str], one_job: dict[str, bytes]) -> None:
    """Never spilled but over PART_ROWS rows: read in parts from its sorted rows, never whole, same bytes."""
    from converter.sdtm import build

    monkeypatch.setattr(build, "PART_ROWS", 40)
    parted: list[tuple[str, bool]] = []
    real = build.DatasetParts.__init__

    def record(self: Any, name: str, spill: Any, rest: Any, own: bool = True) -> None:
        parted.append((name, spill is None))
        real(self, name, spill, rest, own)

    monkeypatch.setattr(build.DatasetParts, "__init__", record)
    monkeypatch.setattr(build, "_assemble", _forbidden_for_large(build._assemble))
    out = tmp_path / "out"
    _convert(out, inputs, jobs=1)
    assert len(parted) > 3 and all(unspilled for _, unspilled in parted)
    assert _tree(out) == one_job
    assert not _leftovers(out)


def _forbidden_for_large(assemble: Any) -> Any:
    """``_assemble`` that refuses a dataset the end of the run should have read in parts."""
    from converter.sdtm import build

    def checked(name: str, stored: Any) -> Any:
        assert stored.count <= build.PART_ROWS, f"{name} ({stored.count} rows) assembled whole"
        return assemble(name, stored)
    return checked
