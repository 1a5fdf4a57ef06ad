"""The in-memory shape of SDTM datasets that builders produce and validators/writers consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import Literal, Union

Cell = Union[str, float, int, None]


@dataclass(frozen=True, slots=True)
class Variable:
    """One dataset variable's metadata (SDTMIG 3.4 facts plus what this run knows)."""

    name: str
    label: str
    type: Literal["Char", "Num"]
    role: str = ""
    core: Literal["Req", "Exp", "Perm", ""] = ""
    codelist: str = ""          # NCI codelist C-code, e.g. "C66742", or "" when none
    origin: str = "Assigned"   # Define-XML origin type: Collected, Derived, Assigned, Protocol, Predecessor
    length: int | None = None   # bytes for Char (computed by writers when None), 8 for Num


@dataclass(slots=True)
class Dataset:
    """One SDTM dataset: ``name`` upper-case (``AE``, ``SUPPAE``, ``RELREC``), variables in order, rows as dicts."""

    name: str
    label: str
    variables: list[Variable]
    rows: list[dict[str, Cell]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # sort keys, e.g. ["STUDYID", "USUBJID", "AETERM", "AESTDTC"]
    domain_class: str = ""  # SDTMIG class: "Events", "Interventions", "Findings", "Special-Purpose", "Relationship"…
    structure: str = ""     # SDTMIG structure, e.g. "One record per adverse event per subject"
    columns: dict[str, list[Cell]] | None = None  # the rows' values by variable, when assembled column-wise (read-only)

    def column(self, name: str) -> list[Cell]:
        """All values of one variable (do not change the list: it may be the dataset's own column)."""
        if self.columns is not None and name in self.columns:
            return self.columns[name]
        try:
            return list(map(itemgetter(name), self.rows))  # rows assembled by StudyBuilder hold every variable
        except KeyError:
            return [r.get(name) for r in self.rows]


@dataclass(slots=True)
class Study:
    """All datasets of one run (many cases form one study)."""

    study_id: str
    datasets: dict[str, Dataset] = field(default_factory=dict)
    ct_version: str = ""  # e.g. "SDTM CT 2025-03-28"
    sdtmig_version: str = "3.4"
