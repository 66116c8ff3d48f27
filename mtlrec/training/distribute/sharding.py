"""Which part of a day each worker of a multi-worker run reads.

Every worker steps in lock-step (each step is one collective all-reduce), so every
worker must see the same number of batches, and together they must see each global
batch once:

- **by file** (at least as many files as workers): worker ``w`` reads files ``w, w+W,
  ...`` in batches of ``batch_size / W``, cycling over its files, for exactly
  ``ceil(rows / batch_size)`` steps per epoch (the day's row count from validation), so
  each step is one global batch even when the files hold different numbers of rows;
- **by record** (fewer files than workers): every worker reads the same shuffled stream of
  global batches and keeps its own contiguous slice of each; the workers' slices together
  are exactly the batch a single process would train on, so a run gives the same model as
  a single-process run with the same global batch (up to floating-point summation order).
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Sharding:
    """This worker's place in the cluster: ``index`` of ``count`` workers."""

    index: int = 0
    count: int = 1

    @property
    def active(self) -> bool:
        return self.count > 1


def sharding_of(strategy) -> Sharding:
    """The worker index and count of a ``tf.distribute`` strategy (1 worker without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return Sharding()
    spec = resolver.cluster_spec().as_dict()
    workers = [("chief", i) for i in range(len(spec.get("chief", [])))]
    workers += [("worker", i) for i in range(len(spec.get("worker", [])))]
    if len(workers) <= 1:
        return Sharding()
    return Sharding(workers.index((resolver.task_type, resolver.task_id)), len(workers))


def mode(num_files: int, sharding: Sharding) -> str:
    """``"file"`` when every worker gets at least one file, else ``"record"``."""
    return "file" if num_files >= sharding.count else "record"


def per_worker_batch(batch_size: int, sharding: Sharding) -> int:
    if batch_size % sharding.count:
        raise ValueError(
            f"training.batch_size: the global batch {batch_size} must be divisible by the "
            f"number of workers ({sharding.count})"
        )
    return batch_size // sharding.count


def steps_per_pass(rows: int, batch_size: int) -> int:
    return math.ceil(rows / batch_size)


def record_slice(dataset: tf.data.Dataset, sharding: Sharding) -> tf.data.Dataset:
    """This worker's contiguous slice of every global batch. A short last batch is split as
    evenly as the rows allow; one with fewer rows than workers gives each worker one row
    (some rows twice: an empty share would make a NaN mean loss)."""
    index, count = sharding.index, sharding.count

    def take(features, labels):
        rows = tf.shape(next(iter(labels.values())))[0]
        few = rows < count
        start = tf.where(few, index % rows, (rows * index) // count)
        end = tf.where(few, start + 1, (rows * (index + 1)) // count)
        cut = lambda x: x[start:end]  # noqa: E731
        return tf.nest.map_structure(cut, features), tf.nest.map_structure(cut, labels)

    return dataset.map(take)
