"""``casebridge convert`` as an unattended ETL job runs it: batches with bad files, reruns, ``--jobs``, kills.

Most tests run the real command (``python -m converter convert``) on real files and look at the output tree:

* a batch folder with good and bad inputs (tests/data/batch/cases, see its README): good cases are written,
  each bad one is quarantined with its error report, exit 1; report.json holds what the issue asks for;
* reruns are byte-identical, with ``--jobs 1`` and ``--jobs 2``: every file under fhir/, sdtm/ and quarantine/,
  byte for byte, and report.json minus its timings (SOURCE_DATE_EPOCH is set for every run);
* a run SIGKILLed at several moments leaves no half-written file, and a rerun gives the clean run's output;
* options: stdin, ``--to``, ``--sdtm-format``, ``--fhir-bundle``, ``--fail-fast``, SOURCE_DATE_EPOCH/``--created``.

The machinery tests use the small mapping set in tests/data/batch/mappings (copied beside a copy of
mappings/terminology/cdisc-ct), so they do not depend on the clinical mappings being finished. The tests at the end
convert the samples with the shipped mappings/, as the README's set-up command does.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from converter import __version__
from converter.cli import cli

ROOT = Path(__file__).resolve().parents[1]
BATCH = ROOT / "tests" / "data" / "batch"
CASES = BATCH / "cases"
SAMPLES = ROOT / "samples"
SEED = SAMPLES / "lcnec-cadonilimab-anlotinib.yaml"
EPOCH = "1700000000"  # 2023-11-14T22:13:20Z
EPOCH_ISO = "2023-11-14T22:13:20"

#: Every file a conversion may leave under OUT (paths relative to OUT).
DOCUMENTED = re.compile(r"^(fhir/[^/]+\.bundle\.json|fhir/ndjson/[A-Z][A-Za-z]+\.ndjson|sdtm/[a-z0-9]+\.xpt"
                        r"|sdtm/json/[a-z0-9]+\.json|sdtm/csv/[a-z0-9]+\.csv|sdtm/define\.xml|report\.json"
                        r"|quarantine/[^/]+\.error\.json)$")
#: What an interrupted atomic write may leave behind.
ORPHAN = re.compile(r"^\..+\.tmp$")

# What the batch folder must give (tests/data/batch/README.md).
BATCH_CONVERTED = {  # source (relative to CASES) -> case_id
    "a-good.yaml": "batch-a", "b-good.json": "batch-b", "c-stream.ndjson#1": "batch-c1",
    "c-stream.ndjson#3": "batch-c3", "nested/h-good.yaml": "batch-h",
}
BATCH_QUARANTINED = {  # source -> (rule of its error, "line:col" or "" where the message must point)
    "c-stream.ndjson#2": ("case.syntax", "2:"),
    "d-bad-schema.yaml": ("case.schema", "8:5"),
    "e-bad-syntax.yaml": ("case.syntax", "6:"),
    "f-duplicate-id.yaml": ("case.duplicate", ""),
    "g-not-utf8.yaml": ("case.read", ""),
    "i-fails-validation.yaml": ("sdtm.value.length", ""),
}
BATCH_INPUT_ORDER = ["a-good.yaml", "b-good.json", "c-stream.ndjson#1", "c-stream.ndjson#2", "c-stream.ndjson#3",
                     "d-bad-schema.yaml", "e-bad-syntax.yaml", "f-duplicate-id.yaml", "g-not-utf8.yaml",
                     "i-fails-validation.yaml", "nested/h-good.yaml"]


# --- helpers ------------------------------------------------------------------------------------------------------

def run_env(**extra: str) -> dict[str, str]:
    """The environment of a real run: the checkout importable, a fixed SOURCE_DATE_EPOCH, no stray CASEBRIDGE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env["SOURCE_DATE_EPOCH"] = EPOCH
    env.update(extra)
    return env


def casebridge(*args: str | Path, stdin: bytes | None = None, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m converter ARGS`` from the repository root, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "converter", *map(str, args)], cwd=ROOT, env=env or run_env(),
                          input=stdin, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


def make_mini_mappings(folder: Path) -> Path:
    """The test mapping set (tests/data/batch/mappings) beside a copy of the shipped CDISC CT (all it needs)."""
    shutil.copytree(BATCH / "mappings", folder)
    shutil.copytree(ROOT / "mappings" / "terminology" / "cdisc-ct", folder / "terminology" / "cdisc-ct")
    return folder


@pytest.fixture(scope="session")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete mapping folder built from tests/data/batch/mappings."""
    return make_mini_mappings(tmp_path_factory.mktemp("mini") / "mappings")


def seed_copies(folder: Path, count: int, prefix: str = "copy") -> Path:
    """``count`` copies of the seed case, each with its own case_id, as YAML files in ``folder``."""
    text = SEED.read_text(encoding="utf-8")
    assert "\ncase_id: lcnec-cadonilimab-anlotinib\n" in text
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (folder / f"{prefix}-{n:04d}.yaml").write_text(
            text.replace("\ncase_id: lcnec-cadonilimab-anlotinib\n", f"\ncase_id: {prefix}-{n:04d}\n"),
            encoding="utf-8")
    return folder


def output_tree(out: Path) -> dict[str, bytes]:
    """Every output file under OUT but report.json and orphaned temporary files: relative path -> bytes."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "report.json" and not ORPHAN.match(p.name)}


def normalized_report(out: Path) -> dict[str, Any]:
    """report.json without what legitimately changes between runs: timings (and the output folder's name)."""
    text = (out / "report.json").read_text(encoding="utf-8").replace(str(out), "<OUT>")
    doc = orjson.loads(text)
    doc.pop("timings_s")
    return doc


def snapshot(out: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    """What a run left in OUT, for comparing runs: the output files and report.json minus its timings."""
    return output_tree(out), normalized_report(out)


def assert_same_output(got: Path | tuple[dict[str, bytes], dict[str, Any]],
                       expected: Path | tuple[dict[str, bytes], dict[str, Any]], *, drop_jobs: bool = False) -> None:
    """Two runs left the same files with the same bytes, and the same report but for timings (and --jobs)."""
    (a, report_a), (b, report_b) = [snapshot(x) if isinstance(x, Path) else x for x in (got, expected)]
    assert sorted(a) == sorted(b), f"different files: only in the first run: {sorted(set(a) - set(b))}, " \
                                   f"only in the second: {sorted(set(b) - set(a))}"
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, f"files that differ between the runs: {differ}"
    if drop_jobs:
        report_a, report_b = [{**r, "casebridge": {**r["casebridge"], "options": {
            k: v for k, v in r["casebridge"]["options"].items() if k != "jobs"}}} for r in (report_a, report_b)]
    assert report_a == report_b


def read_xpt(path: Path) -> dict[str, list[Any]]:
    import pyreadstat

    data, _meta = pyreadstat.read_xport(str(path), output_format="dict")
    return data


def report_of(out: Path) -> dict[str, Any]:
    return orjson.loads((out / "report.json").read_bytes())


def inputs_by_source(report: dict[str, Any], base: Path = CASES) -> dict[str, dict[str, Any]]:
    prefix = str(base) + "/"
    return {i["source"].replace(prefix, "", 1): i for i in report["inputs"]}


# --- a batch folder with bad files --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch_run(tmp_path_factory: pytest.TempPathFactory, mini: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``casebridge convert tests/data/batch/cases`` with every output format, as a real process."""
    out = tmp_path_factory.mktemp("batch") / "out"
    proc = casebridge("convert", CASES, "--out", out, "--mappings", mini, "--fhir-ndjson",
                      "--sdtm-format", "xpt,json,csv")
    return proc, out


def test_batch_converts_good_inputs_quarantines_bad_ones_exit_1(batch_run) -> None:
    proc, out = batch_run
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert proc.stdout == "", "convert writes files: nothing but the summary may go to stdout"
    assert re.search(r"^5 converted, 6 quarantined; 9 FHIR resources; SDTM rows: AE 4, DM 5; .* -> ", proc.stderr,
                     re.M), proc.stderr

    # the good ones: one bundle per case, in the SDTM study, in the NDJSON files
    bundles = sorted(p.name for p in (out / "fhir").glob("*.bundle.json"))
    assert bundles == sorted(f"{cid}.bundle.json" for cid in BATCH_CONVERTED.values())
    for case_id in BATCH_CONVERTED.values():
        bundle = orjson.loads((out / "fhir" / f"{case_id}.bundle.json").read_bytes())
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
        assert bundle["identifier"]["value"] == case_id
    subjects = {f"CASEBRIDGE-{cid}" for cid in BATCH_CONVERTED.values()}
    assert set(read_xpt(out / "sdtm" / "dm.xpt")["USUBJID"]) == subjects
    ae = read_xpt(out / "sdtm" / "ae.xpt")
    assert sorted(ae["USUBJID"]) == sorted(["CASEBRIDGE-batch-a"] * 2 + ["CASEBRIDGE-batch-b", "CASEBRIDGE-batch-c1"])
    for name in ("dm", "ae"):
        assert (out / "sdtm" / "json" / f"{name}.json").is_file()
        assert (out / "sdtm" / "csv" / f"{name}.csv").is_file()
    assert (out / "sdtm" / "define.xml").is_file()
    patients = (out / "fhir" / "ndjson" / "Patient.ndjson").read_bytes().splitlines()
    assert len(patients) == 5
    assert len((out / "fhir" / "ndjson" / "AdverseEvent.ndjson").read_bytes().splitlines()) == 4

    # the bad ones: one error report each, naming the input, with the located issue and the input text
    quarantined = sorted((out / "quarantine").iterdir())
    assert len(quarantined) == len(BATCH_QUARANTINED), [p.name for p in quarantined]
    seen = {}
    for path in quarantined:
        assert path.name.endswith(".error.json")
        body = orjson.loads(path.read_bytes())
        assert set(body) >= {"source", "case_id", "issues", "input"}
        seen[body["source"].replace(str(CASES) + "/", "", 1)] = body
    assert sorted(seen) == sorted(BATCH_QUARANTINED)
    for source, (rule, where) in BATCH_QUARANTINED.items():
        body = seen[source]
        assert rule in {i["rule"] for i in body["issues"]}, (source, body["issues"])
        assert all(set(i) == {"severity", "rule", "message", "location"} for i in body["issues"])
        issue = next(i for i in body["issues"] if i["rule"] == rule)
        assert issue["location"].startswith(f"{CASES}/{source}"), issue
        if where:
            assert issue["location"].startswith(f"{CASES}/{source}:{where}"), issue
        if source != "g-not-utf8.yaml":  # a file that cannot be decoded has no text to keep
            assert body["input"].strip(), f"{source}: the quarantined input keeps its text for the data manager"
    assert "batch-c2" in seen["c-stream.ndjson#2"]["input"]  # only the bad line, not the whole stream
    assert "batch-c1" not in seen["c-stream.ndjson#2"]["input"]

    # each error is one line on stderr naming the file and, where it has one, the position
    for source, (rule, where) in BATCH_QUARANTINED.items():
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{CASES}/{source}") and f"[{rule}]" in ln]
        assert lines, f"no error line for {source} on stderr:\n{proc.stderr}"
        if where:
            assert lines[0].startswith(f"{CASES}/{source}:{where}"), lines[0]

    # nothing else was written
    stray = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
             and not DOCUMENTED.match(p.relative_to(out).as_posix())]
    assert not stray, f"files the output layout does not document: {stray}"
    assert not any(ORPHAN.match(p.name) for p in out.rglob("*")), "a completed run leaves no temporary file"


def test_batch_report_json(batch_run, mini: Path) -> None:
    """report.json: inputs, counts per resource type and domain, located issues, unmapped facts, timings, versions."""
    _, out = batch_run
    report = report_of(out)
    assert set(report) >= {"casebridge", "summary", "inputs", "resource_counts", "domain_counts", "issues", "unmapped",
                           "unused_facts", "timings_s", "files"}
    meta = report["casebridge"]
    assert meta["version"] == __version__
    assert re.fullmatch(r"[0-9a-f]{64}", meta["mappings_sha256"]), meta
    assert meta["ct_version"] == "2025-03-28"
    assert isinstance(meta["terminology_tables"], list)
    assert meta["created"].startswith(EPOCH_ISO)
    assert meta["options"] == {"to": ["fhir", "sdtm"], "fhir_bundle": "collection", "sdtm_formats": ["csv", "json", "xpt"],
                               "study_id": "CASEBRIDGE", "jobs": 1}
    assert report["summary"] == {"inputs": 11, "converted": 5, "failed": 6}

    by_source = inputs_by_source(report)
    assert sorted(by_source) == sorted(BATCH_INPUT_ORDER)
    for source, case_id in BATCH_CONVERTED.items():
        entry = by_source[source]
        assert entry["status"] == "converted" and entry["case_id"] == case_id
        assert Path(entry["fhir"]) == out / "fhir" / f"{case_id}.bundle.json"
    for source in BATCH_QUARANTINED:
        entry = by_source[source]
        assert entry["status"] == "quarantined" and entry["errors"] >= 1
        assert Path(entry["error"]).is_file() and Path(entry["error"]).parent == out / "quarantine"

    # counts match what was written
    counted: dict[str, int] = {}
    for bundle in (out / "fhir").glob("*.bundle.json"):
        for entry in orjson.loads(bundle.read_bytes())["entry"]:
            rtype = entry["resource"]["resourceType"]
            counted[rtype] = counted.get(rtype, 0) + 1
    assert report["resource_counts"] == counted == {"AdverseEvent": 4, "Patient": 5}
    assert report["domain_counts"] == {"AE": 4, "DM": 5}
    assert report["domain_counts"]["AE"] == len(read_xpt(out / "sdtm" / "ae.xpt")["USUBJID"])

    # every issue, with its location; the validation failure of batch-i points at the input and the SDTM cell
    assert all(set(i) == {"severity", "rule", "message", "location"} and i["location"] for i in report["issues"])
    length = [i for i in report["issues"] if i["rule"] == "sdtm.value.length"]
    assert length and all(i["location"].startswith(f"{CASES}/i-fails-validation.yaml: AE[") for i in length), length
    for source, (rule, _) in BATCH_QUARANTINED.items():
        assert any(i["rule"] == rule and i["location"].startswith(f"{CASES}/{source}") for i in report["issues"]), source

    # facts no rule read, per case
    assert "source.title" in report["unused_facts"]["batch-a"]
    assert all(isinstance(v, list) for v in report["unmapped"].values())

    # per-stage timings
    assert set(report["timings_s"]) >= {"load", "map", "fhir_build", "fhir_validate", "sdtm_build", "sdtm_validate",
                                        "write", "total"}
    assert all(isinstance(v, (int, float)) and v >= 0 for v in report["timings_s"].values())

    # the files it lists are the files there are (but itself)
    listed = sorted(Path(f).relative_to(out).as_posix() for f in report["files"])
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "report.json")
    assert listed == on_disk


def test_batch_report_lists_inputs_in_input_order(batch_run) -> None:
    """The report reads like the batch: inputs in the order given (folders sorted), failed reads included."""
    _, out = batch_run
    got = [i["source"].replace(str(CASES) + "/", "", 1) for i in report_of(out)["inputs"]]
    assert got == BATCH_INPUT_ORDER


# --- reruns: byte-identical, with --jobs 1 and --jobs 2 -------------------------------------------------------------

def test_rerun_is_byte_identical_with_jobs_1_and_2(tmp_path: Path, mini: Path) -> None:
    """Same inputs, same SOURCE_DATE_EPOCH: the same bytes in every file, whatever --jobs, rerun in place or not."""
    copies = seed_copies(tmp_path / "copies", 18, prefix="rerun")  # enough for both workers of --jobs 2 to get work
    args = ["convert", CASES, copies, "--mappings", mini, "--fhir-ndjson", "--sdtm-format", "xpt,json,csv", "-q"]
    one, two = tmp_path / "jobs1", tmp_path / "jobs2"

    first = casebridge(*args, "--out", one, "--jobs", "1")
    assert first.returncode == 1, first.stderr  # the batch has bad inputs
    reference = snapshot(one)
    assert len(reference[0]) == 5 + 18 + 2 + 6 + 7  # bundles, NDJSON, quarantine, SDTM

    again = casebridge(*args, "--out", one, "--jobs", "1")  # rerun over the previous output
    assert again.returncode == 1
    assert_same_output(one, reference)

    parallel = casebridge(*args, "--out", two, "--jobs", "2")
    assert parallel.returncode == 1, parallel.stderr
    assert_same_output(two, reference, drop_jobs=True)

    over = casebridge(*args, "--out", one, "--jobs", "2")  # --jobs 2 over a --jobs 1 output
    assert over.returncode == 1
    assert_same_output(one, reference, drop_jobs=True)


# --- a run killed at any moment -----------------------------------------------------------------------------------

def _start(args: list[str | Path]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "converter", *map(str, args)], cwd=ROOT, env=run_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the run and its worker processes (its own process group), as a scheduler or the OOM killer would."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _assert_complete(path: Path, data: bytes) -> None:
    """The file parses completely in its format."""
    name = path.name
    if name.endswith(".ndjson"):
        assert data.endswith(b"\n"), f"{path}: last line is cut"
        for line in data.splitlines():
            orjson.loads(line)
    elif name.endswith(".json"):
        orjson.loads(data)
    elif name.endswith(".xpt"):
        read_xpt(path)
    elif name == "define.xml":
        from lxml import etree

        etree.fromstring(data)
    elif name.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        assert rows and len({len(r) for r in rows}) == 1, f"{path}: ragged or empty CSV"


def assert_no_partial_file(out: Path, clean: dict[str, bytes]) -> list[str]:
    """Every file under OUT is a documented output that parses and equals the clean run's bytes, or an orphan .tmp."""
    orphans = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if ORPHAN.match(path.name):
            orphans.append(rel)
            continue
        assert DOCUMENTED.match(rel), f"{rel}: not a documented output file"
        data = path.read_bytes()
        try:
            _assert_complete(path, data)
        except Exception as exc:  # noqa: BLE001 - whatever the parser raises, the file is partial
            pytest.fail(f"{rel} is partial after a kill: {type(exc).__name__}: {exc}")
        if rel != "report.json":
            assert rel in clean, f"{rel}: the clean run does not write this file"
            assert data == clean[rel], f"{rel}: differs from the clean run's (partial or stale)"
    return orphans


@pytest.mark.skipif(not hasattr(signal, "SIGKILL") or not hasattr(os, "killpg"), reason="needs POSIX signals")
def test_kill_mid_run_leaves_no_partial_file(tmp_path: Path, mini: Path) -> None:
    copies = seed_copies(tmp_path / "in", 60, prefix="kill")
    args: list[str | Path] = ["convert", copies, "--mappings", mini, "--fhir-ndjson", "--sdtm-format", "xpt,json,csv",
                              "-q"]
    clean_out = tmp_path / "clean"
    started = time.monotonic()
    clean = casebridge(*args, "--out", clean_out)
    took = time.monotonic() - started
    assert clean.returncode == 0, clean.stderr
    clean_tree = output_tree(clean_out)

    out = tmp_path / "out"
    kills = 0
    orphans: list[str] = []
    # the same OUT is killed again and again (a job that keeps crashing), at several moments, with 1 and 2 jobs
    for fraction, jobs in ((0.15, "1"), (0.45, "2"), (0.7, "1")):
        proc = _start([*args, "--out", out, "--jobs", jobs])
        time.sleep(took * fraction)
        finished = proc.poll() is not None
        _kill(proc)
        kills += not finished
        orphans += assert_no_partial_file(out, clean_tree)
    # and once exactly when the SDTM study (several files renamed one by one) starts being written
    proc = _start([*args, "--out", out])
    deadline = time.monotonic() + took * 3 + 10
    while proc.poll() is None and time.monotonic() < deadline and not (out / "sdtm").exists():
        time.sleep(0.002)
    finished = proc.poll() is not None
    _kill(proc)
    kills += not finished
    orphans += assert_no_partial_file(out, clean_tree)
    assert kills >= 2, f"the runs finished before they could be killed ({took:.1f}s per run): use more cases"

    # a rerun to completion gives exactly the clean run's output
    rerun = casebridge(*args, "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_output(out, clean_out)
    assert all(ORPHAN.match(Path(o).name) for o in orphans)


# --- SOURCE_DATE_EPOCH and --created ------------------------------------------------------------------------------

def _convert(runner_args: list[str | Path], env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(cli, [str(a) for a in runner_args], env=env)
    assert "Traceback" not in result.output, result.output
    return result


def test_creation_timestamps_follow_source_date_epoch_and_created(tmp_path: Path, mini: Path) -> None:
    args = ["convert", CASES / "a-good.yaml", "--mappings", mini, "--sdtm-format", "xpt,json", "-q"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _convert([*args, "--out", a], {"SOURCE_DATE_EPOCH": EPOCH}).exit_code == 0
    assert _convert([*args, "--out", b], {"SOURCE_DATE_EPOCH": "1600000000"}).exit_code == 0
    assert _convert([*args, "--out", c, "--created", EPOCH_ISO], {"SOURCE_DATE_EPOCH": "1600000000"}).exit_code == 0

    define = (a / "sdtm" / "define.xml").read_text(encoding="utf-8")
    assert f'CreationDateTime="{EPOCH_ISO}' in define
    assert orjson.loads((a / "sdtm" / "json" / "dm.json").read_bytes())["datasetJSONCreationDateTime"].startswith(EPOCH_ISO)
    assert b"14NOV23:22:13:20" in (a / "sdtm" / "dm.xpt").read_bytes()[:400]  # the XPT library header

    ta, tb = output_tree(a), output_tree(b)
    assert sorted(ta) == sorted(tb)
    changed = sorted(name for name in ta if ta[name] != tb[name])
    assert changed == ["sdtm/ae.xpt", "sdtm/define.xml", "sdtm/dm.xpt", "sdtm/json/ae.json", "sdtm/json/dm.json"]
    assert output_tree(c) == ta, "--created wins over SOURCE_DATE_EPOCH"


def test_malformed_source_date_epoch_is_one_clear_line(tmp_path: Path, mini: Path) -> None:
    proc = casebridge("convert", CASES / "a-good.yaml", "--out", tmp_path / "out", "--mappings", mini,
                      env=run_env(SOURCE_DATE_EPOCH="yesterday"))
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "SOURCE_DATE_EPOCH" in lines[0] and "'yesterday'" in lines[0], proc.stderr
    assert not (tmp_path / "out" / "sdtm").exists()


# --- inputs and options -------------------------------------------------------------------------------------------

def test_stdin_ndjson_stream(tmp_path: Path, mini: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["convert", "-", "--out", str(out), "--mappings", str(mini)],
                                input=(CASES / "c-stream.ndjson").read_bytes(), env={"SOURCE_DATE_EPOCH": EPOCH})
    assert result.exit_code == 1, result.output
    assert "<stdin>#2:2:" in result.stderr and "[case.syntax]" in result.stderr
    assert sorted(p.name for p in (out / "fhir").glob("*.json")) == ["batch-c1.bundle.json", "batch-c3.bundle.json"]
    (quarantined,) = (out / "quarantine").iterdir()
    body = orjson.loads(quarantined.read_bytes())
    assert body["source"] == "<stdin>#2" and "batch-c2" in body["input"]


def test_stdin_yaml_subprocess(tmp_path: Path, mini: Path) -> None:
    out = tmp_path / "out"
    proc = casebridge("convert", "-", "--out", out, "--mappings", mini, stdin=(CASES / "a-good.yaml").read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert (out / "fhir" / "batch-a.bundle.json").is_file()
    assert report_of(out)["inputs"][0]["source"] == "<stdin>"


def test_globs_and_files_together(tmp_path: Path, mini: Path) -> None:
    """A quoted glob is expanded by CaseBridge (ETL jobs often pass patterns without a shell)."""
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["convert", str(CASES / "*-good.*"), str(CASES / "nested" / "h-good.yaml"),
                                      "--out", str(out), "--mappings", str(mini), "-q"], env={"SOURCE_DATE_EPOCH": EPOCH})
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "fhir").glob("*.json")) == \
        ["batch-a.bundle.json", "batch-b.bundle.json", "batch-h.bundle.json"]


@pytest.mark.parametrize("to, present, absent", [("fhir", ["fhir"], ["sdtm"]), ("sdtm", ["sdtm"], ["fhir"])])
def test_to_one_standard(tmp_path: Path, mini: Path, to: str, present: list[str], absent: list[str]) -> None:
    out = tmp_path / "out"
    result = _convert(["convert", CASES / "a-good.yaml", "--out", out, "--mappings", mini, "--to", to, "-q"],
                      {"SOURCE_DATE_EPOCH": EPOCH})
    assert result.exit_code == 0, result.output
    assert all((out / p).is_dir() for p in present) and not any((out / p).exists() for p in absent)
    assert report_of(out)["casebridge"]["options"]["to"] == [to]


def test_sdtm_csv_only_still_writes_define(tmp_path: Path, mini: Path) -> None:
    out = tmp_path / "out"
    result = _convert(["convert", CASES / "a-good.yaml", "--out", out, "--mappings", mini, "--sdtm-format", "csv",
                       "-q"], {"SOURCE_DATE_EPOCH": EPOCH})
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in (out / "sdtm").rglob("*") if p.is_file()) == \
        ["sdtm/csv/ae.csv", "sdtm/csv/dm.csv", "sdtm/define.xml"]
    header = (out / "sdtm" / "csv" / "dm.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:3] == ["STUDYID", "DOMAIN", "USUBJID"]


def test_transaction_bundles(tmp_path: Path, mini: Path) -> None:
    out = tmp_path / "out"
    result = _convert(["convert", CASES / "a-good.yaml", "--out", out, "--mappings", mini, "--to", "fhir",
                       "--fhir-bundle", "transaction", "-q"])
    assert result.exit_code == 0, result.output
    bundle = orjson.loads((out / "fhir" / "batch-a.bundle.json").read_bytes())
    assert bundle["type"] == "transaction"
    assert all(e["request"]["method"] in ("POST", "PUT") for e in bundle["entry"])
    assert any("ifNoneExist" in e["request"] for e in bundle["entry"])  # conditional creates: reruns do not duplicate


def test_study_id(tmp_path: Path, mini: Path) -> None:
    out = tmp_path / "out"
    result = _convert(["convert", CASES / "a-good.yaml", "--out", out, "--mappings", mini, "--study-id", "ONC-001",
                       "--to", "sdtm", "-q"])
    assert result.exit_code == 0, result.output
    dm = read_xpt(out / "sdtm" / "dm.xpt")
    assert dm["STUDYID"] == ["ONC-001"] and dm["USUBJID"] == ["ONC-001-batch-a"]


def test_fail_fast_stops_at_the_first_failing_case(tmp_path: Path, mini: Path) -> None:
    out = tmp_path / "out"
    result = _convert(["convert", CASES / "d-bad-schema.yaml", CASES / "a-good.yaml", "--out", out, "--mappings", mini,
                       "--fail-fast"])
    assert result.exit_code == 1, result.output
    assert [i["status"] for i in report_of(out)["inputs"]] == ["quarantined"]
    assert not (out / "fhir").exists()


def test_fail_fast_stops_at_an_unreadable_input(tmp_path: Path, mini: Path) -> None:
    """An input that fails *reading* is an input that fails: --fail-fast stops there too."""
    out = tmp_path / "out"
    result = _convert(["convert", CASES / "g-not-utf8.yaml", CASES / "a-good.yaml", CASES / "b-good.json",
                       "--out", out, "--mappings", mini, "--fail-fast"])
    assert result.exit_code == 1, result.output
    assert [i["status"] for i in report_of(out)["inputs"]] == ["quarantined"], report_of(out)["inputs"]
    assert not (out / "fhir").exists(), "cases after the failing input were converted despite --fail-fast"


def test_quarantine_reports_of_same_named_inputs_do_not_overwrite_each_other(tmp_path: Path, mini: Path) -> None:
    """Two bad inputs called case.yaml in different folders: two error reports, each pointing at its input."""
    for sub, bad in (("site-1", "d-bad-schema.yaml"), ("site-2", "e-bad-syntax.yaml")):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(CASES / bad, tmp_path / "in" / sub / "case.yaml")
    out = tmp_path / "out"
    result = _convert(["convert", tmp_path / "in", "--out", out, "--mappings", mini, "-q"])
    assert result.exit_code == 1
    entries = report_of(out)["inputs"]
    assert len(entries) == 2
    errors = [Path(e["error"]) for e in entries]
    assert errors[0] != errors[1], f"both inputs are quarantined to the same file: {errors[0]}"
    for entry in entries:
        body = orjson.loads(Path(entry["error"]).read_bytes())
        assert body["source"] == entry["source"]


def test_a_case_failing_an_xpt_guard_does_not_cost_the_others_their_dataset(tmp_path: Path, mini: Path) -> None:
    """One bad case never costs the others: a non-ASCII AETERM must not make the whole AE dataset disappear.

    The case itself is either quarantined with its error report (exit 1) or written in full; either way the
    other cases keep their AE records and report.json counts what was written.
    """
    out = tmp_path / "out"
    result = _convert(["convert", CASES / "a-good.yaml", CASES / "b-good.json", BATCH / "extra" / "non-ascii-term.yaml",
                       "--out", out, "--mappings", mini])
    assert (out / "sdtm" / "ae.xpt").is_file(), f"AE was not written for anyone:\n{result.stderr}"
    subjects = sorted(read_xpt(out / "sdtm" / "ae.xpt")["USUBJID"])
    good = ["CASEBRIDGE-batch-a", "CASEBRIDGE-batch-a", "CASEBRIDGE-batch-b"]
    report = report_of(out)
    (entry,) = [e for e in report["inputs"] if e["source"].endswith("non-ascii-term.yaml")]
    if entry["status"] == "quarantined":
        assert result.exit_code == 1, result.output
        assert subjects == good
        assert Path(entry["error"]).is_file(), "the offending case has its error report"
        for line in result.stderr.splitlines():
            if "non-ASCII" in line and ": error:" in line:
                assert "non-ascii-term.yaml" in line, f"the error does not name the input: {line}"
    else:
        assert entry["status"] == "converted"
        assert subjects == sorted([*good, "CASEBRIDGE-batch-x"])
        assert result.exit_code == 0 and not [i for i in report["issues"] if i["severity"] == "error"], result.output
    assert report["domain_counts"]["AE"] == len(subjects), "report.json counts the AE records written"


def test_mapping_hash_is_a_hash_of_the_content(tmp_path: Path, mini: Path) -> None:
    """The same mapping files give the same mappings_sha256 wherever the folder is and however it is spelled."""
    moved = make_mini_mappings(tmp_path / "elsewhere" / "mappings")
    digests = []
    for folder in (mini, moved, Path(os.path.relpath(moved))):
        out = tmp_path / f"out{len(digests)}"
        result = _convert(["convert", CASES / "a-good.yaml", "--out", out, "--mappings", folder, "--to", "fhir", "-q"])
        assert result.exit_code == 0, result.output
        digests.append(report_of(out)["casebridge"]["mappings_sha256"])
    assert len(set(digests)) == 1, digests


def test_a_run_over_an_earlier_output_leaves_one_consistent_sdtm_study(tmp_path: Path, mini: Path) -> None:
    """OUT/sdtm is one study: after a run that exits 0 it holds exactly that run's datasets, all in define.xml.

    The first run writes AE and DM; the second (other inputs, same OUT) has no adverse event. An ae.xpt left from
    the first run is not in the new define.xml and refers to a subject that is not in the new DM.
    """
    out = tmp_path / "out"
    assert _convert(["convert", CASES / "a-good.yaml", "--out", out, "--mappings", mini, "-q"]).exit_code == 0
    assert (out / "sdtm" / "ae.xpt").is_file()
    second = _convert(["convert", CASES / "nested" / "h-good.yaml", "--out", out, "--mappings", mini, "-q"])
    assert second.exit_code == 0, second.output
    assert report_of(out)["domain_counts"] == {"DM": 1}
    datasets = sorted(p.name for p in (out / "sdtm").rglob("*") if p.is_file() and p.name != "define.xml")
    assert datasets == ["dm.json", "dm.xpt"], f"datasets of an earlier run left in the study: {datasets}"
    check = CliRunner().invoke(cli, ["validate", str(out / "sdtm")])
    assert check.exit_code == 0, check.output


def test_a_run_over_an_earlier_output_removes_its_stale_bundles_ndjson_and_quarantine_files(tmp_path: Path,
                                                                                            mini: Path) -> None:
    """Bundles, NDJSON and quarantine files in OUT are those of the last run, like the SDTM datasets."""
    out = tmp_path / "out"
    first = _convert(["convert", CASES / "a-good.yaml", CASES / "d-bad-schema.yaml", "--out", out, "--mappings", mini,
                      "--fhir-ndjson", "-q"])
    assert first.exit_code == 1, first.output
    old_bundles = sorted(p.name for p in (out / "fhir").glob("*.bundle.json"))
    assert old_bundles == ["batch-a.bundle.json"] and len(list((out / "quarantine").glob("*.error.json"))) == 1
    old_ndjson = {p.name for p in (out / "fhir" / "ndjson").glob("*.ndjson")}
    keep = out / "fhir" / "notes.txt"  # not a file CaseBridge writes: never touched
    keep.write_text("mine\n")
    second = _convert(["convert", CASES / "nested" / "h-good.yaml", "--out", out, "--mappings", mini, "--to", "fhir",
                       "-q"])
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in (out / "fhir").glob("*.bundle.json")) == ["batch-h.bundle.json"]
    assert list((out / "quarantine").glob("*.error.json")) == []
    assert {p.name for p in (out / "fhir" / "ndjson").glob("*.ndjson")} == old_ndjson, \
        "a run without --fhir-ndjson does not own NDJSON files"
    assert keep.read_text() == "mine\n"
    third = _convert(["convert", CASES / "b-good.json", "--out", out, "--mappings", mini, "--to", "fhir",
                      "--fhir-ndjson", "-q"])
    assert third.exit_code == 0, third.output
    assert sorted(p.name for p in (out / "fhir").glob("*.bundle.json")) == ["batch-b.bundle.json"]
    ndjson = sorted((out / "fhir" / "ndjson").glob("*.ndjson"))
    assert ndjson and all(b"batch-a" not in p.read_bytes() and b"batch-h" not in p.read_bytes() for p in ndjson)
    assert sorted(report_of(out)["files"]) == sorted(str(p) for p in [*(out / "fhir").glob("*.bundle.json"), *ndjson])


@pytest.mark.parametrize("command", ["convert", "check"])
@pytest.mark.parametrize("pattern, says", [("nothing-*.yaml", "no file matches"), ("empty", "holds no case files")])
def test_an_input_matching_no_file_is_a_usage_error(tmp_path: Path, command: str, pattern: str, says: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a case\n")
    item, out = str(tmp_path / pattern), tmp_path / "out"
    args = [command, str(CASES / "a-good.yaml"), item] + (["--out", str(out)] if command == "convert" else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and says in last and repr(item) in last, result.stderr
    assert not out.exists(), "nothing is converted or written"


def test_jobs_2_in_process(tmp_path: Path, mini: Path) -> None:
    """The same through click's CliRunner (the API in one process): --jobs 2 equals --jobs 1."""
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        result = _convert(["convert", CASES, "--out", out, "--mappings", mini, "--jobs", jobs, "--fhir-ndjson", "-q"],
                          {"SOURCE_DATE_EPOCH": EPOCH})
        assert result.exit_code == 1
        assert result.stdout == "" and result.stderr == "", "--quiet: nothing on stdout or stderr"
        outs.append(out)
    assert_same_output(outs[1], outs[0], drop_jobs=True)


# --- the shipped mappings (README set-up command) -------------------------------------------------------------------

def test_seed_converts_with_the_shipped_mappings(tmp_path: Path) -> None:
    """``casebridge convert samples/lcnec-cadonilimab-anlotinib.yaml --out out/`` (README): exit 0, every output."""
    out = tmp_path / "out"
    proc = casebridge("convert", SEED.relative_to(ROOT), "--out", out, "--fhir-ndjson", "--sdtm-format", "xpt,json,csv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert (out / "fhir" / "lcnec-cadonilimab-anlotinib.bundle.json").is_file()
    report = report_of(out)
    assert report["summary"] == {"inputs": 1, "converted": 1, "failed": 0}
    assert not [i for i in report["issues"] if i["severity"] == "error"]
    for domain in ("dm", "ae"):
        assert (out / "sdtm" / f"{domain}.xpt").is_file() and (out / "sdtm" / "json" / f"{domain}.json").is_file()
    assert (out / "sdtm" / "define.xml").is_file()
    assert {"Patient", "AdverseEvent"} <= set(report["resource_counts"])


def test_samples_rerun_byte_identical_with_the_shipped_mappings(tmp_path: Path) -> None:
    args = ["convert", SAMPLES.relative_to(ROOT), "--fhir-ndjson", "--sdtm-format", "xpt,json,csv", "-q"]
    one = casebridge(*args, "--out", tmp_path / "one", "--jobs", "1")
    assert one.returncode == 0, one.stderr
    two = casebridge(*args, "--out", tmp_path / "two", "--jobs", "2")
    assert two.returncode == 0, two.stderr
    assert_same_output(tmp_path / "two", tmp_path / "one", drop_jobs=True)
    again = casebridge(*args, "--out", tmp_path / "one", "--jobs", "1")
    assert again.returncode == 0
    assert_same_output(tmp_path / "one", tmp_path / "two", drop_jobs=True)


@pytest.mark.parametrize("jobs", [1, 2])
def test_ndjson_line_that_is_not_utf8_is_quarantined_alone(tmp_path: Path, jobs: int) -> None:
    """NDJSON is streamed line by line: a bad line costs that line only, wherever it is in the file."""
    case = orjson.loads(Path("samples/minimal.json").read_bytes())
    lines = []
    for i in range(5):
        case["case_id"] = f"nd-{i}"
        lines.append(orjson.dumps(case))
    lines[2] = lines[2].replace(b"female", b"f\xe9male")  # Latin-1, not UTF-8
    src = tmp_path / "cases.ndjson"
    src.write_bytes(b"\n".join(lines) + b"\n")
    result = CliRunner().invoke(cli, ["convert", str(src), "--out", str(tmp_path / "out"), "--to", "fhir",
                                      "--jobs", str(jobs), "--quiet"])
    assert result.exit_code == 1, result.output
    report = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
    assert [(i["source"].rsplit("#", 1)[1], i["status"]) for i in report["inputs"]] == [
        ("1", "converted"), ("2", "converted"), ("3", "quarantined"), ("4", "converted"), ("5", "converted")]
    quarantined = orjson.loads(Path(report["inputs"][2]["error"]).read_bytes())
    assert quarantined["issues"][0]["rule"] == "case.read"
    assert quarantined["issues"][0]["location"] == f"{src}:3" and "not UTF-8" in quarantined["issues"][0]["message"]


# --- per-case FHIR output written by the converting process (staging folder) --------------------------------------

CREATED = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)


def _run_api(out: Path, inputs: list[Path], mini: Path, **options: Any) -> Any:
    """``convert`` in this process (its workers forked from it), FHIR NDJSON on, a fixed creation time."""
    from converter.run import convert

    return convert([str(p) for p in inputs], out, mappings=mini, fhir_ndjson=True, created=CREATED, **options)


def _good_copies(folder: Path, count: int) -> Path:
    """``count`` copies of a-good.yaml, each with its own case_id (the folder's name and a number)."""
    text = (CASES / "a-good.yaml").read_text(encoding="utf-8")
    folder.mkdir(parents=True)
    for n in range(count):
        case_id = f"{folder.name}-{n:03d}"
        (folder / f"{case_id}.yaml").write_text(text.replace("case_id: batch-a", f"case_id: {case_id}"),
                                                encoding="utf-8")
    return folder


def assert_no_temporary_file(out: Path) -> None:
    """No staging folder, no temporary file: what a finished (or failed, not killed) run leaves."""
    left = [p.relative_to(out).as_posix() for p in out.rglob("*") if ORPHAN.match(p.name)]
    assert not left, f"temporary files left behind: {left}"


def test_jobs_2_keeps_the_first_bundle_of_a_duplicate_case_id(tmp_path: Path, mini: Path) -> None:
    alone = tmp_path / "alone"
    _run_api(alone, [CASES / "a-good.yaml"], mini)
    out = tmp_path / "out"
    report = _run_api(out, [CASES, _good_copies(tmp_path / "copies", 12)], mini, jobs=2)
    statuses = {Path(i["source"]).name: i["status"] for i in report_of(out)["inputs"]}
    assert statuses["a-good.yaml"] == "converted" and statuses["f-duplicate-id.yaml"] == "quarantined"
    assert report.converted == 5 + 12 and report.failed == 6
    # a-good.yaml's bundle and NDJSON lines, not those of the later f-duplicate-id.yaml (no adverse events)
    assert (out / "fhir" / "batch-a.bundle.json").read_bytes() == (alone / "fhir" / "batch-a.bundle.json").read_bytes()
    patients = (out / "fhir" / "ndjson" / "Patient.ndjson").read_bytes().splitlines(keepends=True)
    assert len(patients) == report.converted
    assert (alone / "fhir" / "ndjson" / "Patient.ndjson").read_bytes() in patients
    assert_no_temporary_file(out)


def test_ndjson_and_every_file_with_jobs_2_equal_jobs_1(tmp_path: Path, mini: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad and duplicate cases between good ones, workers starting a new NDJSON part file after every case."""
    from converter.write import case_files

    monkeypatch.setattr(case_files, "_PART_BYTES", 1)  # forked workers inherit it
    inputs = [_good_copies(tmp_path / "copies", 10), CASES, _good_copies(tmp_path / "more", 10)]
    one, two = tmp_path / "one", tmp_path / "two"
    _run_api(one, inputs, mini, jobs=1)
    _run_api(two, inputs, mini, jobs=2)
    assert_same_output(two, one, drop_jobs=True)
    assert sorted(p.name for p in (one / "fhir" / "ndjson").iterdir()) == ["AdverseEvent.ndjson", "Patient.ndjson"]
    lines = (two / "fhir" / "ndjson" / "Patient.ndjson").read_bytes().splitlines()
    cases = [orjson.loads(line)["identifier"][0]["value"].split("/")[0] for line in lines]
    assert cases == ([f"copies-{n:03d}" for n in range(10)] + ["batch-a", "batch-b", "batch-c1", "batch-c3", "batch-h"]
                     + [f"more-{n:03d}" for n in range(10)]), "input order, duplicates and bad cases left out"
    assert_no_temporary_file(one)
    assert_no_temporary_file(two)


def test_fail_fast_with_jobs_2_leaves_no_temporary_file(tmp_path: Path, mini: Path) -> None:
    """Cases after the failing one may already be converted by a worker: their staged files go."""
    out = tmp_path / "out"
    report = _run_api(out, [CASES / "d-bad-schema.yaml", _good_copies(tmp_path / "copies", 20)], mini,
                      jobs=2, fail_fast=True)
    assert [i["status"] for i in report_of(out)["inputs"]] == ["quarantined"] and report.converted == 0
    assert not (out / "fhir").exists()
    assert_no_temporary_file(out)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_run_that_fails_midway_removes_its_temporary_files(tmp_path: Path, mini: Path, jobs: int) -> None:
    seen = []

    def progress(result: Any) -> None:
        seen.append(result)
        if len(seen) == 3:
            raise RuntimeError("stop here")

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="stop here"):
        _run_api(out, [_good_copies(tmp_path / "copies", 20)], mini, jobs=jobs, progress=progress)
    assert_no_temporary_file(out)
    assert not list(out.glob("fhir/ndjson/*")), "NDJSON files are only renamed into place by a finished run"
