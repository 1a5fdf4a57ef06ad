"""The one issue model every reader, mapper and validator reports with."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding.

    ``rule`` is a stable dotted id (``case.schema``, ``sdtm.ct``, ``fhir.profile.required``…);
    ``location`` says where: ``file:line:col`` for inputs and mapping files, ``AE[USUBJID=X,AESEQ=1].AETOXGR``
    for SDTM cells, ``Observation/<id>.valueQuantity`` for FHIR elements.
    """

    severity: Severity
    rule: str
    message: str
    location: str = ""

    def to_dict(self) -> dict[str, str]:
        """Plain dict for JSON reports."""
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{where}{self.severity}: {self.message} [{self.rule}]"


def has_errors(issues: Iterable[Issue]) -> bool:
    """True when any issue is an error."""
    return any(i.severity == "error" for i in issues)


def dataset_of(location: str) -> str:
    """The SDTM dataset an issue location names (``AE`` of ``AE[USUBJID=X,AESEQ=1].AETOXGR`` or ``AE.AETOXGR``)."""
    return location.split("[")[0].split(".")[0]


def location_key(issue: Issue) -> tuple[str, int, int, str]:
    """Sort key: file, then line and column as numbers (``f:10:2`` after ``f:9:5``)."""
    head, _, rest = issue.location.partition(":")
    nums = [int(n) if n.isdigit() else 0 for n in (rest.split(":") + ["0", "0"])[:2]]
    return head, nums[0], nums[1], issue.message
