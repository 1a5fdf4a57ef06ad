"""A conversion run over many inputs: ordering, parallelism, quarantine, atomic output, the run report."""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import re
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson

from converter import __version__
from converter.case.loader import Record, iter_input_paths, read_records
from converter.errors import CaseBridgeError
from converter.mapping.engine import MappingSet
from converter.pipeline import (STAGES, CaseResult, Options, Pipeline, Settler, init_worker, share_compiled, stage_output,
                                work)
from converter.sdtm.build import StudyBuilder
from converter.validate.issues import Issue, has_errors
from converter.write.atomic import reproducible_timestamp, sync_all, write_bytes_atomic, write_chunks_atomic
from converter.write.case_files import CaseFiles, NdjsonAssembler, make_staging, place_bundle, remove_staging

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_BATCH = 4  # records per process-pool task
_IN_FLIGHT_PER_JOB = 4  # tasks queued per worker: keeps workers busy, memory independent of the input size


class _Spill:
    """A JSON array or object written to a temporary file item by item, so a run's memory does not grow with it."""

    def __init__(self, folder: Path, name: str, kind: str, indent: bool = False):
        folder.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.indent = indent  # items laid out as orjson.OPT_INDENT_2 lays out a top-level key's items
        self.count = 0
        self.handle = tempfile.TemporaryFile(dir=folder, prefix=f".{name}.", suffix=".tmp")

    def add(self, value: Any, key: str | None = None) -> None:
        if self.indent:  # a JSON string holds no raw newline: every newline is layout
            body = orjson.dumps(value, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n    ")
        else:
            body = orjson.dumps(value)
        if key is not None:
            body = orjson.dumps(key) + b": " + body
        self.handle.write((b",\n    " if self.count else b"\n    ") + body)
        self.count += 1

    def chunks(self) -> Iterator[bytes]:
        """The finished JSON text, in pieces."""
        yield b"[" if self.kind == "list" else b"{"
        self.handle.seek(0)
        while piece := self.handle.read(1 << 20):
            yield piece
        yield (b"\n  " if self.count else b"") + (b"]" if self.kind == "list" else b"}")

    def value(self) -> Any:
        """What was added, read back (the whole of it in memory)."""
        return orjson.loads(b"".join(self.chunks()))

    def __del__(self) -> None:
        if hasattr(self, "handle"):
            self.handle.close()  # the temporary file is gone with it


@dataclass(slots=True)
class RunReport:
    """What a run did; written as ``report.json`` and summarised by the CLI.

    ``issues`` holds the errors (what failed); every issue — warnings and notes too — is streamed into
    report.json together with the entry of each input and the unmapped and unused facts, so memory stays flat
    however many cases run. ``converted`` and ``failed`` count the inputs.
    """

    converted: int = 0
    failed: int = 0
    issues: list[Issue] = field(default_factory=list)
    issue_counts: dict[str, int] = field(default_factory=dict)
    resource_counts: dict[str, int] = field(default_factory=dict)
    domain_counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    spills: dict[str, _Spill] = field(default_factory=dict)

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """What became of each input, in input order (read back from the report's spill)."""
        return self.spills["inputs"].value() if "inputs" in self.spills else []

    def add_input(self, entry: dict[str, Any]) -> None:
        """Record what became of one input (streamed to the report)."""
        if entry["status"] == "converted":
            self.converted += 1
        else:
            self.failed += 1
        self.spills["inputs"].add(entry)

    @property
    def ok(self) -> bool:
        """True when every input converted and the study-level output is valid."""
        return self.failed == 0 and not has_errors(self.issues)

    def add_issues(self, issues: Iterable[Issue]) -> None:
        """Record issues: counted, streamed to the report, errors kept in memory."""
        for issue in issues:
            key = f"{issue.severity}:{issue.rule}"
            self.issue_counts[key] = self.issue_counts.get(key, 0) + 1
            self.spills["issues"].add(issue)  # orjson writes the dataclass as Issue.to_dict() would
            if issue.severity == "error":
                self.issues.append(issue)

    def report_chunks(self) -> Iterator[bytes]:
        """report.json, streamed: the summary, the inputs, the counts, then every issue, unmapped and unused fact."""
        head = {"casebridge": self.meta, "summary": {"inputs": self.converted + self.failed,
                                                     "converted": self.converted, "failed": self.failed}}
        yield orjson.dumps(head, option=orjson.OPT_INDENT_2)[:-2]  # without the closing "\n}"
        yield b',\n  "inputs": '
        yield from self.spills["inputs"].chunks()
        tail = {"resource_counts": dict(sorted(self.resource_counts.items())),
                "domain_counts": dict(sorted(self.domain_counts.items())),
                "issue_counts": dict(sorted(self.issue_counts.items())),
                "timings_s": {k: round(v, 6) for k, v in self.timings.items()}, "files": self.files}
        yield b"," + orjson.dumps(tail, option=orjson.OPT_INDENT_2)[1:-2]  # its keys, after the inputs
        for name, key in (("issues", "issues"), ("unmapped", "unmapped"), ("unused", "unused_facts")):
            yield b',\n  "' + key.encode() + b'": '
            yield from self.spills[name].chunks()
        yield b"\n}\n"


def _records(paths: list[str]) -> Iterator[Record]:
    """Every case record in input order; an unreadable input becomes a record carrying its error."""
    for path in paths:
        try:
            yield from read_records(path)
        except CaseBridgeError as exc:
            yield Record(path, "", "yaml", error=tuple(exc.issues))


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """``records`` in consecutive lists of ``size`` (the last may be shorter)."""
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def convert(inputs: list[str], out: Path, *, mappings: Path | None = None, to: Iterable[str] = ("fhir", "sdtm"),
            fhir_bundle: str = "collection", fhir_ndjson: bool = False, sdtm_formats: Iterable[str] = ("xpt", "json"),
            study_id: str = "CASEBRIDGE", sdtm_memory_mb: int | None = None, jobs: int = 1, fail_fast: bool = False, deep: bool = False,
            created: datetime | None = None, progress: Callable[[CaseResult], None] | None = None) -> RunReport:
    """Convert every case in ``inputs`` into ``out`` (layout in docs/architecture.md) and return the report.

    ``sdtm_memory_mb`` is how many MB of SDTM rows are held before they spill to temporary files under ``out``
    (None: :data:`converter.sdtm.build.SPILL_BUDGET`); it changes memory use, never the output.
    """
    started = time.perf_counter()
    out = Path(out)
    stamp = reproducible_timestamp(created)
    mapping_set = MappingSet.load(mappings)
    options = Options(frozenset(to), fhir_bundle, study_id, deep, frozenset(sdtm_formats), fhir_ndjson)
    if out.exists() and not out.is_dir():
        raise CaseBridgeError(f"--out {out} exists and is not a folder", location=str(out), rule="usage.out")
    paths = list(iter_input_paths(inputs))  # a glob matching nothing is a usage error, raised before any output
    report = RunReport(meta={
        "version": __version__, "mappings": str(mapping_set.folder), "mappings_sha256": mapping_set.digest,
        "ct_version": mapping_set.terminology.ct_version, "terminology_tables": sorted(mapping_set.terminology.tables),
        "created": stamp.isoformat(), "options": {"to": sorted(options.to), "fhir_bundle": fhir_bundle,
                                                  "sdtm_formats": sorted(sdtm_formats), "study_id": study_id, "jobs": jobs}})
    report.spills = {"inputs": _Spill(out, "inputs", "list", indent=True), "issues": _Spill(out, "issues", "list"),
                     "unmapped": _Spill(out, "unmapped", "object"), "unused": _Spill(out, "unused", "object")}
    records = _records(paths)
    builder = StudyBuilder(study_id, mapping_set.terminology.ct_version, spill_dir=out,  # SDTM rows spill under --out
                           budget=None if sdtm_memory_mb is None else sdtm_memory_mb << 20)
    ndjson = NdjsonAssembler(out / "fhir" / "ndjson") if fhir_ndjson and "fhir" in options.to else None
    staging = make_staging(out)  # where the converting processes write each case's FHIR files
    seen: dict[str, str] = {}
    stage_totals = dict.fromkeys(STAGES, 0.0)

    def results() -> Iterator[tuple[Record, CaseResult]]:
        if jobs <= 1:
            pipeline, files = Pipeline(mapping_set, options), CaseFiles(staging)
            try:
                for record in records:
                    yield record, stage_output(pipeline.process(record), files)
            finally:
                files.close()
            return
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        share_compiled(mapping_set if ctx.get_start_method() == "fork" else None)
        # ProcessPoolExecutor rather than multiprocessing.Pool: Pool's worker-handler thread polls the result
        # pipe too and spins while a result waits to be read, costing the main process ~1 ms of CPU per case
        pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=init_worker,
                                   initargs=(str(mappings) if mappings else None, options, str(staging)))
        try:
            # a bounded window of tasks in flight, in input order (Executor.map would read every input ahead);
            # a task is a few records, so the pool's pickling and thread hand-offs are paid per batch, not per case
            window: deque[tuple[list[Record], Future[list[CaseResult]]]] = deque()
            for batch in _batches(records, _BATCH):
                window.append((batch, pool.submit(work, batch)))
                if len(window) >= jobs * _IN_FLIGHT_PER_JOB:
                    done, pending = window.popleft()
                    yield from zip(done, pending.result())
            while window:
                done, pending = window.popleft()
                yield from zip(done, pending.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # the workers have exited: nothing writes any more
            share_compiled(None)

    produced = results()
    settler = Settler()  # this process's memos (jobs 1) and the rows it keeps, out of the GC's full collections
    try:
        for record, result in produced:
            for name, value in result.timings.items():
                stage_totals[name] += value
            t0 = time.perf_counter()
            if result.ok and result.case_id in seen:
                result.ok = False
                result.issues.append(Issue("error", "case.duplicate", f"case_id {result.case_id!r} was already converted from {seen[result.case_id]}", result.source))
                _refuse(result, ndjson)
            if result.ok:
                seen[result.case_id] = result.source
                _accept(result, out, builder, ndjson, report)
            else:
                _quarantine(result, record.text, out, report)
            stage_totals["write"] += time.perf_counter() - t0
            settler.case_done()
            if progress:
                progress(result)
            if fail_fast and not result.ok:
                break
        produced.close()  # stops the workers (--fail-fast can leave cases in flight)
        t0 = time.perf_counter()
        if ndjson is not None:
            report.files += [str(p) for p in ndjson.commit()]
        if "sdtm" in options.to and builder:
            _write_sdtm(builder, out, mapping_set, set(sdtm_formats), stamp, report, jobs)
        _remove_stale_case_files(out, set(report.files), fhir="fhir" in options.to, ndjson=ndjson is not None)
        sync_all()  # one flush for the per-case files written without fsync
        stage_totals["write"] += time.perf_counter() - t0
    finally:
        produced.close()  # no worker writes into the staging folder any more
        builder.close()  # SDTM spill files of a run that ended early
        if ndjson is not None:
            ndjson.discard()
        remove_staging(staging)
        gc.unfreeze()  # what the run froze (Pipeline, Settler) is the garbage collector's again
    report.timings = {**stage_totals, "total": time.perf_counter() - started}
    report.files.sort()
    write_chunks_atomic(out / "report.json", report.report_chunks())
    report.files.append(str(out / "report.json"))
    return report


def _accept(result: CaseResult, out: Path, builder: StudyBuilder, ndjson: NdjsonAssembler | None,
            report: RunReport) -> None:
    entry: dict[str, Any] = {"source": result.source, "case_id": result.case_id, "status": "converted"}
    if result.bundle_file is not None:
        path = place_bundle(result.bundle_file, out / "fhir" / f"{_SAFE.sub('_', result.case_id)}.bundle.json")
        report.files.append(str(path))
        entry["fhir"] = str(path)
        counts = report.resource_counts
        for rtype, n in result.resource_counts.items():
            counts[rtype] = counts.get(rtype, 0) + n
        if ndjson is not None and result.ndjson is not None:
            ndjson.add(result.ndjson)
    builder.accept(result.sdtm)
    for name, table in result.sdtm.items():
        report.domain_counts[name] = report.domain_counts.get(name, 0) + table.count
    report.add_input(entry)
    report.add_issues(result.issues)
    if result.unmapped:
        report.spills["unmapped"].add(result.unmapped, result.case_id)
    if result.unused:
        report.spills["unused"].add(result.unused, result.case_id)


def _refuse(result: CaseResult, ndjson: NdjsonAssembler | None) -> None:
    """Drop what was staged for a converted case the run refuses (a duplicate case_id): nothing is overwritten."""
    if result.bundle_file is not None:
        os.unlink(result.bundle_file)
        result.bundle_file = None
    if ndjson is not None and result.ndjson is not None:
        ndjson.skip(result.ndjson)


def _quarantine(result: CaseResult, text: str, out: Path, report: RunReport) -> None:
    base = _SAFE.sub("_", Path(result.source.replace("#", "_line")).name) or "input"
    name = f"{base}.{hashlib.sha256(result.source.encode()).hexdigest()[:8]}"  # distinct for same-named inputs
    body = {"source": result.source, "case_id": result.case_id, "issues": [i.to_dict() for i in result.issues],
            "input": text}
    path = write_bytes_atomic(out / "quarantine" / f"{name}.error.json", orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n",
                              durable=False)
    report.files.append(str(path))
    report.add_input({"source": result.source, "case_id": result.case_id, "status": "quarantined",
                          "error": str(path), "errors": sum(1 for i in result.issues if i.severity == "error")})
    report.add_issues(result.issues)


def _write_sdtm(builder: StudyBuilder, out: Path, mapping_set: MappingSet, formats: set[str], stamp: datetime,
                report: RunReport, jobs: int = 1) -> None:
    """Check and write the study a dataset at a time (``jobs`` processes share the datasets)."""
    from converter.study_end import write_study_end

    _remove_stale(out / "sdtm", builder.names())
    paths, issues = write_study_end(builder, out, mapping_set.terminology, formats, stamp, jobs)
    report.add_issues(issues)
    report.files += [str(p) for p in paths]


def _remove_stale_case_files(out: Path, written: set[str], *, fhir: bool, ndjson: bool) -> None:
    """Drop the per-case files an earlier run left in a reused --out that this run did not write.

    Only files of the kinds this run produces: quarantine files always, bundles when it converts to FHIR,
    NDJSON files when it writes NDJSON.
    """
    patterns = ["quarantine/*.error.json", *(["fhir/*.bundle.json"] if fhir else []),
                *(["fhir/ndjson/*.ndjson"] if ndjson else [])]
    for pattern in patterns:
        for path in out.glob(pattern):
            if str(path) not in written:
                path.unlink()


def _remove_stale(sdtm_dir: Path, names: set[str]) -> None:
    """Drop dataset files an earlier run left in a reused --out that this study does not have."""
    keep = {n.lower() for n in names}
    for pattern in ("*.xpt", "json/*.json", "csv/*.csv"):
        for path in sdtm_dir.glob(pattern):
            if path.stem.lower() not in keep:
                path.unlink()
