"""Day partitions in Hive layout: ``ROOT/dt=YYYY-MM-DD/<files>``, and hours in
``ROOT/dt=YYYY-MM-DD/hour=HH/<files>`` (``partition_keys``: an hour's key is ``YYYY-MM-DDTHH``;
every function taking a day also takes an hour key).

`ROOT` is a local (or mounted) path or a URI (``s3://bucket/prefix``, ...): see `filesystems`.
Data files of a day are ``*.parquet`` or ``*.tfrecord`` / ``*.tfrecords`` (and
their ``.gz`` forms: ``tf.train.Example``, ``.gz`` meaning GZIP); names starting with ``.`` or ``_``
(temporary files, ``_SUCCESS``) are ignored. Files are read in name order.
"""

import datetime
import os
import re

from mtlrec.data_pipeline import filesystems, partition_keys
from mtlrec.data_pipeline.data_validation_error import DataValidationError

FORMATS = ("parquet", "tfrecord")
EXTENSIONS = {
    "parquet": (".parquet",),
    "tfrecord": (".tfrecord", ".tfrecords", ".tfrecord.gz", ".tfrecords.gz"),
}
_DAY_DIR = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
_HOUR_DIR = re.compile(r"^hour=(\d{2})$")


def check_fmt(fmt):
    if fmt not in FORMATS:
        raise ValueError(f"Expected fmt to be one of {FORMATS}. Received: fmt={fmt!r}")
    return fmt


def parse_day(day, what="day"):
    """Validate a ``YYYY-MM-DD`` string and return it as a `datetime.date`."""
    try:
        if not isinstance(day, str) or len(day) != 10:
            raise ValueError
        return datetime.date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"Expected {what} as YYYY-MM-DD. Received: {what}={day!r}") from None


def day_dir(root, day):
    """The directory of a day (``dt=YYYY-MM-DD``) or an hour key (``dt=YYYY-MM-DD/hour=HH``)."""
    if partition_keys.is_hour(day):
        return filesystems.join(root, *partition_keys.relative_dir(day).split("/"))
    parse_day(day)
    return filesystems.join(root, f"dt={day}")


def list_hours(root, day):
    """Sorted hour keys (``YYYY-MM-DDTHH``) of the ``hour=HH`` directories of ``day``."""
    hours = []
    for name, is_dir in filesystems.list_dir(day_dir(root, day)) or ():
        m = _HOUR_DIR.match(name)
        if m and is_dir and int(m.group(1)) < 24:
            hours.append(partition_keys.hour_key(day, int(m.group(1))))
    return sorted(hours)


def list_days(root):
    """Sorted ``YYYY-MM-DD`` days that have a ``dt=`` directory under `root` ([] if none)."""
    entries = filesystems.list_dir(root)
    days = []
    for name, is_dir in entries or ():
        m = _DAY_DIR.match(name)
        if m and is_dir:
            try:
                parse_day(m.group(1))
            except ValueError:
                continue
            days.append(m.group(1))
    return sorted(days)


def select_days(root, day=None, days=None):
    """Days to read: `day` alone (which must exist), or the inclusive range `days="A:B"`
    (either end may be left open: "A:", ":B"), or every day present when both are None.
    Raises `DataValidationError` when nothing matches."""
    present = list_days(root)
    if day is not None and days is not None:
        raise ValueError(f"Give day or days, not both. Received: day={day!r}, days={days!r}")
    if day is not None and partition_keys.is_hour(day):
        partition_keys.split_key(day)
        if not filesystems.is_dir(day_dir(root, day)):
            raise DataValidationError(f"partition {partition_keys.label(day)} missing", file=day_dir(root, day))
        return [day]
    if day is not None:
        parse_day(day)
        if day not in present:
            raise DataValidationError(f"day {day} missing (days present: {_short(present)})", file=day_dir(root, day))
        return [day]
    if days is None:
        selected = present
    else:
        if not isinstance(days, str) or days.count(":") != 1:
            raise ValueError(f'Expected days as "A:B" (YYYY-MM-DD, inclusive, either end optional). Received: days={days!r}')
        lo, hi = days.split(":")
        lo = parse_day(lo, "days start") if lo else None
        hi = parse_day(hi, "days end") if hi else None
        selected = [
            d for d in present
            if (lo is None or parse_day(d) >= lo) and (hi is None or parse_day(d) <= hi)
        ]
    if not selected:
        raise DataValidationError(f"no day partitions match {days or 'any day'} (days present: {_short(present)})", file=os.fspath(root))
    return selected


def resolve_days(root, days):
    """`days` as a list: one day "YYYY-MM-DD", a range "A:B", a list of days, or None (all)."""
    if days is None:
        return select_days(root)
    if isinstance(days, str):
        return select_days(root, days=days) if ":" in days else select_days(root, day=days)
    out = []
    for d in days:
        out += select_days(root, day=d)
    return out


def day_files(root, day, fmt):
    """Data files of one day in `fmt`, sorted; `DataValidationError` if the day is missing or has none."""
    check_fmt(fmt)
    if fmt == "tfrecord":
        filesystems.check_tensorflow_reads(root)
    path = day_dir(root, day)
    entries = filesystems.list_dir(path)
    if entries is None:
        raise DataValidationError(f"{_what(day)} missing (no directory)", file=path)
    names = sorted(name for name, _ in entries)
    files = [filesystems.join(path, n) for n in names if not n.startswith((".", "_")) and file_format(n) == fmt]
    if not files:
        raise DataValidationError(
            f"{_what(day)} is empty: no {fmt} files (reading names ending {', '.join(EXTENSIONS[fmt])}; "
            f"files present: {_short(names)})",
            file=path,
        )
    return files


def file_format(name):
    """'parquet', 'tfrecord' or None, from a file name."""
    for fmt, extensions in EXTENSIONS.items():
        if os.fspath(name).endswith(extensions):
            return fmt
    return None


def compression_of(path):
    """TFRecord compression type from the file name."""
    return "GZIP" if os.fspath(path).endswith(".gz") else ""


def _short(items, n=5):
    if not items:
        return "none"
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _what(key):
    """``day 2024-01-01`` or ``partition dt=2024-01-01/hour=03`` (for messages)."""
    return f"partition {partition_keys.label(key)}" if partition_keys.is_hour(key) else f"day {key}"
