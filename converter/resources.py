"""Locate the data folders (mappings/, schemas/) in a source checkout or an installed package."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    """Return the folder ``name`` ("mappings" or "schemas").

    In a source checkout it is the top-level folder beside ``converter/``; in an installed package the
    build copies it to ``converter/_data/<name>`` (see setup.cfg ``package_dir``).
    """
    checkout = _HERE.parent / name
    if checkout.is_dir() and (_HERE.parent / "setup.cfg").is_file():
        return checkout
    return _HERE / "_data" / name


def schema_path(name: str) -> Path:
    """Path of a file under schemas/."""
    return data_dir("schemas") / name


def mappings_dir() -> Path:
    """The default mapping set shipped with CaseBridge."""
    return data_dir("mappings")
