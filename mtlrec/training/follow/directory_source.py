"""Hourly Hive partitions under a data root: ``ROOT/dt=YYYY-MM-DD/hour=HH/``."""

from __future__ import annotations

import hashlib

from mtlrec.data_pipeline import filesystems
from mtlrec.data_pipeline.partition_keys import day_of
from mtlrec.data_pipeline.partitions import day_dir, file_format, list_days, list_hours
from mtlrec.training.follow.partition import Partition
from mtlrec.training.follow.partition_source import PartitionSource


class DirectorySource(PartitionSource):
    """The hours of a data root (local or any ``pyarrow.fs`` URI) that are complete: their
    ``marker`` file exists (``data.done_marker``; None: any hour holding data files).

    Args:
        root: the data root.
        fmt: ``parquet`` or ``tfrecord`` (the data files fingerprinted).
        marker: the done marker's file name, or None.
    """

    def __init__(self, root, fmt: str, marker: str | None = "_SUCCESS"):
        self.root = root
        self.fmt = fmt
        self.marker = marker

    def complete(self, start: str) -> list[Partition]:
        first_day = day_of(start)
        found = []
        for day in list_days(self.root):
            if day < first_day:
                continue
            for key in list_hours(self.root, day):
                if key >= start:
                    partition = self.get(key)
                    if partition is not None:
                        found.append(partition)
        return found

    def get(self, key: str) -> Partition | None:
        files = filesystems.file_stats(day_dir(self.root, key))
        if not files:
            return None
        data = sorted(f for f in files if not f[0].startswith((".", "_")) and file_format(f[0]) == self.fmt)
        if self.marker is not None:
            markers = [f for f in files if f[0] == self.marker]
            if not markers:
                return None
            ready_ns = markers[0][2]
        elif not data:
            return None
        else:
            ready_ns = max(f[2] for f in data)
        digest = hashlib.sha256(repr(data).encode()).hexdigest()[:16]
        return Partition(key, ready_ns / 1e9, digest)
