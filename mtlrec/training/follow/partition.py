"""One complete partition as a ``PartitionSource`` lists it."""

from __future__ import annotations

import dataclasses

from mtlrec.data_pipeline.partition_keys import label


@dataclasses.dataclass(frozen=True)
class Partition:
    """A complete partition.

    Attributes:
        key: ``YYYY-MM-DDTHH`` (an hour) or ``YYYY-MM-DD`` (a day).
        ready_at: when it became complete (seconds since the epoch: the done marker's
            modification time, else its newest data file's).
        fingerprint: a digest of its data files (names, sizes, modification times): a
            partition rewritten after it was trained has another one.
    """

    key: str
    ready_at: float
    fingerprint: str

    @property
    def label(self) -> str:
        return label(self.key)
