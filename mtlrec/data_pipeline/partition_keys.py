"""Partition keys: a day ``YYYY-MM-DD`` or an hour ``YYYY-MM-DDTHH``, and their directories.

A day lives in ``ROOT/dt=YYYY-MM-DD/``, an hour in ``ROOT/dt=YYYY-MM-DD/hour=HH/`` (the Hive
layout Spark and Flink write). Keys sort as strings in time order, a day before its hours,
so a run directory can hold days and hours side by side (``state.json``, ``metrics.csv``).
The command line and messages name an hour as its path, ``dt=2024-01-01/hour=03``.
"""

from __future__ import annotations

import datetime
import re

_HOUR_KEY = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2})$")
_PATH = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})(?:/hour=(\d{1,2}))?/?$")
_EXPECTED = "a partition as dt=YYYY-MM-DD[/hour=HH] (or YYYY-MM-DD[THH])"


def is_hour(key: str) -> bool:
    return isinstance(key, str) and _HOUR_KEY.match(key) is not None


def hour_key(day: str, hour: int) -> str:
    return f"{day}T{int(hour):02d}"


def split_key(key) -> tuple[datetime.date, int | None]:
    """``(date, hour)`` of a day key (hour None) or an hour key; ``ValueError`` otherwise."""
    try:
        if not isinstance(key, str):
            raise ValueError
        m = _HOUR_KEY.match(key)
        day, hour = (m.group(1), int(m.group(2))) if m else (key, None)
        if len(day) != 10 or (hour is not None and not 0 <= hour <= 23):
            raise ValueError
        return datetime.date.fromisoformat(day), hour
    except ValueError:
        raise ValueError(f"Expected a partition as YYYY-MM-DD or YYYY-MM-DDTHH. Received: {key!r}") from None


def parse_partition(text) -> str:
    """The key of ``dt=YYYY-MM-DD/hour=HH``, ``dt=YYYY-MM-DD``, ``YYYY-MM-DDTHH`` or
    ``YYYY-MM-DD`` (what ``--until`` takes); ``ValueError`` saying what was expected."""
    if isinstance(text, str):
        m = _PATH.match(text.strip())
        candidate = text.strip()
        if m:
            candidate = m.group(1) if m.group(2) is None else hour_key(m.group(1), int(m.group(2)))
        try:
            split_key(candidate)
            return candidate
        except ValueError:
            pass
    raise ValueError(f"expected {_EXPECTED}, got {text!r}")


def relative_dir(key: str) -> str:
    """``dt=YYYY-MM-DD`` or ``dt=YYYY-MM-DD/hour=HH``: where ``key`` lives under the root."""
    day, hour = split_key(key)
    return f"dt={day.isoformat()}" if hour is None else f"dt={day.isoformat()}/hour={hour:02d}"


def label(key: str) -> str:
    """How messages name a partition: a day as itself, an hour as its path."""
    return relative_dir(key) if is_hour(key) else key


def next_hour(key: str) -> str:
    """The hour after an hour key; after a day key, the first hour of the next day."""
    day, hour = split_key(key)
    start = datetime.datetime.combine(day, datetime.time(hour or 0))
    after = start + datetime.timedelta(hours=1 if hour is not None else 24)
    return hour_key(after.date().isoformat(), after.hour)


def hour_number(key: str) -> int:
    """Hours since the proleptic epoch (an ordinal): consecutive hours differ by one."""
    day, hour = split_key(key)
    return day.toordinal() * 24 + (hour or 0)


def day_of(key: str) -> str:
    """The ``YYYY-MM-DD`` of a day or an hour key."""
    return split_key(key)[0].isoformat()
