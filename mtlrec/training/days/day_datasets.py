"""The datasets of one day: training (this worker's share of it), evaluation, warmup rows."""

from __future__ import annotations

import hashlib
import logging

logger = logging.getLogger("mtlrec.training")


def _data():
    import mtlrec.data_pipeline as data_pipeline

    return data_pipeline


def _weight_columns(config) -> tuple:
    """The columns of the tasks' row weights (``mtlrec.row_weights``), read beside the labels."""
    from mtlrec.row_weights import weight_columns

    return tuple(weight_columns(config.tasks))


def train_dataset(config, schema: dict, sharding, day: str, rows: int | None):
    """``make(epoch, skip)`` -> the batches of ``day``'s epoch after the first ``skip``,
    shuffled with the day's seed; with several workers, this worker's share
    (``mtlrec.training.distribute.sharding``; ``rows``, the day's validated rows, sets the steps of a
    file shard)."""
    from mtlrec.training.distribute import sharding as shards

    training = config.training
    weights = _weight_columns(config)
    # named only when there are some: a run without row weights reads what it always read
    extra = {"extra_columns": weights} if weights else {}

    def make(epoch: int, skip: int, **kwargs):
        kwargs.setdefault("batch_size", training.batch_size)
        return _data().make_dataset(
            config.data.root, [day], schema, fmt=config.data.format,
            shuffle_buffer=training.shuffle_buffer, seed=day_seed(training.seed, day, epoch),
            deterministic=True, skip_batches=skip, **extra, **kwargs,
        )

    if not sharding.active:
        return make
    try:
        per_worker = shards.per_worker_batch(training.batch_size, sharding)
    except ValueError as err:
        from mtlrec.training.config import config_error

        raise config_error(config, "training.batch_size", str(err)) from None
    from mtlrec.data_pipeline.partitions import day_files

    files = day_files(config.data.root, day, config.data.format)
    if shards.mode(len(files), sharding) == "record":
        logger.info(
            "day %s: %d file(s) for %d workers: sharded by record (worker %d keeps its "
            "slice of each global batch)", day, len(files), sharding.count, sharding.index
        )
        return lambda epoch, skip: shards.record_slice(make(epoch, skip), sharding)
    steps = shards.steps_per_pass(rows, training.batch_size)
    logger.info(
        "day %s: %d files for %d workers: sharded by file (worker %d reads %d of them, "
        "%d steps of %d rows)", day, len(files), sharding.count, sharding.index,
        len(files[sharding.index::sharding.count]), steps, per_worker,
    )
    # each pass over a worker's files ends with a short batch: rebatch the cycled stream
    # so every step is a full share, then skip the steps done (a resumed day)
    return lambda epoch, skip: make(
        epoch, 0, batch_size=per_worker, repeat=True, shard=(sharding.index, sharding.count),
    ).rebatch(per_worker).skip(skip).take(max(steps - skip, 0))


def eval_dataset(config, schema: dict, day: str):
    """``day`` in ``evaluation.batch_size`` batches, in file order, with the extra columns
    and the columns of the row weights."""
    evaluation = config.evaluation
    extras = tuple(evaluation.extras)
    extras += tuple(c for c in _weight_columns(config) if c not in extras)
    return _data().make_dataset(
        config.data.root, [day], schema, fmt=config.data.format, batch_size=evaluation.batch_size,
        deterministic=True, extra_columns=extras,
    )


def warmup_rows(config, schema: dict, day: str | None, rows: int = 3) -> dict | None:
    """The first ``rows`` rows of ``day`` as model inputs (TF Serving's warmup requests);
    None when the day can no longer be read."""
    from mtlrec.data_pipeline import DataValidationError

    if day is None:
        return None
    try:
        dataset = _data().make_dataset(
            config.data.root, [day], schema, fmt=config.data.format, batch_size=rows, deterministic=True,
        )
        features = next(iter(dataset))[0]
    except (DataValidationError, StopIteration) as err:
        logger.warning("export without warmup requests: day %s cannot be read (%s)", day, err)
        return None
    return {name: value.numpy() for name, value in features.items()}


def day_seed(seed: int, day: str, epoch: int) -> int:
    """The shuffle seed of one epoch of one day: same inputs, same order (exact resume)."""
    digest = hashlib.sha256(f"{seed}:{day}:{epoch}".encode()).hexdigest()
    return int(digest[:8], 16)
