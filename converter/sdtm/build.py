"""Turn mapped rows of many cases into one SDTM study: keys, --SEQ, --DY, SUPP--, RELREC, variable order.

Only standard SDTM mechanics live here; what a value means comes from the mapping files.
"""

from __future__ import annotations

import heapq
import os
import pickle
import re
import tempfile
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, nullcontext
from functools import cache, lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple, overload

import orjson

from converter.case.dates import study_day
from converter.mapping.engine import MappedCase, Row
from converter.resources import schema_path
from converter.sdtm import metadata
from converter.sdtm.ascii import to_ascii
from converter.sdtm.model import Cell, Dataset, Study, Variable
from converter.validate.issues import Issue

DATE_TO_DAY = {"DTC": "DY", "STDTC": "STDY", "ENDTC": "ENDY"}
#: Estimated bytes one accepted cell holds, its pointer and its share of the value (≈ 27 measured on generated cases).
CELL_BYTES = 28
#: Accepted rows held in memory before :class:`StudyBuilder` spills them (when it has a ``spill_dir``).
SPILL_BUDGET = 256 << 20
#: Batches of rows :class:`Columns` holds per variable before joining them into one tuple.
JOIN = 64
#: Rows per pickled piece of a spilled run: merging the runs at the end holds one piece of each.
PIECE_ROWS = 128
#: Rows per part of a spilled dataset as :class:`DatasetParts` gives them.
PART_ROWS = 8192


@cache
def _keys() -> dict[str, Any]:
    return orjson.loads(schema_path("sdtm-keys.json").read_bytes())


def sort_keys(domain: str, present: Iterable[str]) -> list[str]:
    """The natural keys of a domain (SUPP-- use SUPPQUAL's)."""
    spec = _keys()
    keys = spec["keys"].get("SUPPQUAL" if domain.startswith("SUPP") else domain)
    if keys:
        return keys
    present = list(present)
    return ["STUDYID", "USUBJID", *[v for s in spec["fallback_suffixes"] for v in present if v == domain + s]]


class CaseTable(NamedTuple):
    """One case's rows of one dataset, column by column: what a converting process hands over.

    Cheaper to pickle than the rows (no dict per row) and stored by :class:`Columns` as it is.
    """

    names: tuple[str, ...]  # the variables, in the order the rows first have them
    columns: tuple[tuple[Cell, ...], ...]  # per variable, its cell in each row (None: the row lacks it)
    count: int  # rows


def case_tables(rows: dict[str, list[dict[str, Cell]]]) -> dict[str, CaseTable]:
    """One case's rows per dataset (as :meth:`StudyBuilder.add` returns them) as :class:`CaseTable` s."""
    return {name: case_table(records) for name, records in rows.items() if records}


def case_table(rows: list[dict[str, Cell]]) -> CaseTable:
    """Rows of one dataset (dicts, at least one; a variable a row lacks is None there) as a :class:`CaseTable`."""
    names = tuple(rows[0])
    if all(map(names.__eq__, map(tuple, rows))):  # the usual case: every row has the same variables
        return CaseTable(names, tuple(zip(*map(dict.values, rows))), len(rows))
    names = tuple(dict.fromkeys(chain.from_iterable(rows)))
    return CaseTable(names, tuple(zip(*[tuple(map(r.get, names)) for r in rows])), len(rows))


_UNSEEN = object()  # a memo's "not computed yet" (None is a result)
_CASE_KEYS = frozenset({"STUDYID", "DOMAIN", "USUBJID"})  # the same in every row :meth:`StudyBuilder.add` sorts


def _sort_rows(rows: list[Row], keys: list[str]) -> None:
    """Sort one case's rows of a domain by ``keys`` as ``_sortable`` orders them (stable).

    The keys every row of the case shares are skipped; plain text keys are compared as they are."""
    keys = [k for k in keys if k not in _CASE_KEYS]
    if not keys:
        return
    cells = [tuple(map(r.values.get, keys)) for r in rows]
    flat = list(chain.from_iterable(cells))
    types = set(map(type, flat))
    if types <= _PLAIN:  # None and "" sort first, as "" does; other text after it, in its own order
        if type(None) in types:
            cells = [tuple([v or "" for v in c]) for c in cells]
    else:
        cells = [tuple(map(_sortable, c)) for c in cells]
    order = sorted(range(len(rows)), key=cells.__getitem__)
    rows[:] = [rows[i] for i in order]


def _sortable(value: Cell) -> tuple[int, Any]:
    if value.__class__ is str and value:
        return (2, value)
    if value is None or value == "":
        return (0, "")
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


class StudyBuilder:
    """Accumulates the SDTM rows of many cases and assembles the datasets.

    ``rows`` holds what :meth:`add` produced (as dicts); ``accepted`` the rows a run keeps of each converted
    case (:meth:`accept`), column by column, until :meth:`datasets` assembles them once at the end. With a
    ``spill_dir``, accepted rows past ``budget`` bytes move to temporary files there (``spilled``).
    """

    def __init__(self, study_id: str, ct_version: str = "", ascii: dict[str, str] | None = None, *,
                 spill_dir: Path | None = None, budget: int | None = None):
        self.study_id = study_id
        self.ascii = ascii  # character → ASCII spelling (mappings/sdtm/ascii.csv); None: the shipped table
        self.ct_version = ct_version
        self.rows: dict[str, list[dict[str, Cell]]] = {}
        self.notes: list[Issue] = []  # what the builder changed in a value (text written in ASCII)
        self.accepted: dict[str, Columns] = {}  # rows of finished cases, stored compactly per dataset
        self.spill_dir = spill_dir  # where accepted rows go once ``budget`` bytes are held (None: kept in memory)
        self.budget = SPILL_BUDGET if budget is None else budget  # bytes (estimated: CELL_BYTES a cell)
        self.held = 0  # estimated bytes of ``accepted``
        self.spilled: dict[str, ColumnSpill] = {}  # accepted rows already on disk, per dataset

    def accept(self, tables: dict[str, CaseTable]) -> None:
        """Keep one converted case's rows (:func:`case_tables` of what :meth:`add` returns) for :meth:`study`.

        With a ``spill_dir``, the rows held are written to temporary files there once they pass the ``budget``.
        """
        for name, table in tables.items():
            columns = self.accepted.get(name)
            if columns is None:
                columns = self.accepted[name] = Columns()
            columns.add_table(table)
            self.held += CELL_BYTES * table.count * len(table.names)
        if self.spill_dir is not None and self.held > self.budget:
            self.spill()

    def spill(self) -> None:
        """Move every accepted row held in memory to the dataset's temporary file under ``spill_dir``."""
        assert self.spill_dir is not None
        for name, columns in sorted(self.accepted.items()):
            spill = self.spilled.get(name)
            if spill is None:
                spill = self.spilled[name] = ColumnSpill(self.spill_dir)
            spill.write(_Run.of(name, columns))
        self.accepted.clear()
        self.held = 0

    def close(self) -> None:
        """Remove the temporary files and let go of every row (a run that ends early)."""
        for name in self.names():
            self.release(name)
        self.held = 0

    def __bool__(self) -> bool:
        """True when the builder holds any row."""
        return bool(self.rows or self.accepted or self.spilled)

    def usubjid(self, case_id: str) -> str:
        """The unique subject id of a case."""
        return f"{self.study_id}-{case_id}"

    def add(self, mapped: MappedCase) -> dict[str, list[dict[str, Cell]]]:
        """Add one case's rows; returns the rows per dataset this case contributed (for validation)."""
        study_id = self.study_id
        usubjid = self.usubjid(mapped.case.case_id)
        by_domain: dict[str, list[Row]] = {}
        for row in mapped.rows:
            same = by_domain.get(row.domain)
            if same is None:
                by_domain[row.domain] = [row]
            else:
                same.append(row)
        rfstdtc = next((r.values.get("RFSTDTC") for r in by_domain.get("DM", [])), None)
        day_of: dict[str, Any] = {}  # --DTC text → its --DY
        seq_of: dict[int, tuple[str, str, int]] = {}  # id(row) -> (domain, seqvar, seq)
        out: dict[str, list[dict[str, Cell]]] = {}
        for domain in sorted(by_domain):
            rows = by_domain[domain]
            keys = {"STUDYID": study_id, "DOMAIN": domain, "USUBJID": usubjid}
            days = _study_days(domain)
            for row in rows:
                values = row.values
                values.update(keys)
                for dtc, day in days:
                    if dtc in values:
                        date = values[dtc]
                        if date.__class__ is str:  # the same date, the same day (one reference per case)
                            dy = day_of.get(date, _UNSEEN)
                            if dy is _UNSEEN:
                                dy = day_of[date] = study_day(date, rfstdtc)
                        else:
                            dy = study_day(date, rfstdtc)
                        if dy is not None:
                            values[day] = dy
            if domain == "CO":
                for row in rows:
                    _split_comment(row.values)
            if len(rows) > 1:
                _sort_rows(rows, sort_keys(domain, rows[0].values))
            seqvar = _seq_variable(domain)
            if seqvar:
                for n, row in enumerate(rows, 1):
                    row.values[seqvar] = n
                    seq_of[id(row)] = (domain, seqvar, n)
            else:
                for n, row in enumerate(rows, 1):
                    seq_of[id(row)] = (domain, "", n)
            out[domain] = [r.values for r in rows]
        self._supp(mapped.rows, seq_of, usubjid, out)
        self._relrec(mapped.rows, seq_of, usubjid, out)
        try:
            ascii_only = orjson.dumps(out).isascii()  # one C-level pass: orjson writes non-ASCII text as UTF-8
        except TypeError:
            ascii_only = False  # a value orjson cannot write: look dataset by dataset
        for name, rows in out.items():
            if not ascii_only:
                self._ascii(name, rows)
            self.rows.setdefault(name, []).extend(rows)
        return out

    def _ascii(self, name: str, rows: list[dict[str, Cell]]) -> None:
        """SDTM text is ASCII (XPT v5): write other characters as ``mappings/sdtm/ascii.csv`` says, and note it."""
        try:
            if orjson.dumps(rows).isascii():  # one C-level pass: orjson writes non-ASCII text as UTF-8 bytes
                return
        except TypeError:
            pass  # a value orjson cannot write: look at every cell
        seqvar = f"{name}SEQ"
        for row in rows:
            for var, value in row.items():
                if isinstance(value, list):
                    value = _text(value)
                if not isinstance(value, str) or value.isascii():
                    continue
                plain = to_ascii(value, self.ascii)
                row[var] = plain.text
                key = ",".join(f"{k}={row[k]}" for k in ("USUBJID", seqvar, "IDVAR", "IDVARVAL", "QNAM") if row.get(k))
                self.notes.append(Issue(
                    "warning" if plain.lossy else "info", "sdtm.value.ascii.written",
                    f"{var} = {value!r} written as {plain.text!r}: SDTM text is ASCII (XPT v5)"
                    + ("; '?' stands for characters with no ASCII form" if plain.lossy else "")
                    + "; the FHIR output keeps the original", f"{name}[{key}].{var}"))

    def _supp(self, rows: list[Row], seq_of: dict[int, tuple[str, str, int]], usubjid: str,
              out: dict[str, list[dict[str, Cell]]]) -> None:
        study_id = self.study_id
        for row in rows:
            if not row.supp:
                continue
            domain, seqvar, seq = seq_of[id(row)]
            idvar, idvarval = (seqvar, str(seq)) if seqvar else (None, None)
            supp = None  # SUPP-- of the domain, made on its first value
            for qnam, qlabel, qval, qorig in row.supp:
                for v in (qval if isinstance(qval, list) else (qval,)):
                    if supp is None:
                        supp = out.setdefault(f"SUPP{domain}", [])
                    supp.append({
                        "STUDYID": study_id, "RDOMAIN": domain, "USUBJID": usubjid,
                        "IDVAR": idvar, "IDVARVAL": idvarval,
                        "QNAM": qnam, "QLABEL": qlabel, "QVAL": v if v.__class__ is str else _text(v), "QORIG": qorig,
                        "QEVAL": None})

    def _relrec(self, rows: list[Row], seq_of: dict[int, tuple[str, str, int]], usubjid: str,
                out: dict[str, list[dict[str, Cell]]]) -> None:
        by_entity: dict[str, list[Row]] = {}
        related = []
        for row in rows:
            by_entity.setdefault(row.entity, []).append(row)
            if row.related:
                related.append(row)
        if not related:
            return
        relid = 0
        study_id = self.study_id
        relrec = None
        for row in sorted(related, key=lambda r: seq_of[id(r)]):
            for target_id in row.related:
                for target in by_entity.get(target_id, ()):
                    relid += 1
                    if relrec is None:
                        relrec = out.setdefault("RELREC", [])
                    for r in (row, target):
                        domain, seqvar, seq = seq_of[id(r)]
                        relrec.append({
                            "STUDYID": study_id, "RDOMAIN": domain, "USUBJID": usubjid,
                            "IDVAR": seqvar, "IDVARVAL": str(seq), "RELTYPE": None, "RELID": str(relid)})

    def names(self) -> set[str]:
        """The names of the datasets the builder holds rows of."""
        return self.rows.keys() | self.accepted.keys() | self.spilled.keys()

    def datasets(self, release: bool = False, parts: bool = False) -> Iterator[Dataset | DatasetParts]:
        """The datasets one at a time in name order, as :meth:`study` assembles them.

        ``release=True`` lets go of each dataset's stored rows as it is assembled (end of a run): a caller that
        drops each dataset before asking for the next holds one dataset at a time. ``parts=True`` gives a
        dataset that spilled, or has more than :data:`PART_ROWS` rows, as :class:`DatasetParts` instead, to be
        read a part at a time (and closed).
        """
        for name in sorted(self.names()):
            yield self.dataset(name, release, parts)  # the generator keeps no reference to it

    def dataset(self, name: str, release: bool = False, parts: bool = False) -> Dataset | DatasetParts:
        """One dataset, as :meth:`datasets` gives it (``release``: its rows are taken from the builder)."""
        spill = self.spilled.pop(name, None) if release else self.spilled.get(name)
        held = self._held(name, release)
        if spill is None and not (parts and held.count > PART_ROWS):  # small enough to be whole in memory
            return _assemble(name, held)
        stored = DatasetParts(name, spill, _Run.of(name, held), own=release)
        del held
        if parts:
            return stored
        with closing(stored) if release else nullcontext():
            return stored.assemble()

    def sizes(self) -> dict[str, int]:
        """The number of rows the builder holds of each dataset (held, added or spilled)."""
        sizes = {name: columns.count for name, columns in self.accepted.items()}
        for name, rows in self.rows.items():
            sizes[name] = sizes.get(name, 0) + len(rows)
        for name, spill in self.spilled.items():
            sizes[name] = sizes.get(name, 0) + spill.count
        return sizes

    def release(self, name: str) -> None:
        """Let go of every row of one dataset without reading them (written by another process, or a run that ends)."""
        spill = self.spilled.pop(name, None)
        if spill is not None:
            spill.close()
        self.accepted.pop(name, None)
        self.rows.pop(name, None)

    def _held(self, name: str, release: bool) -> Columns:
        """The rows of one dataset held in memory: accepted, then added (``release``: taken from the builder)."""
        held = self.accepted.pop(name, None) if release else self.accepted.get(name)
        rows = self.rows.pop(name, None) if release else self.rows.get(name)
        stored = Columns()
        if held is not None:
            stored.append(held, take=release)
        if rows:
            stored.add_table(case_table(rows))
        return stored

    def study(self, release: bool = False) -> Study:
        """Assemble the datasets: SDTMIG variable order and types, rows sorted by keys across subjects.

        ``release=True`` lets go of each dataset's stored rows once its table is built (end of a run), so the
        raw rows and the assembled table are not both held for the whole study.
        """
        study = Study(self.study_id, ct_version=self.ct_version)
        for dataset in self.datasets(release):
            study.datasets[dataset.name] = dataset
        return study


@cache
def _seq_variable(domain: str) -> str:
    """--SEQ of a domain when SDTMIG defines it, else ""."""
    return f"{domain}SEQ" if metadata.is_variable(domain, f"{domain}SEQ") else ""


@cache
def _study_days(domain: str) -> tuple[tuple[str, str], ...]:
    """(--DTC, --DY)-like pairs of a domain whose study-day variable SDTMIG defines (none for DM)."""
    if domain == "DM":
        return ()
    return tuple((domain + suffix, domain + day) for suffix, day in DATE_TO_DAY.items()
                 if metadata.is_variable(domain, domain + day))


class Columns:
    """The rows of one dataset stored column by column, 8 bytes a cell.

    While rows are added, each variable's cells are held as tuples: one per batch of rows, joined every
    :data:`JOIN` batches into one. A tuple of text and numbers is not tracked by the garbage collector, so a
    run's full collections do not walk every cell held, as they walk a list's (at 1,000 seed cases that was
    5 % of the run, growing with the cells held). :attr:`values` joins them into one list per variable.
    """

    __slots__ = ("count", "_lists", "_joined", "_batches", "_lengths")

    def __init__(self) -> None:
        self.count = 0
        self._lists: dict[str, list[Any]] = {}  # the cells as :attr:`values` gave them (nothing held as tuples)
        self._joined: dict[str, list[tuple[Any, ...]]] = {}  # per variable: tuples of JOIN batches each
        self._batches: dict[str, list[tuple[Any, ...]]] = {}  # per variable: the batches not joined yet
        self._lengths: dict[str, int] = {}  # per variable: cells held as tuples

    @property
    def values(self) -> dict[str, list[Any]]:
        """One list of cells per variable, in the order the variables were first added (a caller may change it)."""
        if self._batches:
            joined = self._joined
            self._lists = {var: list(chain.from_iterable(chain(joined[var], batches)))
                           for var, batches in self._batches.items()}
            self._joined, self._batches, self._lengths = {}, {}, {}
        return self._lists

    def _add(self, cells: Iterable[tuple[str, Sequence[Any]]], count: int) -> None:
        """Add a batch of ``count`` rows after the ``self.count`` held: cells per variable (missing ones: None)."""
        if self._lists:  # held as lists since :attr:`values` was read: held as one batch again
            lists, self._lists = self._lists, {}
            held, self.count = self.count, 0
            self._add(lists.items(), held)
        before = self.count
        joined, batches, lengths = self._joined, self._batches, self._lengths
        for var, column in cells:
            held = batches.get(var)
            if held is None:
                joined[var] = []
                held = batches[var] = [(None,) * before] if before else []
                lengths[var] = before
            held.append(column if type(column) is tuple else tuple(column))
            lengths[var] += count
            if len(held) >= JOIN:
                joined[var].append(tuple(chain.from_iterable(held)))
                held.clear()
        self.count = before + count
        for var, length in lengths.items():
            if length < self.count:  # variables earlier rows had and these lack
                batches[var].append((None,) * (self.count - length))
                lengths[var] = self.count

    def add_table(self, table: CaseTable) -> None:
        """Append one case's rows of this dataset."""
        self._add(zip(table.names, table.columns), table.count)

    def append(self, other: Columns, take: bool = False) -> None:
        """Append the rows of ``other``; ``take``: ``other`` is not used again, its cells may become ours."""
        if not other.count:
            return
        if not self.count and take:
            self.count, self._lists, self._joined, self._batches, self._lengths = (
                other.count, other._lists, other._joined, other._batches, other._lengths)
            other.count, other._lists, other._joined, other._batches, other._lengths = 0, {}, {}, {}, {}
            return
        self._add(other.values.items(), other.count)


class _Run:
    """Rows of one dataset sorted as the dataset sorts them, as cells: one list per variable they use.

    ``used`` holds the variables with a value in some row, as :func:`_assemble` decides it from the stored
    values; variables the rows do not use are left out (all their cells are missing).
    """

    __slots__ = ("count", "used", "cells")

    def __init__(self, count: int, used: set[str], cells: dict[str, list[Cell]]):
        self.count, self.used, self.cells = count, used, cells

    @classmethod
    def of(cls, name: str, stored: Columns) -> _Run:
        """The rows of ``stored`` (emptied) as a sorted run."""
        count = stored.count
        used = _used(stored)
        variables = _dataset_variables(name, used)
        cells = {v.name: _column(stored.values[v.name], v.type == "Num", count)
                 for v in variables if v.name in used}
        stored.values.clear()
        order = _order(name, [v.name for v in variables], cells, count)
        if order is not None:
            cells = {var: list(map(column.__getitem__, order)) for var, column in cells.items()}
        return cls(count, used, cells)

    def pieces(self, size: int) -> Iterator[tuple[int, dict[str, list[Cell]]]]:
        """The rows ``size`` at a time: (rows, cells)."""
        for start in range(0, self.count, size):
            yield min(size, self.count - start), {var: column[start:start + size] for var, column in self.cells.items()}


class ColumnSpill:
    """Accepted rows of one dataset in an anonymous temporary file: sorted runs (:class:`_Run`), each in pieces.

    The file has no name (it disappears when closed or when the process ends, even killed); it lives in
    ``folder``, the run's output folder, so it uses the output's file system. A piece is pickled (rows, cells)
    of :data:`PIECE_ROWS` rows at most; ``runs`` holds the file offset of every piece of every run.
    """

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.handle = tempfile.TemporaryFile(dir=folder, prefix=".sdtm.", suffix=".tmp")
        self.runs: list[array[int]] = []
        self.used: set[str] = set()  # variables with a value in some row of some run
        self.count = 0

    @property
    def chunks(self) -> int:
        """How many runs were written."""
        return len(self.runs)

    def write(self, run: _Run) -> None:
        """Append one run."""
        self.handle.seek(0, os.SEEK_END)  # a read may have stopped half-way
        offsets = array("q")  # 8 bytes a piece: what stays in memory of a spilled run
        for piece in run.pieces(PIECE_ROWS):
            offsets.append(self.handle.tell())
            pickle.dump(piece, self.handle, protocol=pickle.HIGHEST_PROTOCOL)
        self.runs.append(offsets)
        self.used |= run.used
        self.count += run.count

    def read(self, run: int) -> Iterator[tuple[int, dict[str, list[Cell]]]]:
        """The pieces of one run in order (other reads may come in between)."""
        handle = self.handle
        for offset in self.runs[run]:
            handle.seek(offset)
            yield pickle.load(handle)
        handle.seek(0, os.SEEK_END)

    def close(self) -> None:
        """Remove the file."""
        self.handle.close()


class DatasetParts:
    """A large dataset read a part of its rows at a time: the bounded end of a run (its sorted runs spilled to
    ``spill``, if any, and the rows still held in memory, sorted, as ``rest``).

    ``shell`` is the dataset without rows (variables, keys, labels) and ``count`` its number of rows;
    :meth:`parts` gives its rows :data:`PART_ROWS` at a time, in the dataset's order (a k-way merge of the
    sorted runs) or in any order (cheaper, for what does not depend on it); :meth:`assemble` the whole
    dataset, exactly as :meth:`StudyBuilder.study` assembles it. ``own``: :meth:`close` removes the spill.
    """

    def __init__(self, name: str, spill: ColumnSpill | None, rest: _Run, own: bool = True):
        self.spill, self.rest, self.own = spill, rest, own
        self.count = (spill.count if spill is not None else 0) + rest.count
        self.used = (spill.used if spill is not None else set()) | rest.used
        variables = _dataset_variables(name, self.used)
        self.names = [v.name for v in variables]
        self.keys = [k for k in sort_keys(name, self.names) if k in self.names]
        self.shell = Dataset(name, metadata.dataset_label(name), variables, [], self.keys, metadata.dataset_class(name),
                             metadata.domain_meta(name).structure)
        chars = {v.name for v in variables if v.type == "Char"}
        self.mergeable = all(k in chars for k in self.keys)  # text keys: runs merge on plain text

    def close(self) -> None:
        """Remove the spill file (when owned)."""
        if self.own and self.spill is not None:
            self.spill.close()

    def __enter__(self) -> DatasetParts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _runs(self) -> list[Iterator[tuple[int, dict[str, list[Cell]]]]]:
        spilled = [] if self.spill is None else list(map(self.spill.read, range(len(self.spill.runs))))
        return [*spilled, self.rest.pieces(PIECE_ROWS)]

    def parts(self, ordered: bool) -> Iterator[Dataset]:
        """The rows about :data:`PART_ROWS` at a time as datasets (their rows are made from the columns when read)."""
        names, size = self.names, PART_ROWS
        if ordered:
            if not self.mergeable:
                raise ValueError(f"{self.shell.name} has a sort key that is not text: it cannot be merged")
            pieces: Iterator[tuple[int, dict[str, list[Cell]]]] = self._merged()
        else:
            pieces = chain.from_iterable(self._runs())
        pending: list[tuple[int, dict[str, list[Cell]]]] = []
        held = 0
        for piece in chain(pieces, [(0, {})]):
            if piece[0]:
                pending.append(piece)
                held += piece[0]
                if held < size:
                    continue
            elif not held:
                break
            columns = {var: list(chain.from_iterable(cells.get(var) or [None] * n for n, cells in pending))
                       for var in names}
            shell = self.shell
            rows: Any = _Rows(columns, held)  # a sequence of dicts, as Dataset.rows is read
            yield Dataset(shell.name, shell.label, shell.variables, rows, shell.keys, shell.domain_class,
                          shell.structure, columns)
            pending, held = [], 0

    def _merged(self) -> Iterator[tuple[int, dict[str, list[Cell]]]]:
        """The rows of every run in the dataset's order, in slices of the runs' pieces.

        Each run is sorted stably by the keys, so ordering by (keys, run, row in run) is the stable sort of
        all runs one after the other: the order :func:`_assemble` gives. The keys are text or missing
        (``mergeable``), which sort as ``_sortable`` orders them once missing is written as "". The heap holds
        the next row of each run; the run on top gives every row that comes before the next run's, at once.
        """
        keys, names = self.keys, self.names

        def keyed(pieces: Iterator[tuple[int, dict[str, list[Cell]]]]) -> Iterator[_Piece]:
            for n, cells in pieces:
                for var in names:
                    if var not in cells:
                        cells[var] = [None] * n
                yield _Piece(n, cells, list(zip(*[[v or "" for v in cells[k]] for k in keys])) if keys else [()] * n)

        sources = [keyed(pieces) for pieces in self._runs()]
        current: list[_Piece | None] = [next(source, None) for source in sources]
        heap = [(piece.keys[0], run) for run, piece in enumerate(current) if piece is not None]
        heapq.heapify(heap)
        while heap:
            _, run = heapq.heappop(heap)
            piece = current[run]
            assert piece is not None
            start, end = piece.start, piece.count
            if heap:  # rows up to the next run's first row (on equal keys, the earlier run goes first)
                after, other = heap[0]
                end = (bisect_right if run < other else bisect_left)(piece.keys, after, start)
            if start == 0 and end == piece.count:
                yield end, piece.cells
            else:
                yield end - start, {var: column[start:end] for var, column in piece.cells.items()}
            if end < piece.count:
                piece.start = end
            else:
                piece = current[run] = next(sources[run], None)
                if piece is None:
                    continue
            heapq.heappush(heap, (piece.keys[piece.start], run))

    def assemble(self) -> Dataset:
        """The whole dataset, as :meth:`StudyBuilder.study` gives it."""
        columns: dict[str, list[Cell]] = {var: [] for var in self.names}
        for n, cells in chain.from_iterable(self._runs()):
            for var, column in columns.items():
                column.extend(cells.get(var) or [None] * n)
        return _sorted_dataset(self.shell.name, self.shell.variables, columns, self.count)


class _Rows(Sequence[dict[str, Cell]]):
    """The rows of a part as dicts, each made when it is read (a part is read column by column, mostly)."""

    __slots__ = ("columns", "count")

    def __init__(self, columns: dict[str, list[Cell]], count: int):
        self.columns, self.count = columns, count

    def __len__(self) -> int:
        return self.count

    @overload
    def __getitem__(self, index: int) -> dict[str, Cell]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Cell]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Cell] | list[dict[str, Cell]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.count))]
        if not -self.count <= index < self.count:
            raise IndexError(index)
        return {var: column[index] for var, column in self.columns.items()}

    def __iter__(self) -> Iterator[dict[str, Cell]]:
        names = list(self.columns)
        return (dict(zip(names, row)) for row in zip(*self.columns.values()))


class _Piece:
    """A piece of a run being merged: its cells, the sort key of each row, and the first row not yet taken."""

    __slots__ = ("count", "cells", "keys", "start")

    def __init__(self, count: int, cells: dict[str, list[Cell]], keys: list[tuple[str, ...]]):
        self.count, self.cells, self.keys, self.start = count, cells, keys, 0


def _used(stored: Columns) -> set[str]:
    """The variables of ``stored`` with a value in some row (not only None or "")."""
    count = stored.count
    return {var for var, column in stored.values.items()
            if any(column) or column.count(None) + column.count("") < count}


def _order(name: str, names: list[str], cells: dict[str, list[Cell]], count: int) -> list[int] | None:
    """The row order that sorts ``cells`` by the keys of dataset ``name`` (None: as they are)."""
    keys = [k for k in sort_keys(name, names) if k in names]
    if not keys or count <= 1:
        return None
    missing = [None] * count
    sortable = list(zip(*(_sortable_column(cells.get(k, missing)) for k in keys)))
    return sorted(range(count), key=sortable.__getitem__)


def _assemble(name: str, stored: Columns) -> Dataset:
    """One dataset from its stored columns (emptied: they become the rows): variables, cells, sorted rows as dicts."""
    count = stored.count
    variables = _dataset_variables(name, _used(stored))
    columns = {v.name: _column(stored.values.get(v.name), v.type == "Num", count) for v in variables}
    stored.values.clear()  # the columns the dataset does not use go now
    return _sorted_dataset(name, variables, columns, count)


def _sorted_dataset(name: str, variables: list[Variable], columns: dict[str, list[Cell]], count: int) -> Dataset:
    """The dataset of these cells (a list per variable, in the order of ``variables``) with its rows sorted."""
    names = [v.name for v in variables]
    keys = [k for k in sort_keys(name, names) if k in names]
    order = _order(name, names, columns, count)
    if order is not None:
        columns = {var: list(map(column.__getitem__, order)) for var, column in columns.items()}
    table = [dict(zip(names, r)) for r in zip(*columns.values())]
    return Dataset(name, metadata.dataset_label(name), variables, table, keys, metadata.dataset_class(name),
                   metadata.domain_meta(name).structure, columns)


_PLAIN = {type(None), str}
_NUMBERS = {type(None), int, float}


def _column(values: list[Any] | None, numeric: bool, count: int) -> list[Cell]:
    """A variable's cells as the writers take them (``_cell`` of each value; whole columns at once when plain)."""
    if values is None:
        return [None] * count
    types = set(map(type, values))
    if numeric and types <= _NUMBERS:
        return values
    if not numeric and types <= _PLAIN:
        if "" in values:
            return [v or None for v in values]
        return values
    return [_cell(v, numeric) for v in values]


def _sortable_column(values: list[Cell]) -> list[Any]:
    """Values that sort a column as ``_sortable`` does, without a tuple per cell when the column is plain."""
    types = set(map(type, values))
    if types <= _PLAIN:  # after _column: None or non-empty text; None sorts first, as "" does
        return [v or "" for v in values] if None in values else values
    if types <= _NUMBERS and None not in values:
        return values
    return [_sortable(v) for v in values]


def _dataset_variables(name: str, used: set[str]) -> list[Variable]:
    """SDTMIG variables of the dataset: Req and Exp always, Perm when any row has a value (``used``)."""
    return list(variables_used(name, frozenset(used)))


@lru_cache(maxsize=4096)
def variables_used(name: str, used: frozenset[str]) -> tuple[Variable, ...]:
    """The variables of dataset ``name`` when ``used`` have a value in some row (see ``_dataset_variables``)."""
    listed = metadata.variables(name)
    out = [v for v in listed if v.core in ("Req", "Exp") or v.name in used]
    names = {v.name for v in listed}
    extra = [metadata.class_variable(name, n) for n in sorted(used - names, key=_natural)]
    return tuple(out + [v for v in extra if v is not None])  # SDTM-model class variables the domain table does not list


MAX_CHARS = 200


def _natural(name: str) -> tuple[str, int]:
    m = re.match(r"^(.*?)(\d*)$", name)
    return (m.group(1), int(m.group(2) or 0)) if m else (name, 0)


def _split_comment(values: dict[str, Cell]) -> None:
    """SDTMIG CO: a comment over 200 characters continues in COVAL1, COVAL2… (split at spaces)."""
    text = values.get("COVAL")
    if not isinstance(text, str) or len(text.encode()) <= MAX_CHARS:
        return
    parts: list[str] = []
    rest = text
    while len(rest.encode()) > MAX_CHARS:
        cut = rest.rfind(" ", 0, MAX_CHARS + 1)
        cut = cut if cut > 0 else MAX_CHARS
        parts.append(rest[:cut])
        rest = rest[cut:]
    parts.append(rest)
    values["COVAL"] = parts[0]
    for n, part in enumerate(parts[1:], 1):
        values[f"COVAL{n}"] = part


def _cell(value: Any, numeric: bool) -> Cell:
    if value is None or value == "":
        return None
    if numeric:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        try:
            return float(value)
        except (TypeError, ValueError):
            return _text(value)  # kept so the validator reports the type error: never dropped silently
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value)
    return str(value)
