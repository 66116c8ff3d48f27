"""Where ``train --follow`` learns which partitions are complete.

The follow loop only asks a source two questions, so a reader of another kind (a Kafka
topic whose offset ranges close into hourly partitions, their offsets kept in the
checkpoint) can stand in for the directory reader without touching the trainer.
"""

from __future__ import annotations

import abc

from mtlrec.training.follow.partition import Partition


class PartitionSource(abc.ABC):
    """The complete partitions of a stream, in key order."""

    @abc.abstractmethod
    def complete(self, start: str) -> list[Partition]:
        """The complete partitions whose key is ``start`` or later, sorted by key."""

    @abc.abstractmethod
    def get(self, key: str) -> Partition | None:
        """Partition ``key`` when it is complete now, else None."""
