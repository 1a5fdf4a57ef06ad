"""The ``casebridge`` command line and its conventions, through click's CliRunner and as a real process.

* every command has ``--help`` with an example; ``--version``; exit codes in ``--help`` and the README;
* exit codes: 0 all good, 1 some inputs failed, 2 usage error, 3 internal error (one line; ``--debug`` shows the
  traceback);
* options from environment variables (``CASEBRIDGE_<COMMAND>_<OPTION>``); a progress bar only on a terminal;
* ``validate`` on a conversion output (clean: exit 0) and on corrupted copies of it (exit 1, the file named);
* ``explain CASE FIELD``: where a fact lands in FHIR and SDTM, through which mapping file:line — checked against
  what ``convert`` actually wrote;
* ``mappings lint/test/doc`` and ``check``.

Like tests/test_convert_run.py, most tests use the small mapping set of tests/data/batch/mappings; the tests
named ``..._shipped_mappings`` use mappings/ as it ships.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner

from converter import __version__, api
from converter.cli import cli
from test_convert_run import BATCH, CASES, EPOCH, ROOT, SEED, casebridge, make_mini_mappings, read_xpt, report_of, run_env

A_GOOD = CASES / "a-good.yaml"


@pytest.fixture(scope="session")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete mapping folder built from tests/data/batch/mappings."""
    return make_mini_mappings(tmp_path_factory.mktemp("mini") / "mappings")


def invoke(*args: str | Path, env: dict[str, str] | None = None, input: bytes | str | None = None) -> Any:
    """The CLI in-process, with a fixed SOURCE_DATE_EPOCH."""
    return CliRunner().invoke(cli, [str(a) for a in args], env={"SOURCE_DATE_EPOCH": EPOCH, **(env or {})},
                              input=input, prog_name="casebridge")


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ": error: " in ln]


# --- --help, --version, exit codes ----------------------------------------------------------------------------------

COMMANDS = [(), ("check",), ("convert",), ("validate",), ("explain",), ("mappings",), ("mappings", "lint"),
            ("mappings", "test"), ("mappings", "doc")]


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            paths += _command_paths(sub, (*path, name))
    return paths


def test_every_command_is_covered_here() -> None:
    assert sorted(_command_paths(cli)) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "casebridge")
def test_help_has_an_example(command: tuple[str, ...]) -> None:
    for flag in ("--help", "-h"):
        result = invoke(*command, flag)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"Usage: casebridge {' '.join(command)}".rstrip() + " ")
        assert "Example" in result.stdout, f"casebridge {' '.join(command)} --help shows no example"
        example = result.stdout.split("Example", 1)[1]
        assert f"casebridge {' '.join(command)}".rstrip() in example


def test_help_and_readme_document_the_exit_codes() -> None:
    text = " ".join(invoke("--help").stdout.split())
    for code, meaning in (("0", "all good"), ("1", "some inputs failed reading, mapping or validation"),
                          ("2", "usage error"), ("3", "internal error")):
        assert f"{code} {meaning}" in text, f"exit code {code} is not explained in casebridge --help"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"Exit codes.*`0`.*`1`.*`2`.*`3`", readme, re.S)


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"casebridge, version {__version__}"
    proc = casebridge("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"casebridge, version {__version__}"


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


USAGE_ERRORS = {
    "convert without --out": (["convert", A_GOOD], "Missing option '--out'"),
    "convert without inputs": (["convert", "--out", "{out}"], "Missing argument 'INPUTS...'"),
    "--to xml": (["convert", A_GOOD, "--out", "{out}", "--to", "xml"], "--to"),
    "--sdtm-format pdf": (["convert", A_GOOD, "--out", "{out}", "--sdtm-format", "pdf"], "--sdtm-format"),
    "--jobs 0": (["convert", A_GOOD, "--out", "{out}", "--jobs", "0"], "--jobs"),
    "--fhir-bundle batch": (["convert", A_GOOD, "--out", "{out}", "--fhir-bundle", "batch"], "--fhir-bundle"),
    "--created yesterday": (["convert", A_GOOD, "--out", "{out}", "--created", "yesterday"], "--created"),
    "--mappings missing": (["convert", A_GOOD, "--out", "{out}", "--mappings", "no/such/folder"], "--mappings"),
    "--out is a file": (["convert", A_GOOD, "--out", "{file}"], "--out"),
    "unknown option": (["convert", A_GOOD, "--out", "{out}", "--frobnicate"], "No such option"),
    "unknown command": (["frobnicate"], "No such command"),
    "validate without paths": (["validate"], "Missing argument"),
    "explain without field": (["explain", A_GOOD], "Missing argument 'FIELD'"),
    "explain missing case": (["explain", "no/such/case.yaml", "patient.sex"], "does not exist"),
    "mappings doc without --out": (["mappings", "doc"], "Missing option '--out'"),
}


@pytest.mark.parametrize("name", sorted(USAGE_ERRORS))
def test_usage_error_exits_2(name: str, tmp_path: Path, a_file: Path) -> None:
    args, says = USAGE_ERRORS[name]
    out = tmp_path / "out"
    result = invoke(*[str(a).format(out=out, file=a_file) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert says in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert not out.exists(), "a usage error writes nothing"


def test_usage_error_subprocess(tmp_path: Path) -> None:
    proc = casebridge("convert", A_GOOD, "--out", tmp_path / "out", "--to", "xml")
    assert proc.returncode == 2
    assert "Error: Invalid value for --to: xml: choose from fhir, sdtm" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def _boom(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("boom")


@pytest.mark.parametrize("command", [["convert", str(A_GOOD), "--out", "{out}"], ["validate", str(A_GOOD)],
                                     ["check", str(A_GOOD)]], ids=lambda c: c[0])
def test_internal_error_is_one_line_exit_3_and_debug_shows_the_traceback(command: list[str], tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, command[0], _boom)
    args = [a.format(out=tmp_path / "out") for a in command]
    result = invoke(*args)
    assert result.exit_code == 3, result.output
    assert result.stderr.splitlines() == ["internal error: RuntimeError: boom (rerun with --debug for the traceback)"]
    assert result.stdout == ""
    debug = invoke("--debug", *args)
    assert debug.exit_code == 3
    assert "Traceback (most recent call last)" in debug.stderr and "RuntimeError: boom" in debug.stderr
    from_env = invoke(*args, env={"CASEBRIDGE_DEBUG": "1"})
    assert from_env.exit_code == 3 and "Traceback (most recent call last)" in from_env.stderr


_BROKEN = """
import sys
import converter.api as api
def boom(*args, **kwargs):
    raise RuntimeError("boom")
api.convert = boom
from converter.cli import main
sys.argv[0] = "casebridge"
main()
"""


def test_internal_error_subprocess(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", _BROKEN]
    plain = subprocess.run([*cmd, "convert", str(A_GOOD), "--out", str(tmp_path / "o")], cwd=ROOT, env=run_env(),
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 3
    assert plain.stderr.strip() == "internal error: RuntimeError: boom (rerun with --debug for the traceback)"
    debug = subprocess.run([*cmd, "--debug", "convert", str(A_GOOD), "--out", str(tmp_path / "o")], cwd=ROOT,
                           env=run_env(), capture_output=True, text=True, timeout=120)
    assert debug.returncode == 3 and "Traceback (most recent call last)" in debug.stderr


def test_broken_mapping_folder_one_line_per_problem(tmp_path: Path, mini: Path) -> None:
    """A mapping folder that does not lint: every problem at once, each file:line:col, nothing written."""
    broken = tmp_path / "broken"
    shutil.copytree(mini, broken)
    ae = broken / "sdtm" / "ae.yaml"
    ae.write_text(ae.read_text().replace("AETOXGR: {$value: grade", "AETOXGRX: {$value: grade"))
    patient = broken / "fhir" / "patient.yaml"
    patient.write_text(patient.read_text().replace("{$value: sex,", "{$value: sexx,"))
    out = tmp_path / "out"
    result = invoke("convert", A_GOOD, "--out", out, "--mappings", broken)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = error_lines(result.stderr)
    assert any(re.match(r"sdtm/ae\.yaml:\d+:\d+: error: AETOXGRX is not a variable of AE", ln) for ln in lines), lines
    assert any(re.match(r"fhir/patient\.yaml:\d+:\d+: error: source path 'sexx'", ln) for ln in lines), lines
    assert not (out / "fhir").exists() and not (out / "sdtm").exists()


# --- environment variables, progress, stdout ----------------------------------------------------------------------

def test_options_from_environment_variables(tmp_path: Path, mini: Path) -> None:
    out = tmp_path / "out"
    env = {"CASEBRIDGE_CONVERT_OUT": str(out), "CASEBRIDGE_CONVERT_MAPPINGS": str(mini),
           "CASEBRIDGE_CONVERT_STUDY_ID": "ENVSTUDY", "CASEBRIDGE_CONVERT_SDTM_FORMAT": "xpt,csv",
           "CASEBRIDGE_CONVERT_FHIR_NDJSON": "1", "CASEBRIDGE_CONVERT_JOBS": "2", "CASEBRIDGE_CONVERT_QUIET": "1",
           "CASEBRIDGE_CONVERT_FHIR_BUNDLE": "transaction"}
    result = invoke("convert", A_GOOD, env=env)
    assert result.exit_code == 0, result.output
    assert result.stderr == "", "CASEBRIDGE_CONVERT_QUIET=1: no summary"
    options = report_of(out)["casebridge"]["options"]
    assert options == {"to": ["fhir", "sdtm"], "fhir_bundle": "transaction", "sdtm_formats": ["csv", "xpt"],
                       "study_id": "ENVSTUDY", "jobs": 2}
    assert (out / "fhir" / "ndjson" / "Patient.ndjson").is_file()
    assert (out / "sdtm" / "csv" / "dm.csv").is_file() and not (out / "sdtm" / "json").exists()
    assert read_xpt(out / "sdtm" / "dm.xpt")["STUDYID"] == ["ENVSTUDY"]

    # the command line wins over the environment
    other = tmp_path / "other"
    result = invoke("convert", A_GOOD, "--out", other, "--study-id", "CLI", env=env)
    assert result.exit_code == 0 and report_of(other)["casebridge"]["options"]["study_id"] == "CLI"

    # a bad value from the environment is a usage error, as on the command line
    bad = invoke("convert", A_GOOD, env={**env, "CASEBRIDGE_CONVERT_JOBS": "0"})
    assert bad.exit_code == 2 and "--jobs" in bad.stderr


def test_environment_variables_of_other_commands(mini: Path) -> None:
    # click names the variable after the parameter: --json is stored as as_json
    proc = casebridge("validate", CASES / "b-good.json", env=run_env(CASEBRIDGE_VALIDATE_AS_JSON="1"))
    assert proc.returncode == 1  # a case report is not a FHIR resource
    assert isinstance(orjson.loads(proc.stdout), list)
    result = invoke("explain", A_GOOD, "adverse_events[0].grade", env={"CASEBRIDGE_EXPLAIN_MAPPINGS": str(mini)})
    assert result.exit_code == 0 and "sdtm/ae.yaml:" in result.stdout


def _run_on_a_terminal(args: list[str | Path]) -> tuple[int, bytes, bytes]:
    """Run ``python -m converter ARGS`` with stderr on a pseudo-terminal; returns (exit code, stdout, terminal)."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "converter", *map(str, args)], cwd=ROOT, env=run_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    stdout = proc.stdout.read() if proc.stdout else b""
    code = proc.wait(timeout=120)
    os.close(master)
    return code, stdout, seen


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_bar_only_on_a_terminal_and_not_with_quiet(tmp_path: Path, mini: Path) -> None:
    args: list[str | Path] = ["convert", A_GOOD, CASES / "b-good.json", "--mappings", mini]
    code, stdout, terminal = _run_on_a_terminal([*args, "--out", tmp_path / "tty"])
    assert code == 0 and stdout == b""
    assert b"converting" in terminal and b"%" in terminal, terminal
    assert b"2 converted, 0 quarantined" in terminal

    code, stdout, terminal = _run_on_a_terminal([*args, "--out", tmp_path / "quiet", "--quiet"])
    assert code == 0 and stdout == b"" and terminal == b""

    piped = casebridge(*args, "--out", tmp_path / "piped")
    assert piped.returncode == 0
    assert "converting" not in piped.stderr and "\r" not in piped.stderr, "no progress bar when not on a terminal"
    assert piped.stdout == ""
    assert piped.stderr.strip().startswith("2 converted, 0 quarantined")


def test_convert_prints_only_the_summary(tmp_path: Path, mini: Path) -> None:
    result = invoke("convert", A_GOOD, CASES / "b-good.json", "--out", tmp_path / "out", "--mappings", mini)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    (summary,) = result.stderr.splitlines()
    assert re.fullmatch(r"2 converted, 0 quarantined; 5 FHIR resources; SDTM rows: AE 3, DM 2; [\d.]+s -> .*out",
                        summary), summary


# --- validate -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seed_out(tmp_path_factory: pytest.TempPathFactory, mini: Path) -> Path:
    """The seed case and batch case A converted with every SDTM format (no NDJSON)."""
    out = tmp_path_factory.mktemp("seed") / "out"
    result = invoke("convert", SEED, A_GOOD, "--out", out, "--mappings", mini, "--sdtm-format", "xpt,json,csv", "-q")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def corrupt(seed_out: Path, tmp_path: Path) -> Path:
    """A copy of the seed output to damage."""
    copy = tmp_path / "copy"
    shutil.copytree(seed_out, copy)
    return copy


def test_validate_the_seed_output(seed_out: Path) -> None:
    result = invoke("validate", seed_out)
    assert result.exit_code == 0, result.output
    assert not error_lines(result.stdout)
    assert re.match(r"0 error\(s\), \d+ warning\(s\)/note\(s\)", result.stderr)


def test_validate_single_files_and_folders(seed_out: Path) -> None:
    bundle = seed_out / "fhir" / "lcnec-cadonilimab-anlotinib.bundle.json"
    for paths in ([bundle], [seed_out / "sdtm"], [seed_out / "sdtm" / "json"], [bundle, seed_out / "sdtm"]):
        result = invoke("validate", *paths)
        assert result.exit_code == 0, (paths, result.output)


def test_validate_json_output(seed_out: Path) -> None:
    result = invoke("validate", "--json", seed_out)
    assert result.exit_code == 0
    issues = orjson.loads(result.stdout)
    assert all(set(i) == {"severity", "rule", "message", "location"} for i in issues)
    assert not [i for i in issues if i["severity"] == "error"]


def _edit_json(path: Path, change: Any) -> None:
    doc = orjson.loads(path.read_bytes())
    change(doc)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _first_of(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


def _set_gender(doc: dict[str, Any]) -> None:
    _first_of(doc, "Patient")["gender"] = "robot"


def _dangle(doc: dict[str, Any]) -> None:
    _first_of(doc, "AdverseEvent")["subject"]["reference"] = "urn:uuid:00000000-0000-5000-8000-000000000000"


def _dm_sex(doc: dict[str, Any]) -> None:
    """Dataset-JSON 1.1: column metadata, then rows as arrays in column order."""
    sex = [c["name"] for c in doc["columns"]].index("SEX")
    for row in doc["rows"]:
        row[sex] = "X"


BUNDLE = "fhir/lcnec-cadonilimab-anlotinib.bundle.json"
CORRUPTIONS = {  # name -> (file under OUT, how it is damaged, rule of the expected error)
    "bundle cut in half": (BUNDLE, _truncate, "validate.read"),
    "bundle gender not in R4": (BUNDLE, lambda p: _edit_json(p, _set_gender), "fhir.schema"),
    "bundle reference dangles": (BUNDLE, lambda p: _edit_json(p, _dangle), "fhir.reference.unresolved"),
    "xpt cut in half": ("sdtm/ae.xpt", _truncate, "sdtm.read.error"),
    "define.xml cut in half": ("sdtm/define.xml", _truncate, "define.syntax"),
    "dataset-json cut in half": ("sdtm/json/dm.json", _truncate, "sdtm.read.error"),
    "dataset-json value not in CT": ("sdtm/json/dm.json", lambda p: _edit_json(p, _dm_sex), "sdtm.ct.nonextensible"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_validate_a_corrupted_copy(name: str, corrupt: Path) -> None:
    rel, damage, rule = CORRUPTIONS[name]
    target = corrupt / rel
    damage(target)
    result = invoke("validate", corrupt)
    assert result.exit_code == 1, f"{name}: not detected\n{result.output}"
    assert "Traceback" not in result.output
    found = [ln for ln in error_lines(result.stdout) if f"[{rule}]" in ln]
    assert found, f"{name}: no [{rule}] error in\n{result.stdout}"
    folder_or_file = (str(target), str(target.parent))  # SDTM issues name the folder they were read from
    assert all(ln.startswith(folder_or_file) for ln in found), found
    assert re.match(r"[1-9]\d* error\(s\)", result.stderr), result.stderr


def test_validate_subprocess_on_the_seed_output_and_a_corrupted_copy(seed_out: Path, corrupt: Path) -> None:
    clean = casebridge("validate", seed_out)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    _truncate(corrupt / BUNDLE)
    broken = casebridge("validate", corrupt)
    assert broken.returncode == 1
    assert error_lines(broken.stdout)[0].startswith(f"{corrupt / BUNDLE}: error: not readable JSON"), broken.stdout
    assert "Traceback" not in broken.stderr


def test_validate_missing_path(tmp_path: Path) -> None:
    result = invoke("validate", tmp_path / "nothing-here")
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{tmp_path / 'nothing-here'}: error: no such file or folder")


@pytest.fixture(scope="module")
def ndjson_out(tmp_path_factory: pytest.TempPathFactory, mini: Path) -> Path:
    out = tmp_path_factory.mktemp("ndjson") / "out"
    result = invoke("convert", SEED, A_GOOD, "--out", out, "--mappings", mini, "--fhir-ndjson", "-q")
    assert result.exit_code == 0, result.output
    return out


def test_validate_the_fhir_ndjson_that_convert_wrote(ndjson_out: Path) -> None:
    """Bulk-data NDJSON: AdverseEvent.ndjson refers to patients in Patient.ndjson; convert's own output validates."""
    for path in (ndjson_out, ndjson_out / "fhir" / "ndjson"):
        result = invoke("validate", path)
        assert result.exit_code == 0, f"validate {path}:\n{result.output}"


def test_validate_ndjson_errors_name_the_file_and_line(ndjson_out: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(ndjson_out, copy)
    patients = copy / "fhir" / "ndjson" / "Patient.ndjson"
    lines = patients.read_bytes().splitlines()
    patients.write_bytes(lines[0] + b"\n" + lines[1][:40] + b"\n")
    result = invoke("validate", copy)
    assert result.exit_code == 1
    errors = error_lines(result.stdout)
    assert any(ln.startswith(f"{patients}:2: error: not JSON") for ln in errors), errors
    assert all(".ndjson" in ln or ".json" in ln or "/sdtm" in ln for ln in errors), \
        f"errors that do not name their file: {[ln for ln in errors if '.ndjson' not in ln]}"


# --- explain ------------------------------------------------------------------------------------------------------

def _line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


def test_explain_where_a_grade_lands(mini: Path, tmp_path: Path) -> None:
    result = invoke("explain", A_GOOD, "adverse_events[0].grade", "--mappings", mini)
    assert result.exit_code == 0, result.output
    fhir_line = _line_of(mini / "fhir" / "adverse-event.yaml", "severity:")
    sdtm_line = _line_of(mini / "sdtm" / "ae.yaml", "AETOXGR:")
    lines = result.stdout.splitlines()
    assert len(lines) == 2, lines
    fhir = re.fullmatch(r"adverse_events\[0\]\.grade -> FHIR AdverseEvent/([0-9a-f-]{36}) AdverseEvent\.severity\.text"
                        rf"  \(fhir/adverse-event\.yaml:{fhir_line}, rule mini-ae\)", lines[0])
    assert fhir, lines[0]
    sdtm = re.fullmatch(r"adverse_events\[0\]\.grade -> SDTM AE\.AETOXGR \[USUBJID=CASEBRIDGE-batch-a, AESEQ=(\d+)\]"
                        rf"  \(sdtm/ae\.yaml:{sdtm_line}, rule mini-ae-row\)", lines[1])
    assert sdtm, lines[1]

    # ... and that is where convert puts it
    out = tmp_path / "out"
    assert invoke("convert", A_GOOD, "--out", out, "--mappings", mini, "-q").exit_code == 0
    bundle = orjson.loads((out / "fhir" / "batch-a.bundle.json").read_bytes())
    resource = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == fhir.group(1))
    assert resource["resourceType"] == "AdverseEvent" and resource["severity"]["text"] == "CTCAE grade 2"
    ae = read_xpt(out / "sdtm" / "ae.xpt")
    row = ae["AESEQ"].index(float(sdtm.group(1)))
    assert ae["AETOXGR"][row] == "2" and ae["AETERM"][row] == "nausea"

    dotted = invoke("explain", A_GOOD, "adverse_events.0.grade", "--mappings", mini)
    assert dotted.exit_code == 0 and dotted.stdout == result.stdout


def test_explain_subprocess(mini: Path) -> None:
    proc = casebridge("explain", A_GOOD.relative_to(ROOT), "adverse_events[1].term", "--mappings", mini)
    assert proc.returncode == 0, proc.stderr
    assert "adverse_events[1].term -> FHIR AdverseEvent/" in proc.stdout
    assert "adverse_events[1].term -> SDTM AE.AETERM [USUBJID=CASEBRIDGE-batch-a" in proc.stdout
    assert f"(sdtm/ae.yaml:{_line_of(mini / 'sdtm' / 'ae.yaml', 'AETERM:')}, rule mini-ae-row)" in proc.stdout


def test_explain_a_field_no_rule_reads(mini: Path) -> None:
    result = invoke("explain", A_GOOD, "source.title", "--mappings", mini)
    assert result.exit_code == 1
    assert result.stdout.strip() == "source.title: no mapping rule reads this field (it is reported as unmapped)"


def test_explain_a_bad_case_is_one_located_line(mini: Path) -> None:
    result = invoke("explain", CASES / "d-bad-schema.yaml", "adverse_events[0].grade", "--mappings", mini)
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [
        f"{CASES / 'd-bad-schema.yaml'}:8:5: error: adverse_events[0].grade: 7 is greater than the maximum of 5 "
        "[case.schema]"]


def test_explain_the_seed_grade_with_the_shipped_mappings() -> None:
    """The README's example: the seed's first adverse-event grade, in FHIR and in SDTM AE.AETOXGR."""
    proc = casebridge("explain", SEED.relative_to(ROOT), "adverse_events[0].grade")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(re.match(r"adverse_events\[0\]\.grade -> FHIR AdverseEvent/\S+ AdverseEvent\.\S+  "
                        r"\(fhir/[\w.-]+\.yaml:\d+, rule [\w-]+\)$", ln) for ln in lines), lines
    assert any(re.match(r"adverse_events\[0\]\.grade -> SDTM AE\.AETOXGR \[USUBJID=CASEBRIDGE-lcnec-cadonilimab-"
                        r"anlotinib, AESEQ=\d+\]  \(sdtm/[\w.-]+\.yaml:\d+, rule [\w-]+\)$", ln) for ln in lines), lines


# --- mappings lint / test / doc -----------------------------------------------------------------------------------

def test_mappings_lint_clean(mini: Path) -> None:
    result = invoke("mappings", "lint", mini)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr.strip() == "0 problem(s)"
    proc = casebridge("mappings", "lint", mini)
    assert proc.returncode == 0 and proc.stderr.strip() == "0 problem(s)"


def test_mappings_lint_reports_every_problem_located(mini: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(mini, broken)
    ae = broken / "sdtm" / "ae.yaml"
    ae.write_text(ae.read_text().replace("AEDECOD: {$value: term}", "AEDECODE: {$value: term}"))
    dm = broken / "sdtm" / "dm.yaml"
    dm.write_text(dm.read_text().replace("codelist: SEX}", "codelist: SEXX}"))
    result = invoke("mappings", "lint", broken)
    assert result.exit_code == 1
    line_ae, line_dm = _line_of(ae, "AEDECODE:"), _line_of(dm, "codelist: SEXX")
    assert re.search(rf"^sdtm/ae\.yaml:{line_ae}:\d+: error: AEDECODE is not a variable of AE .*\[mapping\.lint\]$",
                     result.stdout, re.M), result.stdout
    assert re.search(rf"^sdtm/dm\.yaml:{line_dm}:\d+: error: unknown CDISC codelist 'SEXX'", result.stdout, re.M), \
        result.stdout
    assert result.stderr.strip() == "2 problem(s)"


def test_mappings_test(mini: Path, tmp_path: Path) -> None:
    result = invoke("mappings", "test", mini)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "4 passed, 0 failed"

    wrong = tmp_path / "wrong"
    shutil.copytree(mini, wrong)
    ae = wrong / "sdtm" / "ae.yaml"
    ae.write_text(ae.read_text().replace('AETOXGR: "2"', 'AETOXGR: "3"'))
    failed = invoke("mappings", "test", wrong)
    assert failed.exit_code == 1
    assert re.search(r"^FAIL sdtm/ae\.yaml:\d+ a grade-2 event$", failed.stdout, re.M), failed.stdout
    assert "AETOXGR" in failed.stdout and "3 passed, 1 failed" in failed.stdout
    proc = casebridge("mappings", "test", wrong)
    assert proc.returncode == 1 and proc.stdout == failed.stdout


def test_mappings_doc(mini: Path, tmp_path: Path) -> None:
    out = tmp_path / "spec"
    result = invoke("mappings", "doc", mini, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(out / "mapping-spec.md"), str(out / "mapping-spec.html")]
    markdown = (out / "mapping-spec.md").read_text(encoding="utf-8")
    for rule in ("mini-patient", "mini-ae", "mini-dm", "mini-ae-row"):
        assert rule in markdown
    assert (out / "mapping-spec.html").read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    again = casebridge("mappings", "doc", mini, "--out", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "mapping-spec.md").read_bytes() == (out / "mapping-spec.md").read_bytes()


def test_mappings_lint_and_test_shipped_mappings() -> None:
    lint = casebridge("mappings", "lint")
    assert lint.returncode == 0, lint.stdout
    tested = casebridge("mappings", "test")
    assert tested.returncode == 0, tested.stdout
    assert re.search(r"^[1-9]\d* passed, 0 failed$", tested.stdout, re.M)


# --- check --------------------------------------------------------------------------------------------------------

def test_check_the_batch_folder_subprocess() -> None:
    """check finds what a case report alone shows; a duplicate case_id or an SDTM failure needs convert."""
    proc = casebridge("check", CASES.relative_to(ROOT))
    assert proc.returncode == 1
    assert proc.stderr.strip() == "7 valid, 4 invalid"
    assert "tests/data/batch/cases/d-bad-schema.yaml:8:5: error: adverse_events[0].grade: 7 is greater than the " \
           "maximum of 5 [case.schema]" in proc.stdout.splitlines()
    assert "Traceback" not in proc.stdout + proc.stderr


def test_check_all_good_exit_0(mini: Path) -> None:
    result = invoke("check", A_GOOD, CASES / "b-good.json", CASES / "nested")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr.strip() == "3 valid, 0 invalid"


def test_the_batch_readme_describes_every_input() -> None:
    readme = (BATCH / "README.md").read_text(encoding="utf-8")
    for path in sorted(p for p in (BATCH / "cases").rglob("*") if p.is_file()):
        assert f"`{path.relative_to(BATCH).as_posix()}`" in readme, path
    assert "`extra/non-ascii-term.yaml`" in readme
