"""Checks of single config values, as pydantic validators.

Each checker returns the value (normalised) or raises ``Expected`` saying what a valid
value looks like; ``checked(checker)`` turns that into a pydantic error whose location
is the key path and whose message is ``expected ..., got ...``.
"""

from __future__ import annotations

import datetime
import numbers
import re
from typing import Callable

from pydantic import PlainValidator
from pydantic_core import PydanticCustomError

from mtlrec.conventions.key_paths import show

_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DAYS = 'a day range "YYYY-MM-DD:YYYY-MM-DD", a day, or a list of days'


class Expected(Exception):
    """Raised by a value checker: ``expected`` says what a valid value looks like."""

    def __init__(self, expected: str):
        super().__init__(expected)
        self.expected = expected


def checked(check: Callable) -> PlainValidator:
    """A pydantic validator running ``check``; an ``Expected`` becomes ``expected X, got Y``."""

    def validate(value):
        try:
            return check(value)
        except Expected as err:
            raise PydanticCustomError(
                "expected", "expected {expected}, got {got}", {"expected": err.expected, "got": show(value)}
            ) from None

    return PlainValidator(validate)


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def name(value):
    if not isinstance(value, str) or not value.strip():
        raise Expected("a non-empty string")
    return value


def positive_int(value):
    if not is_int(value) or value <= 0:
        raise Expected("a positive integer")
    return int(value)


def non_negative_int(value):
    if not is_int(value) or value < 0:
        raise Expected("a non-negative integer")
    return int(value)


def threads(value):
    """A thread count: ``auto`` or a non-negative integer (0: TensorFlow's default)."""
    if value == "auto":
        return value
    if not is_int(value) or value < 0:
        raise Expected("auto or a non-negative integer (0: TensorFlow's default, one thread per core)")
    return int(value)


def positive_number(value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise Expected("a positive number")
    return float(value)


def non_negative_number(value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < float("inf"):
        raise Expected("a non-negative number")
    return float(value)


_MINUTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:m|min|mins|minute|minutes)\s*$")


def export_every(value):
    """Every N partitions (a positive integer) or every N minutes (``"30min"``, ``"30m"``);
    returns the int or the string as written."""
    expected = 'a number of partitions (a positive integer) or of minutes ("30min")'
    if is_int(value):
        if value <= 0:
            raise Expected(expected)
        return int(value)
    if isinstance(value, str):
        m = _MINUTES_RE.match(value)
        if m and float(m.group(1)) > 0:
            return value
    raise Expected(expected)


def every_minutes(value) -> float | None:
    """The minutes of an ``export_every`` value (None: a number of partitions)."""
    if is_int(value):
        return None
    return float(_MINUTES_RE.match(value).group(1))


def partition(value):
    """A day or an hour as ``dt=YYYY-MM-DD[/hour=HH]`` (or ``YYYY-MM-DD[THH]``) -> its key."""
    from mtlrec.data_pipeline.partition_keys import parse_partition

    if isinstance(value, (datetime.date, datetime.datetime)):
        return day(value)
    try:
        return parse_partition(value)
    except ValueError:
        raise Expected("a partition as dt=YYYY-MM-DD/hour=HH or dt=YYYY-MM-DD") from None


def boolean(value):
    if not isinstance(value, bool):
        raise Expected("true or false")
    return value


def optional(check: Callable) -> Callable:
    def checker(value):
        if value is None:
            return None
        try:
            return check(value)
        except Expected as err:
            raise Expected(f"{err.expected} or null") from None

    return checker


def choice(*choices) -> Callable:
    def checker(value):
        if value not in choices:
            raise Expected("one of " + ", ".join(map(str, choices)))
        return value

    return checker


def mapping(value):
    if not isinstance(value, dict):
        raise Expected("a mapping")
    return value


def task_list(value):
    if not isinstance(value, list) or not value:
        raise Expected("a non-empty list of tasks ({name, label, ...})")
    return value


def string_list(value):
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise Expected("a list of column names")
    return list(value)


def funnel(value):
    expected = "a list of [upper, lower] label pairs, e.g. [[click, conversion]]"
    if not isinstance(value, (list, tuple)):
        raise Expected(expected)
    pairs = []
    for pair in value:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(x, str) and x for x in pair):
            raise Expected(expected)
        pairs.append([pair[0], pair[1]])
    return pairs


def day(value) -> str:
    """A day as ``YYYY-MM-DD`` (YAML turns an unquoted date into a ``date``)."""
    if isinstance(value, datetime.datetime):
        value = value.date()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, str) and _DAY_RE.match(value):
        try:
            datetime.date.fromisoformat(value)
            return value
        except ValueError:
            pass
    raise Expected("a day as YYYY-MM-DD")


def _each_day(values) -> list:
    try:
        return [day(v) for v in values]
    except Expected:
        raise Expected(_DAYS) from None


def days(value):
    """``"A:B"`` (inclusive range), one day, or a list of days -> ``str`` range or list."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise Expected(_DAYS + " (got an empty list)")
        return _each_day(value)
    if isinstance(value, str) and ":" in value:
        parts = value.split(":")
        if len(parts) != 2:
            raise Expected(_DAYS)
        start, end = _each_day(p.strip() for p in parts)
        if start > end:
            raise Expected(_DAYS + f" with start <= end ({start} > {end})")
        return f"{start}:{end}"
    return _each_day([value])


def parse_days(value):
    """``"A:B"`` (inclusive range), one day, or a list of days -> ``str`` range or list.

    Raises ``ValueError`` saying what was expected.
    """
    try:
        return days(value)
    except Expected as err:
        raise ValueError(f"expected {err.expected}, got {show(value)}") from None
