"""Mapping files are parsed by libyaml (ruamel's C parser) into exactly what ruamel's pure loader gives."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path
from typing import Any

import pytest

from converter.mapping import rules
from converter.mapping.rules import LoadProblem, read_mapping_doc

ROOT = Path(__file__).resolve().parent.parent

# Documents where the two parsers could part ways: every scalar style and type, anchors and merge keys,
# flow collections, tags, Unicode before a node on its line, CRLF, a BOM, empty documents.
SNIPPETS = [
    "",
    "# only a comment\n",
    "a: 1\n",
    "a: 1\r\nb:\r\n  - x\r\n  - {y: 2, z: [3, 4]}\r\n",
    "\ufeffa: 1\nb: 2\n",
    "- 1\n- 1.5\n- 1e3\n- .inf\n- -.Inf\n- .nan\n- 0x1F\n- 0o17\n- 017\n- 1_000\n- +12\n- 1:20\n",
    "- yes\n- no\n- on\n- off\n- true\n- False\n- ~\n- null\n- Null\n-\n- ''\n- \"\"\n",
    "d: 2021-03-04\nt: 2021-03-04T10:20:30Z\ns: '2021-03-04'\n",
    "k: |\n  line 1\n   line 2\n\nf: >-\n  folded\n  text\n\nq: 'it''s'\nd: \"tab\\there \\u00e9\"\n",
    "base: &b {x: 1, y: [1, 2]}\nuse: *b\nmerged:\n  <<: *b\n  z: 3\nmany:\n  <<: [*b, {w: 4}]\n",
    "s: &s text\nt: *s\nn: &n 12\nm: *n\nl: &l [1, &i {a: 1}]\nk: [*l, *i]\n&r root: 1\n",
    "inline: {<<: {a: 1}, b: 2}\n",
    "<<\n",
    "=\n",
    "a: \nb:\n  # only a comment\nc: [ , ]\n? \n",
    "a: 1\tb\n",
    "a: x\u2028y\n",
    "k: >#c\n  t\n",
    "tagged: !custom {a: 1}\nstr: !!str 12\nint: !!int '7'\nseq: !list [1]\n",
    "ünïcödé: välue\n\"café ☕\": {nested: 😀 x, after: y}\nk: [é, ü, {ö: 1}]\n",
    "? complex key\n: value\n? [a, b]\n: list key\n1: int key\nnull: null key\n",
    "rules:\n  - id: r1\n    for_each: adverse_events\n    when: {path: grade, in: [3, 4, 5]}\n    row:\n      AETERM: {$text: term}\n",
    "a:\n  b:\n    c:\n      - d: 1\n        e: [f, {g: h}]\n      -   - nested\n          - seq\n",
    "plain: text with # not a comment\nurl: http://x.org/a#b\ncolon: a:b\ndash: - x\n",
    "multi: this is\n  continued on\n  several lines\nend: 1\n",
    "---\na: 1\n...\n",
    "%YAML 1.1\n---\n- yes\n- 017\n",
    "%YAML 1.2\n---\n- yes\n",
    "%TAG !e! tag:example.com,2000:\n---\n- !e!foo bar\n",
    # errors: the pure loader's message and position must be the ones reported
    "a: 1\na: 2\n",
    "a: [1, 2\nb: 3\n",
    "a: b: c\n",
    "- a\nb: 1\n",
    "a:\n\t- tab\n",
    "a: *missing\n",
    "a: 1\n---\nb: 2\n",
    "key: 'unterminated\n",
    "a: @reserved\n",
    "{a: 1}}\n",
]


def _anchor(value: Any) -> Any:
    anchor = value.yaml_anchor() if hasattr(value, "yaml_anchor") else getattr(value, "anchor", None)
    return getattr(anchor, "value", anchor)


def _same(a: Any, b: Any, where: str = "", pairs: dict[int, Any] | None = None) -> None:
    """Assert two loaded documents are the same: types, values, order, anchors, shared (aliased) objects and
    every line/column."""
    pairs = {} if pairs is None else pairs
    if isinstance(a, (dict, list)):
        if id(a) in pairs:  # an alias: the same object on both sides
            assert pairs[id(a)] is b, where
            return
        pairs[id(a)] = b
    assert type(a) is type(b), (where, type(a), type(b))
    assert _anchor(a) == _anchor(b), where
    la, lb = getattr(a, "lc", None), getattr(b, "lc", None)
    assert (la is None) == (lb is None), where
    if la is not None:
        assert (la.line, la.col, la.data) == (lb.line, lb.col, lb.data), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}", pairs)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]", pairs)
    else:
        assert repr(a) == repr(b), where
        assert a == b or a != a or type(a).__eq__ is object.__eq__, where  # NaN; TaggedScalar has no ==
        assert getattr(a, "tag", None) == getattr(b, "tag", None), where


def _pure(text: str) -> tuple[Any, str | None]:
    try:
        return rules._yaml().load(text), None
    except Exception as exc:  # noqa: BLE001 - the error is what is compared
        return None, f"{type(exc).__name__}: {exc}"


def _read(tmp_path: Path, text: str) -> tuple[Any, list[LoadProblem]]:
    path = tmp_path / "m.yaml"
    path.write_bytes(text.encode("utf-8"))
    problems: list[LoadProblem] = []
    return read_mapping_doc(path, "fhir/m.yaml", problems), problems


def _yaml_files() -> list[Path]:
    return sorted([*ROOT.glob("mappings/**/*.yaml"), *ROOT.glob("samples/*.yaml"), *ROOT.glob("tests/data/**/*.yaml")])


@pytest.mark.parametrize("text", SNIPPETS)
def test_c_parse_equals_the_pure_loader(tmp_path: Path, text: str) -> None:
    doc, problems = _read(tmp_path, text)
    expected, error = _pure(text)
    if error is None:
        assert problems == []
        _same(expected, doc)
    else:
        assert doc is None and len(problems) == 1
        exc = pytest.raises(Exception, rules._yaml().load, text).value
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        assert (problems[0].line, problems[0].col) == ((mark.line + 1, mark.column + 1) if mark else (0, 0))
        assert problems[0].message.startswith("YAML syntax error: ") or problems[0].message.startswith("cannot read: ")


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_of_the_project_parses_the_same(path: Path) -> None:
    text = path.read_bytes().decode("utf-8", errors="replace")
    expected, error = _pure(text)
    fast = rules._c_load(text)
    if error is None and fast is not rules._PURE:
        _same(expected, fast)
    else:
        assert fast is rules._PURE  # a document the pure loader rejects never comes out of the C path


@pytest.mark.skipif(rules.CParser is None, reason="ruamel.yaml.clib is not installed")
def test_shipped_mappings_take_the_c_path() -> None:
    for path in sorted(ROOT.glob("mappings/**/*.yaml")):
        assert rules._c_load(path.read_text(encoding="utf-8")) is not rules._PURE, path


def _edits(seed: int, count: int) -> list[str]:
    """Random small edits of pieces of the shipped mapping files: the odd documents a person may write."""
    rng = random.Random(seed)
    texts = [p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("mappings/*/*.yaml"))]
    inserts = ["\t", ":", " ", "-", "'", '"', "#", "{", "}", "[", "]", ",", "?", "\n", "|", ">", "&a ", "*a",
               "<<: ", "@", "`", "\\", "\r", "\ufeff", "\x85", "\u2028", "é", "0x", "1e", ".", "~", "=", "%"]
    out = []
    for _ in range(count):
        lines = rng.choice(texts).split("\n")
        start = rng.randrange(len(lines))
        text = "\n".join(lines[start:start + rng.randint(1, 40)])
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(text) + 1)
            op = rng.random()
            if op < 0.4:
                text = text[:i] + rng.choice(inserts) + text[i:]
            elif op < 0.7:
                text = text[:i] + text[i + rng.randint(1, 3):]
            else:
                j = rng.randrange(len(text) + 1)
                text = text[:i] + text[j:j + rng.randint(1, 8)] + text[i:]
        out.append(text)
    return out


@pytest.mark.skipif(rules.CParser is None, reason="ruamel.yaml.clib is not installed")
def test_random_edits_of_mapping_files_parse_the_same() -> None:
    taken = 0
    for text in _edits(seed=20261124, count=3000):
        fast = rules._c_load(text)
        if fast is rules._PURE:
            continue
        taken += 1
        expected, error = _pure(text)
        assert error is None, (text, error)  # the C path never accepts what the pure loader rejects
        _same(expected, fast)
    assert taken > 200  # the C path is exercised, not only the fallback


def test_directives_and_failures_take_the_pure_path() -> None:
    assert rules._c_load("%YAML 1.1\n---\n- yes\n") is rules._PURE
    assert rules._c_load("a: 1\na: 2\n") is rules._PURE  # duplicate key: reported by the pure loader
    assert rules._c_load("a: [1\n") is rules._PURE


def test_pure_loader_is_used_without_the_c_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "CParser", None)
    text = textwrap.dedent("""\
        target: fhir
        rules:
          - {id: a, x: 1.5}
        """)
    doc, problems = _read(tmp_path, text)
    assert problems == [] and rules._c_load(text) is rules._PURE
    _same(rules._yaml().load(text), doc)
    assert rules.pos(doc["rules"][0], "x") == (3, 13)


def test_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(b"a: \xff\n")
    problems: list[LoadProblem] = []
    assert read_mapping_doc(path, "fhir/m.yaml", problems) is None
    assert len(problems) == 1 and problems[0].message.startswith("cannot read: ")
