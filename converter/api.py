"""The public Python API: everything the CLI does, scripts and other engines can call directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converter.errors import CaseBridgeError
from converter.validate.issues import Issue

if TYPE_CHECKING:  # every command imports what it needs when it runs: ``casebridge --help`` stays quick
    from converter.case.model import Case
    from converter.run import RunReport


@dataclass(slots=True)
class CheckResult:
    """The outcome of checking one input (file or stream record)."""

    source: str
    case: Case | None
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the input loaded without errors."""
        return self.case is not None


def load_case(path: str | Path) -> Case:
    """Load and check one case file; raises :class:`converter.errors.CaseError` with located issues."""
    from converter.case.loader import load_case as _load

    return _load(path)


def check(inputs: list[str]) -> list[CheckResult]:
    """Load and check every case in ``inputs`` (files, folders, globs, ``-``); never raises for bad input."""
    from converter.case.loader import iter_input_paths, load_record, read_records

    results: list[CheckResult] = []
    for path in iter_input_paths(inputs):
        try:
            for record in read_records(path):
                try:
                    results.append(CheckResult(record.source, load_record(record)))
                except CaseBridgeError as exc:
                    results.append(CheckResult(record.source, None, exc.issues))
        except CaseBridgeError as exc:
            results.append(CheckResult(path, None, exc.issues))
    return results


def convert(inputs: list[str], out: str | Path, **options: Any) -> "RunReport":
    """Convert cases to FHIR and/or SDTM under ``out``; see :func:`converter.run.convert` for the options.

    Bad inputs never raise: they are quarantined and reported. Raises :class:`MappingError` when the
    mapping set does not lint.
    """
    from converter.run import convert as _convert

    return _convert(list(inputs), Path(out), **options)


def explain(case_path: str | Path, field: str, mappings: str | Path | None = None,
            study_id: str = "CASEBRIDGE") -> list[dict[str, Any]]:
    """Where one fact of a case lands: FHIR resource/element and SDTM domain/variable/row, with the mapping line.

    ``field`` is a document path such as ``adverse_events[0].grade`` (``adverse_events.0.grade`` works too).
    """
    import re

    from converter.fhir.bundle import build_bundle
    from converter.mapping.engine import MappingSet
    from converter.sdtm.build import StudyBuilder

    wanted = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", field.strip())
    case = load_case(case_path)
    mapping_set = MappingSet.load(Path(mappings) if mappings else None)
    mapped = mapping_set.apply(case)
    build_bundle(case.case_id, mapped.resources)
    StudyBuilder(study_id, mapping_set.terminology.ct_version).add(mapped)
    out: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for where, origin, current in mapped.touched:
        if not (where == wanted or where.startswith(wanted + ".") or where.startswith(wanted + "[")):
            continue
        if isinstance(current, tuple):
            entry = {"source": where, "standard": "FHIR", "resource": f"{current[0]}/{current[1]}",
                     "element": origin.target}
        else:
            domain = origin.target.split(".")[0]
            seq = current.get(f"{domain}SEQ") if isinstance(current, dict) else None
            entry = {"source": where, "standard": "SDTM", "domain": domain, "variable": origin.target.split(".", 1)[-1],
                     "row": f"USUBJID={current.get('USUBJID')}" + (f", {domain}SEQ={seq}" if seq else "")}
        entry.update({"mapping": f"{origin.file}:{origin.line}", "rule": origin.rule})
        key = tuple(entry.values())
        if key not in seen:
            seen.add(key)
            out.append(entry)
    return out


def lint_mappings(folder: str | Path | None = None) -> list[Issue]:
    """Every problem of a mapping folder (default: the shipped one), located file:line:column."""
    from converter.mapping.lint import lint_folder

    return lint_folder(Path(folder) if folder else None)[1]


def test_mappings(folder: str | Path | None = None) -> list[Any]:
    """Run the ``tests:`` blocks of every mapping file; returns :class:`converter.mapping.testing.TestOutcome`s."""
    from converter.mapping.engine import MappingSet
    from converter.mapping.testing import run_tests

    return run_tests(MappingSet.load(Path(folder) if folder else None))


def document_mappings(out: str | Path, folder: str | Path | None = None) -> list[Path]:
    """Write the mapping specification as ``mapping-spec.md`` and ``mapping-spec.html`` into ``out``."""
    from converter.mapping.doc import html_page, markdown
    from converter.mapping.engine import MappingSet
    from converter.write.atomic import write_text_atomic

    mapping_set = MappingSet.load(Path(folder) if folder else None)
    out = Path(out)
    return [write_text_atomic(out / "mapping-spec.md", markdown(mapping_set)),
            write_text_atomic(out / "mapping-spec.html", html_page(mapping_set))]


def validate(paths: list[str | Path], deep: bool = False, mappings: str | Path | None = None) -> list[Issue]:
    """Validate output made elsewhere: FHIR bundles/resources (JSON), NDJSON, SDTM folders (XPT or Dataset-JSON + define.xml).

    A conversion output folder (with ``fhir/`` and ``sdtm/``) is validated as a whole.
    """
    import orjson

    from converter.mapping.terminology import load_terminology
    from converter.resources import mappings_dir
    from converter.validate.fhir import validate_bundle, validate_ndjson, validate_resource
    from converter.validate.sdtm import read_sdtm_folder, validate_study

    terminology = load_terminology((Path(mappings) if mappings else mappings_dir()) / "terminology")
    issues: list[Issue] = []

    def one_json(path: Path) -> None:
        try:
            doc = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            issues.append(Issue("error", "validate.read", f"not readable JSON: {exc}", str(path)))
            return
        if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
            found = validate_bundle(doc, terminology, deep=deep)
        elif isinstance(doc, dict) and "resourceType" in doc:
            found = validate_resource(doc, terminology)
        else:
            issues.append(Issue("error", "validate.kind", "not a FHIR resource or bundle (no resourceType)", str(path)))
            return
        issues.extend(Issue(i.severity, i.rule, i.message, f"{path}: {i.location}") for i in found)

    def sdtm_folder(path: Path) -> None:
        study, found = read_sdtm_folder(path)
        issues.extend(found)
        if study.datasets:
            issues.extend(Issue(i.severity, i.rule, i.message, f"{path}: {i.location}") for i in validate_study(study, terminology))

    for raw in paths:
        path = Path(raw)
        if not path.exists():
            issues.append(Issue("error", "validate.read", "no such file or folder", str(path)))
        elif path.is_dir() and ((path / "fhir").is_dir() or (path / "sdtm").is_dir()):
            for f in sorted((path / "fhir").glob("*.json")):
                one_json(f)
            if any((path / "fhir" / "ndjson").glob("*.ndjson")):
                issues.extend(validate_ndjson(path / "fhir" / "ndjson", terminology))  # references resolve across files
            if (path / "sdtm").is_dir():
                sdtm_folder(path / "sdtm")
            if (path / "sdtm" / "json").is_dir() and any((path / "sdtm").glob("*.xpt")):
                sdtm_folder(path / "sdtm" / "json")  # both copies are checked, not only the XPT one
        elif path.is_dir() and any(path.glob("*.ndjson")):
            issues.extend(validate_ndjson(path, terminology))
        elif path.is_dir():
            if any(path.glob("*.xpt")) or any(path.glob("*.json")) or (path / "define.xml").exists():
                sdtm_folder(path)
            else:
                issues.append(Issue("error", "validate.kind", "no FHIR JSON, XPT, Dataset-JSON or define.xml found", str(path)))
        elif path.suffix.lower() in (".ndjson", ".jsonl"):
            issues.extend(validate_ndjson(path, terminology))
        elif path.suffix.lower() == ".json":
            one_json(path)
        else:
            issues.append(Issue("error", "validate.kind", "expected a .json/.ndjson FHIR file or an SDTM folder", str(path)))
    return issues
