"""Bad case-report inputs: each gives one clear, located issue with a stable rule id, and never a traceback.

The table below drives three views of the same input: the Python API (``converter.api.check`` and
``load_case``), the CLI in-process (click's CliRunner) and, once for the whole folder, the CLI as a real
``python -m converter check`` subprocess. Files live in tests/data/bad/ so a data manager can run
``casebridge check tests/data/bad/<file>`` and see the same message.

Expected locations are ``line:col`` (1-based). The column is asserted where CaseBridge computes it (schema and
semantic issues); for syntax errors only the line is asserted, because the column comes from the parser library.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from converter import api
from converter.case.loader import load_case, load_record, read_records
from converter.cli import cli
from converter.errors import CaseError

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "data" / "bad"
SEED = ROOT / "samples" / "lcnec-cadonilimab-anlotinib.yaml"


@dataclass(frozen=True)
class Bad:
    """One bad input and what CaseBridge must say about it."""

    file: str
    rule: str
    where: tuple[str | None, ...]  # per issue: "line:col", "line:" (line only) or None (no position: file-level)
    says: str                       # a fragment every message of this input contains

    @property
    def path(self) -> Path:
        return BAD / self.file

    def __str__(self) -> str:  # pytest ids
        return self.file


CASES = [
    # syntax
    Bad("yaml-syntax.yaml", "case.syntax", ("6:",), "YAML syntax error"),
    Bad("json-syntax.json", "case.syntax", ("4:",), "JSON syntax error"),
    Bad("duplicate-key.yaml", "case.syntax", ("6:",), 'duplicate key "sex"'),
    Bad("unsafe-tag.yaml", "case.syntax", ("1:",), "only plain YAML is accepted"),
    # not a case document at all
    Bad("empty.yaml", "case.read", ("1:1",), "empty document"),
    Bad("whitespace.yaml", "case.read", ("1:1",), "empty document"),
    Bad("binary.yaml", "case.read", (None,), "not a text file"),
    Bad("latin-1.yaml", "case.read", (None,), "not UTF-8"),
    Bad("does-not-exist.yaml", "case.read", (None,), "cannot read file"),
    Bad("document-list.yaml", "case.type", ("1:1",), "expected a mapping"),
    Bad("document-scalar.yaml", "case.type", ("1:1",), "expected a mapping"),
    # schema
    Bad("wrong-types.yaml", "case.schema", ("4:3", "7:9"), "is not of type"),
    Bad("wrong-types.json", "case.schema", ("2:3",), 'case_id: 42 is not of type "string"'),
    Bad("no-patient.yaml", "case.schema", ("1:1",), '"patient" is a required property'),
    Bad("no-source.yaml", "case.schema", ("1:1",), '"source" is a required property'),
    Bad("grade-7.yaml", "case.schema", ("9:5",), "adverse_events[0].grade: 7 is greater than the maximum of 5"),
    Bad("vaf-120.yaml", "case.schema", ("11:15",), "variants[0].vaf.value: 120 is greater than the maximum of 100"),
    Bad("negative-dose.yaml", "case.schema", ("11:16",), "dose.value: -75 is less than or equal to the minimum of 0"),
    # semantic
    Bad("dangling-ae-agent.yaml", "case.reference", ("13:38",), "suspected_agents[1]: refers to 'l1-etoposide'"),
    Bad("dangling-response-line.yaml", "case.reference", ("12:5",), "response_assessments[0].line: refers to 'line-2'"),
    Bad("dangling-anchor.yaml", "case.reference", ("9:44",), "procedures[0].date.anchor: refers to 'dx-missing'"),
    Bad("duplicate-ids.yaml", "case.id.duplicate", ("9:5",), "id 'pr-1' is already used at procedures[0]"),
    Bad("date-month-13.yaml", "case.date", ("9:5",), "'2021-13' has month 13"),
    Bad("date-feb-30.yaml", "case.date", ("9:5",), "'2021-02-30' is not a real calendar date"),
    Bad("end-before-start.yaml", "case.period", ("9:5",), "therapy_lines[0].end: ends (2021-04) before it starts"),
    Bad("tps-150.yaml", "case.range", ("9:28",), "TPS 150 is outside 0-100"),
]


def _assert_located(issues, case: Bad, source: str) -> None:
    """Every issue of ``case`` has its rule, its message fragment and its exact position."""
    assert issues, f"{case.file}: no issue reported"
    # The same issue may be reported twice (see test_date_issue_reported_once); compare distinct ones.
    distinct = sorted(set(issues), key=lambda i: i.location)
    assert {i.rule for i in distinct} == {case.rule}, [str(i) for i in distinct]
    assert all(i.severity == "error" for i in distinct)
    assert all(case.says in i.message for i in distinct), [i.message for i in distinct]
    got = []
    for issue in distinct:
        if issue.location == source:
            got.append(None)
            continue
        assert issue.location.startswith(source + ":"), issue.location
        line, col = issue.location[len(source) + 1:].split(":")
        assert col.isdigit() and int(col) >= 1, issue.location
        got.append((line, col))
    expected = []
    for where in case.where:
        expected.append(None if where is None else tuple(where.split(":")))
    assert len(got) == len(expected), [str(i) for i in distinct]
    for g, e in zip(got, expected):
        if e is None or g is None:
            assert g == e, (g, e)
        else:
            assert g[0] == e[0], f"line {g[0]}, expected {e[0]}"
            if e[1]:
                assert g[1] == e[1], f"column {g[1]}, expected {e[1]}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_api_check_reports_located_issue(case: Bad) -> None:
    results = api.check([str(case.path)])
    assert len(results) == 1
    (result,) = results
    assert not result.ok and result.case is None
    _assert_located(result.issues, case, str(case.path))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_load_case_raises_case_error(case: Bad) -> None:
    with pytest.raises(CaseError) as info:
        load_case(case.path)
    _assert_located(info.value.issues, case, str(case.path))
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_cli_check_fails_cleanly(case: Bad) -> None:
    result = CliRunner().invoke(cli, ["check", str(case.path)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    assert f"[{case.rule}]" in result.stdout
    assert case.says in result.stdout
    first = case.where[0]
    located = str(case.path) + (f":{first}" if first else ": error:")
    assert located in result.stdout, result.stdout
    assert "0 valid, 1 invalid" in result.stderr


def test_every_bad_file_is_in_the_table() -> None:
    listed = {c.file for c in CASES} | {"one-bad-line.ndjson"}
    present = {p.name for p in BAD.iterdir()}
    assert present <= listed, f"bad inputs without an expectation: {sorted(present - listed)}"
    missing = {c.file for c in CASES if not c.path.exists()} - {"does-not-exist.yaml"}
    assert not missing


def test_unsafe_tag_is_not_constructed() -> None:
    """The python/object tag is rejected by the safe loader, never resolved (no os.system call)."""
    results = api.check([str(BAD / "unsafe-tag.yaml")])
    assert "python/object/apply:os.system" in results[0].issues[0].message


# --- NDJSON: one bad line among good ones -------------------------------------------------------------------------

def test_ndjson_bad_line_does_not_stop_the_good_ones() -> None:
    path = BAD / "one-bad-line.ndjson"
    results = api.check([str(path)])
    assert [r.source for r in results] == [f"{path}#{n}" for n in (1, 2, 3, 4)]
    assert [r.ok for r in results] == [True, True, False, True]
    assert [r.case.case_id for r in results if r.ok] == ["ndjson-a", "ndjson-b", "ndjson-d"]
    (issue,) = results[2].issues
    assert issue.rule == "case.syntax"
    assert issue.location.startswith(f"{path}#3:3:"), issue.location  # the file's line 3
    assert "JSON syntax error" in issue.message


def test_ndjson_schema_issue_is_located_on_its_own_line(tmp_path: Path) -> None:
    good = {"case_id": "a", "source": {"title": "T"}, "patient": {"sex": "male"}}
    bad = {"case_id": "b", "source": {"title": "T"}, "patient": {"sex": "male", "age": {"value": 200}}}
    path = tmp_path / "cases.ndjson"
    path.write_bytes(b"\n".join([orjson.dumps(good), b"", orjson.dumps(bad)]) + b"\n")
    results = api.check([str(path)])
    assert [r.ok for r in results] == [True, False]
    (issue,) = results[1].issues
    assert issue.rule == "case.schema"
    assert issue.location.startswith(f"{path}#3:3:"), issue.location
    assert "patient.age.value: 200 is greater than the maximum of 130" in issue.message


def test_ndjson_via_cli_exit_1_but_counts_good_records() -> None:
    result = CliRunner().invoke(cli, ["check", str(BAD / "one-bad-line.ndjson")])
    assert result.exit_code == 1
    assert "3 valid, 1 invalid" in result.stderr
    assert "Traceback" not in result.output


# --- the real command line ----------------------------------------------------------------------------------------

def test_subprocess_check_of_the_bad_folder() -> None:
    """``python -m converter check tests/data/bad`` as a user runs it: exit 1, one line per issue, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "converter", "check", "tests/data/bad"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both and "internal error" not in both
    for case in CASES:
        if case.path.exists():
            assert f"tests/data/bad/{case.file}" in proc.stdout, case.file
            assert f"[{case.rule}]" in proc.stdout
    files = [p for p in BAD.iterdir() if p.suffix in {".yaml", ".json", ".ndjson"}]
    invalid = len(files)  # every file is invalid; the NDJSON file has one bad record
    assert f"3 valid, {invalid} invalid" in proc.stderr, proc.stderr


def test_subprocess_located_message_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "converter", "check", "tests/data/bad/grade-7.yaml"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "tests/data/bad/grade-7.yaml:9:5: error: adverse_events[0].grade: 7 is greater than the maximum of 5 "
        "[case.schema]"
    ]
    assert proc.stderr.strip() == "0 valid, 1 invalid"


# --- JSON and stdin give the same case as YAML --------------------------------------------------------------------

def test_json_equivalent_of_the_seed_loads_to_the_same_data(tmp_path: Path) -> None:
    seed = load_case(SEED)
    as_json = tmp_path / "seed.json"
    as_json.write_bytes(orjson.dumps(seed.data, option=orjson.OPT_INDENT_2))
    again = load_case(as_json)
    assert again.data == seed.data
    assert again.ids == seed.ids
    assert again.source == str(as_json)
    # dates stayed the strings the report printed (no datetime objects sneaked in through YAML)
    assert seed.data["outcome"]["date"] == "2023-03"


def test_ndjson_of_the_seed_loads_to_the_same_data(tmp_path: Path) -> None:
    seed = load_case(SEED)
    path = tmp_path / "seed.ndjson"
    path.write_bytes(orjson.dumps(seed.data) + b"\n" + orjson.dumps({**seed.data, "case_id": "copy"}) + b"\n")
    results = api.check([str(path)])
    assert [r.ok for r in results] == [True, True]
    assert results[0].case.data == seed.data
    assert results[1].case.case_id == "copy"


def test_stdin_yaml_via_cli() -> None:
    result = CliRunner().invoke(cli, ["check", "-"], input=SEED.read_bytes())
    assert result.exit_code == 0, result.output
    assert "1 valid, 0 invalid" in result.stderr


def test_stdin_json_via_api() -> None:
    seed = load_case(SEED)
    (record,) = read_records("-", stdin=io.BytesIO(orjson.dumps(seed.data, option=orjson.OPT_INDENT_2)))
    assert record.source == "<stdin>" and record.fmt == "json"
    assert load_record(record).data == seed.data


def test_stdin_bad_input_is_located_on_stdin() -> None:
    text = "case_id: from-stdin\nsource: {title: T}\npatient: {sex: female}\nadverse_events:\n  - id: ae-1\n" \
           "    term: nausea\n    grade: 7\n"
    result = CliRunner().invoke(cli, ["check", "-"], input=text)
    assert result.exit_code == 1
    assert result.stdout.startswith("<stdin>:7:5: error: adverse_events[0].grade: 7 is greater than the maximum of 5")
    assert "Traceback" not in result.output


def test_stdin_ndjson_via_cli() -> None:
    good = b'{"case_id": "a", "source": {"title": "T"}, "patient": {"sex": "male"}}'
    result = CliRunner().invoke(cli, ["check", "-"], input=good + b"\n{\"case_id\": \"b\"}\n")
    assert result.exit_code == 1
    assert "<stdin>#2:2:1: error: (document): \"source\" is a required property" in result.stdout
    assert "1 valid, 1 invalid" in result.stderr


def test_stdin_empty() -> None:
    result = CliRunner().invoke(cli, ["check", "-"], input=b"")
    assert result.exit_code == 1
    assert "<stdin>:1:1: error: empty document" in result.stdout


def test_cli_usage_error_exits_2() -> None:
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# --- regressions: defects found and fixed ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["date-month-13.yaml", "date-feb-30.yaml"])
def test_date_issue_reported_once(name: str) -> None:
    (result,) = api.check([str(BAD / name)])
    assert len(result.issues) == 1, [str(i) for i in result.issues]


def test_json_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"case_id": "a", "case_id": "b", "source": {"title": "T"}, "patient": {"sex": "male"}}')
    (result,) = api.check([str(path)])
    assert not result.ok


def test_stdin_yaml_flow_mapping() -> None:
    text = b"{case_id: flow, source: {title: T}, patient: {sex: female}}\n"
    (record,) = read_records("-", stdin=io.BytesIO(text))
    assert load_record(record).case_id == "flow"


def test_comment_only_file_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "comment.yaml"
    path.write_text("# nothing transcribed yet\n")
    (result,) = api.check([str(path)])
    assert "nothing" not in result.issues[0].message
    assert "empty document" in result.issues[0].message


def test_a_reference_to_the_wrong_kind_of_entity_is_located(tmp_path: Path) -> None:
    path = tmp_path / "kind.yaml"
    path.write_text("case_id: k\nsource: {title: t}\npatient: {sex: male}\n"
                    "procedures: [{id: p1, procedure: biopsy}]\n"
                    "therapy_lines: [{id: l1, agents: [{id: a1, drug: x}]}]\n"
                    "adverse_events:\n  - {id: e1, term: x, suspected_agents: [p1]}\n")
    (result,) = api.check([str(path)])
    assert not result.ok
    (issue,) = result.issues
    assert issue.rule == "case.reference.kind" and issue.location == f"{path}:7:42"
    assert "therapy_lines[].agents[]" in issue.message


def test_a_reversed_reference_range_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "range.yaml"
    path.write_text("case_id: r\nsource: {title: t}\npatient: {sex: male}\n"
                    "labs:\n  - {id: l1, test: CEA, reference_range: {low: 30, high: 10, unit: ng/mL}}\n")
    (result,) = api.check([str(path)])
    assert [(i.rule, i.location) for i in result.issues] == [("case.range", f"{path}:5:25")]


# --- the compact-JSON fast read (loader._compact_json) ---------------------------------------------------------

def _seed_doc() -> dict:
    (record,) = read_records(SEED)
    return load_record(record).data


@pytest.mark.parametrize("option", [None, orjson.OPT_INDENT_2])
def test_compact_and_other_json_read_as_the_checking_parser_does(option: int | None) -> None:
    import json

    from converter.case.loader import Record, _compact_json, _NOT_COMPACT, parse_record

    text = orjson.dumps(_seed_doc(), option=option).decode()
    doc = parse_record(Record("seed.json", text, "json"))
    assert doc == json.loads(text) and orjson.dumps(doc) == orjson.dumps(json.loads(text))
    assert (_compact_json(text) is _NOT_COMPACT) == (option is not None)


@pytest.mark.parametrize("text", [
    '{"case_id":"a","case_id":"b"}',                      # compact, but a key repeats: orjson would keep one
    '{"case_id":"a","patient":{"sex":"male","sex":"female"}}',
    '{"case_id":"a","n":1.0}',                            # orjson writes 1.0 back, but checks every other text
    '{"case_id":"a","n":NaN}',                            # not JSON for orjson, read by the checking parser
    '{"case_id":"a","n":123456789012345678901234567890}',  # beyond 64 bits
])
def test_only_exact_compact_json_takes_the_fast_read(text: str) -> None:
    import json

    from converter.case.loader import Record, _compact_json, _NOT_COMPACT, parse_record

    record = Record("x.ndjson#1", text, "json")
    if '"case_id":"a","case_id"' in text or '"sex":"male","sex"' in text:
        assert _compact_json(text) is _NOT_COMPACT
        with pytest.raises(CaseError, match="duplicate key"):
            parse_record(record)
        return
    doc = parse_record(record)
    expected = json.loads(text)
    assert repr(doc) == repr(expected)  # NaN != NaN: compare the text of the values
    if _compact_json(text) is not _NOT_COMPACT:
        assert orjson.dumps(_compact_json(text)).decode() == text


def test_unquoted_years_read_as_dates_only_at_date_fields(tmp_path: Path) -> None:
    """``date: 2022`` (a YAML integer) becomes the date "2022" at date fields, in lists and relative dates too;
    an integer elsewhere stays a number."""
    text = """\
case_id: years
source: {title: Bare years}
patient: {sex: female, age: {value: AGE, unit: years, at: diagnosis}}
diagnoses:
  - id: dx-1
    name: serous carcinoma of the ovary
    date: 2022
    metastases:
      - {id: met-1, site: liver, date: {text: the same year, date: 2023}}
"""
    path = tmp_path / "years.yaml"
    path.write_text(text.replace("AGE", "71"), encoding="utf-8")
    data = load_case(path).data
    diagnosis = data["diagnoses"][0]
    assert diagnosis["date"] == "2022"
    assert diagnosis["metastases"][0]["date"]["date"] == "2023"
    assert data["patient"]["age"]["value"] == 71
    path.write_text(text.replace("AGE", "1999"), encoding="utf-8")
    with pytest.raises(CaseError) as err:
        load_case(path)
    assert [i.message for i in err.value.issues] == ["patient.age.value: 1999 is greater than the maximum of 130"]
