"""Shared fixtures: the repository root and the public reference material beside it (../shared)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"


_CACHE = Path(tempfile.mkdtemp(prefix="casebridge-test-cache-"))


def pytest_configure(config: pytest.Config) -> None:
    """Generated code is cached in a folder of this test session (and its subprocesses), not the user's."""
    os.environ["XDG_CACHE_HOME"] = str(_CACHE)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)


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
