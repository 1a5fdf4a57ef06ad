"""The canonical case: loading case files with positions, schema and semantic checks, dates."""

from converter.case.model import Case

__all__ = ["Case"]
