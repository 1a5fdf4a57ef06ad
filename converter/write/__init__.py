"""SDTM output: SAS XPORT v5, Dataset-JSON 1.1 and CSV per dataset, plus Define-XML 2.1, all written atomically.

Layout under ``out_dir``::

    sdtm/<dataset>.xpt        sdtm/json/<dataset>.json        sdtm/csv/<dataset>.csv        sdtm/define.xml
"""

from __future__ import annotations

from collections.abc import Iterator, Set
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from converter.errors import CaseBridgeError
from converter.mapping.terminology import Terminology
from converter.sdtm.model import Dataset, Study
from converter.validate.issues import Issue, has_errors
from converter.write.atomic import StagedFiles, reproducible_timestamp
from converter.write.csv_out import csv_bytes, csv_header, csv_rows
from converter.write.dataset_json import DATASET_JSON_TAIL, dataset_json_bytes, dataset_json_head, dataset_json_rows
from converter.write.define_xml import (ColumnMeta, ColumnStats, DatasetDefine, DefineParts, column_meta,
                                       define_xml_from_summaries, describe_dataset, describe_part, summarise_dataset)
from converter.write.xpt import check_xpt, xpt_bytes, xpt_header, xpt_observations, xpt_padding

__all__ = ["FORMATS", "StudyWriter", "dataset_paths", "write_study"]

#: Output formats in the order they are written; ``define.xml`` points at the first one chosen.
FORMATS = ("xpt", "json", "csv")


def dataset_paths(sdtm_dir: Path, name: str) -> dict[str, Path]:
    """Where each format puts dataset ``name`` under ``sdtm_dir``."""
    low = name.lower()
    return {"xpt": sdtm_dir / f"{low}.xpt", "json": sdtm_dir / "json" / f"{low}.json",
            "csv": sdtm_dir / "csv" / f"{low}.csv"}


def _encode(fmt: str, dataset: Dataset, study: Study, columns: list[ColumnMeta], created: datetime) -> bytes:
    if fmt == "xpt":
        return xpt_bytes(dataset, columns, created)
    if fmt == "json":
        return dataset_json_bytes(dataset, study, columns, created)
    return csv_bytes(columns)


class Parts(Protocol):
    """A dataset read a part of its rows at a time (:class:`converter.sdtm.build.DatasetParts`)."""

    shell: Dataset  # the dataset without its rows
    count: int  # its number of rows
    mergeable: bool  # whether ``parts(ordered=True)`` can give the rows in order

    def parts(self, ordered: bool) -> Iterator[Dataset]:
        """The rows a part at a time (``ordered``: in the dataset's order), each part's rows holding its variables."""
        ...


def _stage(staging: StagedFiles, files: dict[Path, bytes]) -> OSError | None:
    """Stage ``files``; an error ends the staging (what was staged is dropped) and is returned, not raised."""
    try:
        for path, data in files.items():
            staging.add(path, data)
    except OSError as exc:
        staging.discard()
        return exc
    return None


def write_study(study: Study, out_dir: Path, terminology: Terminology,
                formats: Set[str] = frozenset({"xpt", "json"}),
                created: datetime | None = None) -> tuple[list[Path], list[Issue]]:
    """Write every dataset of ``study`` in ``formats`` (``xpt``, ``json``, ``csv``) plus ``define.xml``.

    A dataset whose guards report an error is refused: none of its files is written, files of the same name
    left by an earlier run are removed (define.xml would no longer describe them), and the issues say why.
    define.xml describes exactly the datasets written. Returns the paths written and every issue found;
    nothing is written when no known format is chosen or the timestamp is invalid.
    """
    with StudyWriter(study, out_dir, terminology, formats, created) as writer:
        for dataset in sorted(study.datasets.values(), key=lambda d: d.name):
            writer.add(dataset)
        return writer.finish()


class WriterFound(NamedTuple):
    """What a :class:`StudyWriter` did (picklable): issues, staged (temporary, target) files, define.xml
    summaries, stale files to remove, the first write error."""

    issues: list[Issue]
    staged: list[tuple[Path, Path]]
    summaries: list[DatasetDefine]
    stale: list[Path]
    failure: OSError | None


class StudyWriter:
    """:func:`write_study` one dataset at a time, so a caller can build, write and let go of each in turn.

    ``study`` gives the ids (its datasets are not read); :meth:`add` the datasets in name order, then
    :meth:`finish`. Files are staged as they are encoded and renamed into place by :meth:`finish`; leaving
    the ``with`` block without finishing removes what was staged.
    """

    def __init__(self, study: Study, out_dir: Path, terminology: Terminology,
                 formats: Set[str] = frozenset({"xpt", "json"}), created: datetime | None = None):
        self.study = Study(study.study_id, {}, study.ct_version, study.sdtmig_version)
        self.terminology = terminology
        self.sdtm_dir = Path(out_dir) / "sdtm"
        self.issues: list[Issue] = []
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown:
            self.issues.append(Issue("error", "sdtm.write.format",
                                     f"unknown output format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}"))
        self.chosen = [f for f in FORMATS if f in formats]
        self.stamp: datetime | None = None
        if self.chosen:
            try:
                self.stamp = reproducible_timestamp(created)
            except CaseBridgeError as exc:
                self.issues += exc.issues
        self.staging = StagedFiles()  # each dataset's files are staged as soon as they are encoded
        self.failure: OSError | None = None
        self.summaries: list[DatasetDefine] = []
        self.stale: list[Path] = []
        self.setup = len(self.issues)  # issues of the options, not of a dataset

    def __enter__(self) -> StudyWriter:
        return self

    def written(self) -> WriterFound:
        """What :meth:`add` did so far, for :meth:`merge` into another writer of the same study and options.

        The staged files become the caller's to commit or discard (this writer forgets them).
        """
        staged = list(self.staging.staged)
        self.staging.staged.clear()
        return WriterFound(self.issues[self.setup:], staged, self.summaries, self.stale, self.failure)

    def merge(self, found: WriterFound) -> None:
        """Take what another writer of the same study wrote (its datasets come next in name order)."""
        self.issues += found.issues
        self.staging.staged += found.staged
        self.summaries += found.summaries
        self.stale += found.stale
        self.failure = self.failure or found.failure

    def __exit__(self, *exc: object) -> None:
        self.staging.discard()

    def add(self, dataset: Dataset) -> None:
        """Check, encode and stage one dataset's files (or refuse it); only its define.xml summary is kept."""
        if self.stamp is None:
            return
        metas, found = describe_dataset(dataset)
        if "xpt" in self.chosen:
            found += check_xpt(dataset, metas)
        self.issues.extend(found)
        paths = dataset_paths(self.sdtm_dir, dataset.name)
        content: dict[Path, bytes] = {}
        if not has_errors(found):
            try:
                content = {paths[f]: _encode(f, dataset, self.study, metas, self.stamp) for f in self.chosen}
            except CaseBridgeError as exc:
                self.issues.extend(exc.issues)
        if not content:
            self.issues.append(Issue("error", "sdtm.write.refused",
                                     f"{dataset.name} was not written: fix the errors above (long or non-ASCII text "
                                     "can move to SUPP--)", dataset.name))
            self.stale.extend(p for p in paths.values() if p.exists())
            return
        self.failure = self.failure or _stage(self.staging, content)
        self.summaries.append(summarise_dataset(dataset, metas))

    def add_parts(self, dataset: Parts) -> bool:
        """:meth:`add` for a dataset read a part at a time; the same files and define.xml summary, byte for byte.

        Memory holds a part, not the dataset. Returns False, having staged and kept nothing, when the dataset
        must be given to :meth:`add` whole: a part has a problem (issues name rows of the whole dataset), a
        value cannot be encoded, a file cannot be written, or the rows cannot be given in order.
        """
        if self.stamp is None:
            return True
        if not dataset.mergeable:
            return False
        shell = dataset.shell
        stats = [ColumnStats() for _ in shell.variables]
        for part in dataset.parts(ordered=False):  # the metadata: any order will do
            found_stats, found = describe_part(part)
            if not found and "xpt" in self.chosen:
                found = check_xpt(part, [column_meta(v, st, None, part.column(v.name))
                                         for v, st in zip(shell.variables, found_stats)])
            if found:
                return False
            for total, more in zip(stats, found_stats):
                total.merge(more)
        keys = {k: i + 1 for i, k in enumerate(shell.keys)}
        metas = [column_meta(v, st, keys.get(v.name), []) for v, st in zip(shell.variables, stats)]
        summary = DefineParts(shell, metas)
        staging = StagedFiles(self.staging.durable)
        paths = dataset_paths(self.sdtm_dir, shell.name)
        try:
            with ExitStack() as stack:
                files = {fmt: stack.enter_context(staging.writing(paths[fmt])) for fmt in self.chosen}
                written = self._write_parts(dataset, metas, summary, files)
        except (CaseBridgeError, OSError):
            written = False
        if not written:
            staging.discard()
            return False
        self.staging.take(staging)
        self.summaries.append(summary.finish())
        return True

    def _write_parts(self, dataset: Parts, metas: list[ColumnMeta], summary: DefineParts,
                     files: dict[str, BinaryIO]) -> bool:
        """Encode the rows of ``dataset`` in order into ``files`` (open by format) and ``summary``.

        False when the dataset must be added whole after all: its last record is blank (a warning names it).
        """
        shell, stamp = dataset.shell, self.stamp
        xpt, json, csv = files.get("xpt"), files.get("json"), files.get("csv")
        if xpt is not None:
            xpt.write(xpt_header(shell, metas, stamp))
        if json is not None:
            json.write(dataset_json_head(shell, self.study, metas, dataset.count, stamp))
        if csv is not None:
            csv.write(csv_header(metas))
        size, rows, last = 0, 0, None
        for part in dataset.parts(ordered=True):
            columns = [replace(meta, values=part.column(meta.name)) for meta in metas]
            summary.add(columns)
            if xpt is not None:
                observations = xpt_observations(shell, columns)
                xpt.write(observations)
                size += len(observations)
            if json is not None:
                text = dataset_json_rows(columns)
                json.write(b"," + text if rows and text else text)
            if csv is not None:
                csv.write(csv_rows(columns))
            rows += len(columns[0].values) if columns else 0
            last = columns
        if xpt is not None:
            if last and all(m.variable.type == "Char" and not m.values[-1] for m in last):
                return False
            xpt.write(xpt_padding(size))
        if json is not None:
            json.write(DATASET_JSON_TAIL)
        return rows == dataset.count

    def finish(self) -> tuple[list[Path], list[Issue]]:
        """Stage define.xml, put every staged file in place, remove stale files; the paths written and all issues."""
        issues, sdtm_dir = self.issues, self.sdtm_dir
        if self.stamp is None:
            return [], issues
        failure = self.failure
        result: list[Path] = []
        try:
            if self.summaries:
                define, found = define_xml_from_summaries(self.study, self.summaries, self.terminology, self.stamp,
                                                          leaf_format=self.chosen[0])
                issues.extend(found)
                failure = failure or _stage(self.staging, {sdtm_dir / "define.xml": define})
            elif (sdtm_dir / "define.xml").exists():
                self.stale.append(sdtm_dir / "define.xml")
            if failure is None:
                try:
                    result = self.staging.commit()
                except OSError as exc:
                    failure = exc
        finally:
            self.staging.discard()
        if failure is not None:
            issues.append(Issue("error", "sdtm.write.io",
                                f"could not write the SDTM output: {failure.strerror or failure}",
                                str(failure.filename or sdtm_dir)))
            return [], issues
        for path in self.stale:
            try:
                path.unlink(missing_ok=True)
                issues.append(Issue("info", "sdtm.write.stale", "removed a file left by an earlier run", str(path)))
            except OSError as exc:
                issues.append(Issue("warning", "sdtm.write.stale",
                                    f"could not remove a file left by an earlier run: {exc.strerror or exc}", str(path)))
        return result, issues
