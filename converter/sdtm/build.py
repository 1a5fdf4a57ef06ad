"""Turn mapped rows of many cases into one SDTM study: keys, --SEQ, --DY, SUPP--, RELREC, variable order.

Only standard SDTM mechanics live here; what a value means comes from the mapping files.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from functools import cache, lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator

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

    def accept(self, rows: dict[str, list[dict[str, Cell]]]) -> None:
        """Keep one converted case's rows (as :meth:`add` returns them) for :meth:`study`, column by column.

        With a ``spill_dir``, the rows held are written to temporary files there once they pass the ``budget``.
        """
        for name, records in rows.items():
            if records:
                columns = self.accepted.get(name)
                if columns is None:
                    columns = self.accepted[name] = Columns()
                columns.extend(records)
                self.held += CELL_BYTES * len(records) * len(records[0])
        if self.spill_dir is not None and self.held > self.budget:
            self.spill()

    def spill(self) -> None:
        """Move every accepted row held in memory to the dataset's temporary file under ``spill_dir``."""
        assert self.spill_dir is not None
        for name, columns in sorted(self.accepted.items()):
            spill = self.spilled.get(name)
            if spill is None:
                spill = self.spilled[name] = ColumnSpill(self.spill_dir)
            spill.write(columns)
        self.accepted.clear()
        self.held = 0

    def close(self) -> None:
        """Remove the temporary files and let go of every row (a run that ends early)."""
        for spill in self.spilled.values():
            spill.close()
        self.spilled.clear()
        self.accepted.clear()
        self.rows.clear()
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

    def datasets(self, release: bool = False) -> Iterator[Dataset]:
        """The datasets one at a time in name order, as :meth:`study` assembles them.

        ``release=True`` lets go of each dataset's stored rows as it is assembled (end of a run): a caller that
        drops each dataset before asking for the next holds one dataset at a time.
        """
        for name in sorted(self.names()):
            yield _assemble(name, self._stored(name, release))  # the generator keeps no reference to either

    def _stored(self, name: str, release: bool) -> Columns:
        """Every row of one dataset: spilled, then held, then added (``release``: taken from the builder)."""
        spill = self.spilled.pop(name, None) if release else self.spilled.get(name)
        held = self.accepted.pop(name, None) if release else self.accepted.get(name)
        rows = self.rows.pop(name, None) if release else self.rows.get(name)
        stored = Columns()
        if spill is not None:
            for chunk in spill.read():
                stored.append(chunk, take=True)
            if release:
                spill.close()
        if held is not None:
            stored.append(held, take=release)
        if rows is not None:
            added = Columns()
            added.extend(rows)
            stored.append(added, take=True)
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
    """The rows of one dataset stored column by column: one list per variable, 8 bytes a cell."""

    __slots__ = ("count", "values")

    def __init__(self) -> None:
        self.count = 0
        self.values: dict[str, list[Any]] = {}

    def extend(self, rows: list[dict[str, Cell]]) -> None:
        """Append rows (dicts; a variable a row lacks is None)."""
        if not rows:
            return
        names = tuple(rows[0])
        if all(map(names.__eq__, map(tuple, rows))):  # the usual case: every row has the same variables
            table = zip(*map(dict.values, rows))
        else:
            names = tuple(dict.fromkeys(chain.from_iterable(rows)))
            table = zip(*[tuple(map(r.get, names)) for r in rows])
        before = self.count
        self.count += len(rows)
        for var, cells in zip(names, table):
            column = self.values.get(var)
            if column is None:
                column = self.values[var] = [None] * before
            column.extend(cells)
        if len(names) < len(self.values):  # variables earlier rows had and these lack
            for column in self.values.values():
                if len(column) < self.count:
                    column.extend([None] * (self.count - len(column)))

    def append(self, other: Columns, take: bool = False) -> None:
        """Append the rows of ``other``; ``take``: ``other`` is not used again, its lists may become ours."""
        if not self.count:
            self.count = other.count
            self.values = other.values if take else {k: list(v) for k, v in other.values.items()}
            return
        before = self.count
        self.count += other.count
        for var, cells in other.values.items():
            column = self.values.get(var)
            if column is None:
                column = self.values[var] = [None] * before
            column.extend(cells)
        for column in self.values.values():
            if len(column) < self.count:  # variables ``other`` lacks
                column.extend([None] * (self.count - len(column)))


class ColumnSpill:
    """Accepted rows of one dataset in an anonymous temporary file, as pickled :class:`Columns` chunks.

    The file has no name (it disappears when closed or when the process ends, even killed); it lives in
    ``folder``, the run's output folder, so it uses the output's file system.
    """

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.handle = tempfile.TemporaryFile(dir=folder, prefix=".sdtm.", suffix=".tmp")
        self.chunks = 0

    def write(self, columns: Columns) -> None:
        """Append one chunk."""
        pickle.dump((columns.count, columns.values), self.handle, protocol=pickle.HIGHEST_PROTOCOL)
        self.chunks += 1

    def read(self) -> Iterator[Columns]:
        """The chunks in the order written (the file stays as it is)."""
        self.handle.seek(0)
        for _ in range(self.chunks):
            columns = Columns()
            columns.count, columns.values = pickle.load(self.handle)
            yield columns
        self.handle.seek(0, os.SEEK_END)

    def close(self) -> None:
        """Remove the file."""
        self.handle.close()


def _assemble(name: str, stored: Columns) -> Dataset:
    """One dataset from its stored columns (emptied: they become the rows): variables, cells, sorted rows as dicts."""
    count = stored.count
    used = {var for var, column in stored.values.items()
            if any(column) or column.count(None) + column.count("") < count}
    variables = _dataset_variables(name, used)
    names = [v.name for v in variables]
    keys = [k for k in sort_keys(name, names) if k in names]
    columns = [_column(stored.values.get(v.name), v.type == "Num", count) for v in variables]
    stored.values.clear()  # the columns the dataset does not use go now
    if keys and count > 1:
        sortable = list(zip(*(_sortable_column(columns[names.index(k)]) for k in keys)))
        order = sorted(range(count), key=sortable.__getitem__)
        del sortable
        columns = [list(map(column.__getitem__, order)) for column in columns]
    table = [dict(zip(names, r)) for r in zip(*columns)]
    return Dataset(name, metadata.dataset_label(name), variables, table, keys, metadata.dataset_class(name),
                   metadata.domain_meta(name).structure, dict(zip(names, columns)))


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
