"""Partial ISO 8601 dates as case reports state them, and relative timings that stay relative."""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Any

_ISO = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")


def iso_of(value: Any) -> str | None:
    """The calendar date (possibly partial) of a case date value, or None for a purely relative time.

    A date value is either an ISO string or a relative object that may carry ``date``.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        date = value.get("date")
        return date if isinstance(date, str) else None
    return None


@lru_cache(maxsize=4096)  # the same dates recur in a case and across cases
def check_real(text: str) -> str | None:
    """Return a problem message when ``text`` is not a real (possibly partial) date, else None."""
    m = _ISO.match(text)
    if not m:
        return f"{text!r} is not an ISO 8601 date (expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm)"
    year, month, day, hour, minute, second, _ = m.groups()
    if month and not 1 <= int(month) <= 12:
        return f"{text!r} has month {month}: expected 01-12"
    if day:
        try:
            dt.date(int(year), int(month), int(day))
        except ValueError:
            return f"{text!r} is not a real calendar date"
    if hour and (int(hour) > 23 or int(minute) > 59 or (second and int(second) > 59)):
        return f"{text!r} has an impossible time of day"
    return None


def full_date(text: str | None) -> dt.date | None:
    """A complete calendar date, or None when the date is partial or absent."""
    if not text or len(text) < 10:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None


def precedes(a: str, b: str) -> bool:
    """True when ``a`` is certainly after ``b`` — compared at the precision both dates share.

    Used for "end not before start": ``2021-05`` vs ``2021-05-14`` cannot be ordered and is not an error.
    """
    n = min(len(a), len(b), 10)
    return a[:n] > b[:n]


def study_day(date: str | None, reference: str | None) -> int | None:
    """SDTM --DY: days from the reference start (day 1), no day 0; None unless both dates are complete."""
    d, r = full_date(date), full_date(reference)
    if d is None or r is None:
        return None
    delta = (d - r).days
    return delta + 1 if delta >= 0 else delta
