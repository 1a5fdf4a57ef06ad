"""Exceptions for user errors: one clear, located message, never a traceback."""

from __future__ import annotations

from converter.validate.issues import Issue


class CaseBridgeError(Exception):
    """A user-facing error carrying one or more located issues."""

    def __init__(self, issues: list[Issue] | Issue | str, *, location: str = "", rule: str = "error"):
        if isinstance(issues, str):
            issues = [Issue("error", rule, issues, location)]
        elif isinstance(issues, Issue):
            issues = [issues]
        self.issues: list[Issue] = issues
        super().__init__("\n".join(str(i) for i in issues))


class CaseError(CaseBridgeError):
    """A case report could not be read or is invalid."""


class MappingError(CaseBridgeError):
    """A mapping file is invalid (lint errors)."""
