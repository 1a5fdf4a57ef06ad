"""Atomic file output and the reproducible creation timestamp."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from converter.errors import CaseBridgeError
from converter.write import atomic
from converter.write.atomic import reproducible_timestamp, write_bytes_atomic, write_files_atomic, write_text_atomic


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_creates_folders_and_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "ae.xpt"
    assert write_bytes_atomic(target, b"first") == target
    assert target.read_bytes() == b"first"
    write_text_atomic(target, "zweite Fassung\r\n")
    assert target.read_bytes() == "zweite Fassung\r\n".encode("utf-8")
    assert _leftovers(target.parent) == []


def test_new_file_gets_umask_permissions(tmp_path: Path) -> None:
    if os.name != "posix":
        pytest.skip("POSIX permissions only")
    umask = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "x.json", b"{}")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_failure_while_staging_keeps_old_targets_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_bytes(b"old one")
    two.write_bytes(b"old two")
    calls = {"n": 0}
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        write_files_atomic({one: b"new one", two: b"new two"})
    assert one.read_bytes() == b"old one"  # nothing is renamed until every file is staged
    assert two.read_bytes() == b"old two"
    assert _leftovers(tmp_path) == []


def test_failure_while_renaming_removes_remaining_temporaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    two.write_bytes(b"old two")
    real_replace = os.replace

    def failing_replace(src: Path, dst: Path) -> None:
        if Path(dst) == two:
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        write_files_atomic({one: b"new one", two: b"new two"})
    assert one.read_bytes() == b"new one"
    assert two.read_bytes() == b"old two"
    assert _leftovers(tmp_path) == []


def test_killed_process_never_leaves_a_half_written_target(tmp_path: Path, root: Path) -> None:
    """SIGKILL the writer after the new content is staged but before the rename: the old file survives whole."""
    if os.name != "posix":
        pytest.skip("needs SIGKILL")
    target = tmp_path / "lb.xpt"
    target.write_bytes(b"complete old content")
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from converter.write import atomic
        real = os.fsync
        def stall(fd):
            real(fd)
            print("staged", flush=True)
            time.sleep(60)
        atomic.os.fsync = stall
        atomic.write_bytes_atomic(Path({str(target)!r}), b"N" * 5_000_000)
    """)
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "staged"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert target.read_bytes() == b"complete old content"
    temps = _leftovers(tmp_path)
    assert len(temps) == 1 and temps[0].startswith(".lb.xpt.")
    assert (tmp_path / temps[0]).stat().st_size == 5_000_000


def test_timestamp_explicit_value_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    naive = datetime(2024, 5, 6, 7, 8, 9, 123456)
    assert reproducible_timestamp(naive) == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    aware = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    assert reproducible_timestamp(aware) == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def test_timestamp_from_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert reproducible_timestamp(None) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)


def test_timestamp_rejects_malformed_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(CaseBridgeError) as info:
        reproducible_timestamp(None)
    assert info.value.issues[0].rule == "env.source_date_epoch"


def test_timestamp_defaults_to_now_in_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    value = reproducible_timestamp(None)
    assert value.tzinfo == timezone.utc and value.microsecond == 0
    assert before <= value <= datetime.now(timezone.utc)
