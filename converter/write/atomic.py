"""Crash-safe file output and the one creation timestamp every output format stamps.

A target file is never opened for writing: the content goes to a temporary file in the same folder, is
flushed to disk (``fsync``) and then renamed over the target with ``os.replace``, which is atomic on POSIX
and Windows. A process killed at any moment leaves either the previous target or the new one, never a
half-written file (at worst an orphaned ``.<name>.<random>.tmp`` beside it).
"""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from converter.errors import CaseBridgeError
from converter.validate.issues import Issue

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def reproducible_timestamp(explicit: datetime | None = None) -> datetime:
    """The creation timestamp of this run, in UTC, to the second.

    ``explicit`` wins (a naive value is taken as UTC); otherwise ``SOURCE_DATE_EPOCH`` (seconds since
    1970-01-01 UTC, see reproducible-builds.org) when set; otherwise the current time. A malformed
    ``SOURCE_DATE_EPOCH`` raises :class:`CaseBridgeError` rather than being ignored.
    """
    if explicit is not None:
        value = explicit if explicit.tzinfo is not None else explicit.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).replace(microsecond=0)
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            return datetime.fromtimestamp(int(epoch), tz=timezone.utc)
        except (ValueError, OverflowError, OSError) as exc:
            raise CaseBridgeError(Issue(
                "error", "env.source_date_epoch",
                f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds since 1970-01-01 UTC ({exc})",
                "SOURCE_DATE_EPOCH")) from None
    return datetime.now(timezone.utc).replace(microsecond=0)


def _temporary(path: Path) -> Path:
    """A new name for a temporary file beside ``path``: ``.<name>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def temporaries(path: Path) -> list[Path]:
    """The temporary files beside ``path`` that were staged for it and are still there."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def _new_temporary(path: Path) -> tuple[Path, int]:
    """A new temporary file beside ``path``, open for writing: its path and file descriptor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temporary(path)
        try:
            return tmp, os.open(tmp, _OPEN_FLAGS, 0o666)  # the umask applies, as for an ordinary new file
        except FileExistsError:
            continue


def _stage(path: Path, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to a new temporary file beside ``path`` (fsynced when ``durable``); return its path."""
    tmp, fd = _new_temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _sync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX only; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StagedFiles:
    """Files staged one by one as their content is ready, then renamed into place together.

    Only the paths of the staged files are held, not their content, so many large files can be written
    with the guarantee of :func:`write_files_atomic` without keeping them all in memory.
    """

    def __init__(self, durable: bool = True):
        self.durable = durable
        self.staged: list[tuple[Path, Path]] = []  # (temporary file, target)

    def add(self, path: Path, data: bytes) -> None:
        """Stage ``data`` for ``path`` (fsynced when durable); nothing is replaced yet."""
        self.staged.append((_stage(path, data, self.durable), path))

    @contextmanager
    def writing(self, path: Path) -> Iterator[BinaryIO]:
        """Stage a file for ``path`` written piece by piece in the ``with`` block (fsynced at its end when durable)."""
        tmp, fd = _new_temporary(path)
        self.staged.append((tmp, path))  # removed by discard() whatever happens
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if self.durable:
                fh.flush()
                os.fsync(fh.fileno())

    def take(self, other: StagedFiles) -> None:
        """Make the files ``other`` staged ours (renamed by our :meth:`commit`, removed by our :meth:`discard`)."""
        self.staged.extend(other.staged)
        other.staged.clear()

    def discard(self) -> None:
        """Remove every staged file that was not renamed into place."""
        for tmp, _ in self.staged:
            tmp.unlink(missing_ok=True)
        self.staged.clear()

    def commit(self) -> list[Path]:
        """Rename every staged file over its target, in the order staged; return the targets."""
        targets = [path for _, path in self.staged]
        done = 0
        try:
            for tmp, path in self.staged:
                os.replace(tmp, path)
                done += 1
        finally:
            del self.staged[:done]
            self.discard()
        if self.durable:
            for folder in sorted({p.parent for p in targets}):
                _sync_dir(folder)
        return targets


def write_files_atomic(files: Mapping[Path, bytes], durable: bool = True) -> list[Path]:
    """Write several files, each atomically; return their paths in the given order.

    Every file is staged and fsynced before the first rename, so a failure while writing (disk full,
    permission denied…) replaces nothing and removes its temporary files. Renames then happen one by one:
    each target is complete at every moment, but a kill during the renames can leave some targets new and
    some old.
    """
    staging = StagedFiles(durable)
    try:
        for path, data in files.items():
            staging.add(path, data)
    except BaseException:
        staging.discard()
        raise
    return staging.commit()


def write_bytes_atomic(path: Path, data: bytes, durable: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically.

    Atomic either way (a killed process leaves the old file or the new one); ``durable=False`` skips the
    fsyncs, for many small files whose run ends with one :func:`sync_all`.
    """
    return write_files_atomic({path: data}, durable)[0]


def sync_all() -> None:
    """Flush every written file to disk once (after many ``durable=False`` writes)."""
    if hasattr(os, "sync"):
        os.sync()


def write_text_atomic(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text`` atomically (no newline translation)."""
    return write_bytes_atomic(path, text.encode(encoding))


def write_chunks_atomic(path: Path, chunks: Iterable[bytes]) -> Path:
    """Replace ``path`` atomically with content produced piece by piece (never all in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)
    return path
