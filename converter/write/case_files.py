"""Per-case FHIR output written by the process that converts the case, placed by the run in input order.

A run has one staging folder, ``OUT/.casebridge-<random>.tmp``. Each converting process (a worker, or the main
process with one job) writes there, through :class:`CaseFiles`:

- each converted case's bundle, to a temporary file of its own; the run renames it into ``fhir/`` when it
  accepts the case (:func:`place_bundle`), or deletes it when it refuses it (a duplicate ``case_id``);
- each converted case's NDJSON lines, grouped by resource type and appended to the process's current part
  file; only where they are (:class:`NdjsonPiece`) goes back to the run, which copies them in input order
  into one temporary file per type and renames those into ``fhir/ndjson/`` at the end (:class:`NdjsonAssembler`).

So the main process never receives, parses or writes a bundle's bytes, and ``<Type>.ndjson`` has the same
bytes whatever ``--jobs``. The staging folder is removed when the run ends, also when it fails; a killed run
leaves it behind, its files all named ``.*.tmp`` like every other orphaned temporary file.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from itertools import count
from pathlib import Path
from typing import NamedTuple

from converter.write.atomic import write_bytes_atomic

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_PART_BYTES = 64 << 20  # a process starts a new NDJSON part after this much: the run deletes consumed parts
_NO_COPY_FILE_RANGE = {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}


class NdjsonPiece(NamedTuple):
    """One case's NDJSON lines in a part file: from ``offset``, ``length`` bytes for each type in turn."""

    part: str  # the part file's path
    writer: int  # the process that wrote it (consecutive pieces of one writer are in input order)
    offset: int
    sizes: tuple[tuple[str, int], ...]  # (resource type, length), types in the order of their first resource


def make_staging(out: Path) -> Path:
    """Create the run's staging folder inside ``out`` (same file system: a rename places a file)."""
    out.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".casebridge-", suffix=".tmp", dir=out))


def remove_staging(staging: Path) -> None:
    """Remove the staging folder and whatever the run did not place."""
    shutil.rmtree(staging, ignore_errors=True)


class CaseFiles:
    """What one converting process writes into the staging folder."""

    def __init__(self, staging: Path):
        self.staging = staging
        self.names = count()
        self.parts = count()
        self.part: str | None = None
        self.part_fd = -1
        self.part_size = 0

    def stage_bundle(self, data: bytes) -> str:
        """Write a bundle to a new temporary file; return its path (not fsynced: the run ends with one sync)."""
        path = os.path.join(self.staging, f".{os.getpid()}-{next(self.names)}.bundle.json.tmp")
        fd = os.open(path, _CREATE, 0o666)  # the umask applies, as for an ordinary new file
        try:
            _write_all(fd, data)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        return path

    def add_ndjson(self, lines: list[tuple[str, bytes]]) -> NdjsonPiece:
        """Append one case's ``(type, line)`` pairs, grouped by type, to this process's part file."""
        by_type: dict[str, list[bytes]] = {}
        for rtype, line in lines:
            group = by_type.get(rtype)
            if group is None:
                by_type[rtype] = [line]
            else:
                group.append(line)
        blocks = [(rtype, b"".join(group)) for rtype, group in by_type.items()]
        if self.part is None or self.part_size >= _PART_BYTES:
            self._next_part()
        assert self.part is not None
        offset = self.part_size
        data = b"".join(block for _, block in blocks)
        _write_all(self.part_fd, data)
        self.part_size += len(data)
        return NdjsonPiece(self.part, os.getpid(), offset, tuple((rtype, len(block)) for rtype, block in blocks))

    def _next_part(self) -> None:
        self.close()
        self.part = os.path.join(self.staging, f".{os.getpid()}-{next(self.parts)}.ndjson-part.tmp")
        self.part_fd = os.open(self.part, _CREATE, 0o600)
        self.part_size = 0

    def close(self) -> None:
        """Close the current part file (it stays for the run to read)."""
        if self.part_fd >= 0:
            os.close(self.part_fd)
            self.part_fd = -1


class NdjsonAssembler:
    """Builds each ``<Type>.ndjson`` from the pieces of accepted cases, in the order they are added.

    Each type goes to a temporary file beside its target, renamed into place by :meth:`commit` (atomic per
    file); :meth:`discard` removes them when the run fails. A writer's part file is deleted as soon as a piece
    from its next part arrives: pieces come in input order, and one writer converts its cases in input order.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.targets: dict[str, tuple[int, Path]] = {}  # type -> (fd, temporary file)
        self.sources: dict[int, tuple[str, int]] = {}  # writer -> (its current part, fd)

    def add(self, piece: NdjsonPiece) -> None:
        """Copy one accepted case's lines to the end of each of its types' files."""
        src = self._source(piece)
        offset = piece.offset
        for rtype, length in piece.sizes:
            target = self.targets.get(rtype)
            if target is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = self.folder / f".{rtype}.ndjson.{os.getpid()}.tmp"
                target = self.targets[rtype] = (os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), tmp)
            copy_range(src, target[0], offset, length)
            offset += length

    def skip(self, piece: NdjsonPiece) -> None:
        """Note a refused case's piece (its part may be released), copying nothing."""
        self._source(piece)

    def _source(self, piece: NdjsonPiece) -> int:
        known = self.sources.get(piece.writer)
        if known is not None and known[0] == piece.part:
            return known[1]
        if known is not None:  # the writer moved on to its next part: every piece of the old one was added
            os.close(known[1])
            os.unlink(known[0])
        fd = os.open(piece.part, os.O_RDONLY)
        self.sources[piece.writer] = (piece.part, fd)
        return fd

    def commit(self) -> list[Path]:
        """Flush every type's file to disk and rename it into place; return the targets, sorted by type."""
        paths = []
        for rtype in sorted(self.targets):
            fd, tmp = self.targets[rtype]
            os.fsync(fd)
            os.close(fd)
            del self.targets[rtype]
            target = self.folder / f"{rtype}.ndjson"
            os.replace(tmp, target)
            paths.append(target)
        self.discard()
        return paths

    def discard(self) -> None:
        """Close every file and remove the temporary ones not renamed into place."""
        for fd, tmp in self.targets.values():
            os.close(fd)
            tmp.unlink(missing_ok=True)
        self.targets.clear()
        for _, fd in self.sources.values():
            os.close(fd)
        self.sources.clear()


def place_bundle(staged: str, target: Path) -> Path:
    """Rename a staged bundle over ``target`` (atomic: the old file or the new one, never part of one)."""
    try:
        os.replace(staged, target)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    except OSError as exc:  # fhir/ on another file system (a symbolic link): staged again beside the target
        if exc.errno != errno.EXDEV:
            raise
        write_bytes_atomic(target, Path(staged).read_bytes(), durable=False)
        os.unlink(staged)
    return target


def copy_range(src: int, dst: int, offset: int, length: int) -> None:
    """Append ``length`` bytes of ``src`` from ``offset`` at ``dst``'s position, in the kernel where it can."""
    while length:
        try:
            done = os.copy_file_range(src, dst, length, offset)
        except (AttributeError, OSError) as exc:  # no copy_file_range here, or not between these files
            if isinstance(exc, OSError) and exc.errno not in _NO_COPY_FILE_RANGE:
                raise
            os.lseek(src, offset, os.SEEK_SET)  # no os.pread on Windows
            done = os.write(dst, os.read(src, min(length, 1 << 24)))
        if done == 0:
            raise OSError(errno.EIO, f"NDJSON part file ends before offset {offset + length}")
        offset += done
        length -= done


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
