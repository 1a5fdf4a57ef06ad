"""One case through the whole pipeline: load → map → FHIR build + validate → SDTM build + validate.

A :class:`Pipeline` holds everything compiled once per process (mapping set, schemas); :meth:`process`
turns one input record into a picklable :class:`CaseResult` so that cases can run in worker processes
and be merged in input order. :func:`stage_output` then writes the case's FHIR files from the process that
converted it, so what goes back to the run is small: status, issues, counts, SDTM rows and where the files are.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from converter.case.loader import Record, load_record
from converter.errors import CaseBridgeError
from converter.fhir.bundle import build_bundle, ndjson_lines
from converter.mapping.engine import MappingSet
from converter.sdtm.ascii import table as ascii_table
from converter.sdtm.build import CaseTable, StudyBuilder, case_tables
from converter.validate.issues import Issue, has_errors
from converter.write.case_files import CaseFiles, NdjsonPiece

STAGES = ("load", "map", "fhir_build", "fhir_validate", "sdtm_build", "sdtm_validate", "write")
#: Cases between two moves of what lives on from case to case out of the garbage collector's sight.
SETTLE_EVERY = 256


@dataclass(frozen=True, slots=True)
class Options:
    """What a conversion produces; every CLI option of ``convert`` maps to one field."""

    to: frozenset[str] = frozenset({"fhir", "sdtm"})
    fhir_bundle: str = "collection"
    study_id: str = "CASEBRIDGE"
    deep: bool = False
    sdtm_formats: frozenset[str] = frozenset({"xpt", "json"})
    fhir_ndjson: bool = False


@dataclass(slots=True)
class CaseResult:
    """What one input record became (picklable; bytes or staged files for FHIR, plain rows for SDTM)."""

    source: str
    text: str
    case_id: str | None = None
    ok: bool = False
    issues: list[Issue] = field(default_factory=list)
    bundle: bytes | None = None  # until stage_output writes it to bundle_file
    resource_counts: dict[str, int] = field(default_factory=dict)  # of the bundle's entries, by type
    resources: list[tuple[str, bytes]] = field(default_factory=list)  # (type, NDJSON line) with fhir_ndjson
    bundle_file: str | None = None  # the staged bundle of a converted case (stage_output)
    ndjson: NdjsonPiece | None = None  # where stage_output put its NDJSON lines
    sdtm: dict[str, CaseTable] = field(default_factory=dict)  # this case's rows per dataset, column by column
    unmapped: list[dict[str, str]] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """Compiled once per process, applied to every case."""

    def __init__(self, mappings: MappingSet, options: Options):
        from converter.validate import fhir as fhir_validate

        self.mappings = mappings
        self.options = options
        self.targets = frozenset(options.to)
        fhir_validate.precompile()
        self.ascii = ascii_table(mappings.folder)  # a bad row fails the run here, located
        gc.freeze()  # the compiled mappings, schemas and tables live for the whole run: keep them out of GC scans

    def process(self, record: Record) -> CaseResult:
        """Run one record through every stage; user errors end up in ``issues``, never raised.

        An unexpected exception fails this case only (reported as ``internal``), never the whole batch.
        """
        if record.error:
            return CaseResult(record.source, record.text, issues=list(record.error))
        try:
            return self._process(record)
        except Exception as exc:  # noqa: BLE001 - one case's internal error must not cost the others
            return CaseResult(record.source, record.text, issues=[Issue(
                "error", "internal", f"internal error while converting this case: {type(exc).__name__}: {exc}",
                record.source)])

    def _process(self, record: Record) -> CaseResult:
        from converter.validate.fhir import validate_bundle
        from converter.validate.sdtm_case import validate_case

        result = CaseResult(record.source, record.text)
        t = result.timings
        clock = time.perf_counter
        start = clock()
        try:
            case = load_record(record)
        except CaseBridgeError as exc:
            result.issues = exc.issues
            t["load"] = clock() - start
            return result
        result.case_id = case.case_id
        t["load"] = (mark := clock()) - start
        terminology = self.mappings.terminology
        mapped = self.mappings.apply(case, self.targets)
        result.unmapped = mapped.unmapped
        result.unused = mapped.unused_facts()
        t["map"] = (now := clock()) - mark
        mark = now
        if "fhir" in self.targets:
            bundle = build_bundle(case.case_id, mapped.resources, self.options.fhir_bundle)
            t["fhir_build"] = (now := clock()) - mark
            mark = now
            result.issues += _locate(validate_bundle(bundle, terminology, deep=self.options.deep), case.source)
            t["fhir_validate"] = (now := clock()) - mark
            mark = now
            result.bundle = orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n"
            counts = result.resource_counts
            for entry in bundle["entry"]:
                rtype = entry["resource"]["resourceType"]
                counts[rtype] = counts.get(rtype, 0) + 1
            if self.options.fhir_ndjson:
                result.resources = ndjson_lines(bundle)
        if "sdtm" in self.targets:
            builder = StudyBuilder(self.options.study_id, terminology.ct_version, self.ascii)
            rows = builder.add(mapped)
            result.issues += _locate(builder.notes, case.source)
            t["sdtm_build"] = (now := clock()) - mark
            mark = now
            # per subject here; dataset-level facts once for the whole study at the end of the run
            result.issues += _locate(validate_case(rows, terminology, self.options.study_id,
                                                   xpt="xpt" in self.options.sdtm_formats), case.source)
            t["sdtm_validate"] = clock() - mark
            result.sdtm = case_tables(builder.rows)
        result.ok = not has_errors(result.issues)
        return result


def _locate(issues: list[Issue], source: str) -> list[Issue]:
    """Prefix output locations with the input they came from."""
    return [Issue(i.severity, i.rule, i.message, f"{source}: {i.location}" if i.location else source)
            for i in issues]


def stage_output(result: CaseResult, files: CaseFiles) -> CaseResult:
    """Write a converted case's bundle and NDJSON lines to the staging folder; drop what the run does not need.

    The bytes and the input text leave the result (the run keeps each record's text for quarantine reports);
    a case that failed writes nothing.
    """
    start = time.perf_counter()
    if result.ok:
        if result.bundle is not None:
            result.bundle_file = files.stage_bundle(result.bundle)
        if result.resources:
            result.ndjson = files.add_ndjson(result.resources)
    result.bundle = None
    result.resources = []
    result.text = ""
    result.timings["write"] = time.perf_counter() - start
    return result


class Settler:
    """Keeps what lives on from case to case out of the garbage collector's full collections.

    The memos of values already judged fill up as cases go by (tens of thousands of entries), and every full
    collection walks all of them: at 10,000 cases that was 10 s of a 155 s run, growing with the run. Every
    :data:`SETTLE_EVERY` cases (:meth:`case_done`), one full collection frees any garbage cycle, then whatever
    is alive is frozen (:func:`gc.freeze`). A frozen object that is let go later is still freed, by reference
    counting; the memos, the run's rows and report hold no reference cycles.
    """

    def __init__(self, every: int = SETTLE_EVERY):
        self.every = every
        self.cases = 0

    def case_done(self) -> None:
        """Count one case; settle the heap every ``every`` cases."""
        self.cases += 1
        if self.cases % self.every == 0:
            gc.collect()
            gc.freeze()


_WORKER: tuple[Pipeline, CaseFiles, Settler] | None = None
_COMPILED: MappingSet | None = None  # set by the parent before it forks its pool: workers inherit it


def share_compiled(mapping_set: MappingSet | None) -> None:
    """Let forked workers reuse the parent's compiled mapping set instead of compiling it again."""
    global _COMPILED
    _COMPILED = mapping_set


def init_worker(mappings_folder: str | None, options: Options, staging: str) -> None:
    """Process-pool initializer: the inherited compiled set (fork), else compile once per worker (spawn).

    ``staging`` is the run's staging folder, where the worker writes its cases' FHIR files.
    """
    global _WORKER
    mapping_set = _COMPILED or MappingSet.load(Path(mappings_folder) if mappings_folder else None)
    _WORKER = (Pipeline(mapping_set, options), CaseFiles(Path(staging)), Settler())


def work(records: list[Record]) -> list[CaseResult]:
    """Process-pool task: convert a few records in order and stage their output (one task, one round trip)."""
    assert _WORKER is not None, "init_worker was not called"
    pipeline, files, settler = _WORKER
    results = []
    for record in records:
        results.append(stage_output(pipeline.process(record), files))
        settler.case_done()
    return results
