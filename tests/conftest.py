"""Shared fixtures: the repository root and the public reference material beside it (../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"


def reference_path(*parts: str) -> Path:
    """A path under ../shared/reference; skips the calling test (with the reason) when it is absent."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference material not available: {path} (expected ../shared/reference beside the checkout)")
    return path


@pytest.fixture
def root() -> Path:
    """The repository root."""
    return ROOT
