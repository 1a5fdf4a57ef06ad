"""The disk cache of generated code: same code as compiling, and never a reason for a run to fail."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from converter.mapping import codecache
from converter.mapping.codecache import cache_folder, compile_cached
from converter.mapping.engine import MappingSet

SOURCE = "def f(x):\n    return x * 2 + 1\n"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache under tmp_path, and a count of real compilations."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CASEBRIDGE_NO_CACHE", raising=False)
    monkeypatch.setattr(codecache, "_pruned", set())
    return tmp_path / "cache"


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    done: list[str] = []

    def counting(text: str, filename: str, mode: str) -> Any:
        done.append(filename)
        return compile(text, filename, mode)

    monkeypatch.setattr(codecache, "compile", counting, raising=False)
    return done


def _run(code: Any) -> Any:
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - test source
    return namespace["f"](20)


def test_second_compile_comes_from_the_cache(cache: Path, compiles: list[str]) -> None:
    first = compile_cached(SOURCE, "<mapping x.yaml:1 rule r produce>")
    second = compile_cached(SOURCE, "<mapping x.yaml:1 rule r produce>")
    assert compiles == ["<mapping x.yaml:1 rule r produce>"]
    assert first == second and _run(second) == 41
    assert second.co_filename == "<mapping x.yaml:1 rule r produce>"  # tracebacks still name the mapping
    assert cache_folder() is not None and cache_folder().parent == cache / "casebridge" / "code"
    assert len(list(cache_folder().iterdir())) == 1


def test_another_text_or_file_name_is_another_entry(cache: Path, compiles: list[str]) -> None:
    compile_cached(SOURCE, "<a>")
    compile_cached(SOURCE.replace("2", "3"), "<a>")
    code = compile_cached(SOURCE, "<b>")
    assert compiles == ["<a>", "<a>", "<b>"] and code.co_filename == "<b>"


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "other-code"])
def test_a_damaged_entry_is_compiled_again_and_repaired(cache: Path, compiles: list[str], damage: str) -> None:
    compile_cached(SOURCE, "<a>")
    (entry,) = cache_folder().iterdir()
    data = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(data[:-7])
    elif damage == "flip":
        entry.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    elif damage == "garbage":
        entry.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        entry.write_bytes(b"")
    else:  # an intact entry of another file name stored under this key
        compile_cached(SOURCE, "<other>")
        other = next(p for p in cache_folder().iterdir() if p != entry)
        entry.write_bytes(other.read_bytes())
    assert _run(compile_cached(SOURCE, "<a>")) == 41
    assert compiles.count("<a>") == 2
    assert entry.read_bytes() == data  # rewritten
    assert _run(compile_cached(SOURCE, "<a>")) == 41 and compiles.count("<a>") == 2


def test_an_unwritable_cache_only_costs_compiling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  compiles: list[str]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir under a file fails, even for root
    assert _run(compile_cached(SOURCE, "<a>")) == 41
    assert _run(compile_cached(SOURCE, "<a>")) == 41
    assert compiles == ["<a>", "<a>"] and blocker.read_text() == "x"
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.rglob("*"))


def test_caching_can_be_turned_off(cache: Path, compiles: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEBRIDGE_NO_CACHE", "1")
    compile_cached(SOURCE, "<a>")
    compile_cached(SOURCE, "<a>")
    assert compiles == ["<a>", "<a>"] and not cache.exists()


def test_relative_xdg_cache_home_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_folder().parent == tmp_path / ".cache" / "casebridge" / "code"


def test_old_entries_are_pruned_when_one_is_written(cache: Path) -> None:
    compile_cached(SOURCE, "<old>")
    (old,) = cache_folder().iterdir()
    stale = time.time() - (codecache.MAX_AGE_DAYS + 1) * 86400
    os.utime(old, (stale, stale))
    codecache._pruned.clear()  # a new process: pruned when it first writes an entry
    new = compile_cached(SOURCE, "<new>")
    assert not old.exists() and len(list(cache_folder().iterdir())) == 1
    assert compile_cached(SOURCE, "<new>") == new


def test_mapping_set_from_the_cache_behaves_the_same(cache: Path, compiles: list[str]) -> None:
    cold = MappingSet.load()
    generated = len(compiles)
    warm = MappingSet.load()
    assert generated > 100 and len(compiles) == generated  # nothing compiled the second time
    assert [r.id for r in cold.rules] == [r.id for r in warm.rules]
    for a, b in zip(cold.rules, warm.rules):
        assert a.produce.__code__ == b.produce.__code__ and a.items.__code__ == b.items.__code__
