"""The public Python API: everything the CLI does, scripts and other engines can call directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from converter.case.loader import iter_input_paths, load_record, read_records
from converter.case.model import Case
from converter.errors import CaseBridgeError
from converter.validate.issues import Issue


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
