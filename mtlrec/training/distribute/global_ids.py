"""The ids of a whole global batch on every worker of a multi-worker run, for the
``identity`` and ``dynamic`` lookups to count and admit alike everywhere.

Under ``MultiWorkerMirroredStrategy`` each worker reads only its share of a global batch.
Were each to count its own share, the workers' id maps would admit different ids to the
same rows and drift apart. Instead every step gathers every replica's ids (one collective
all-gather per feature, in replica order: worker 0's share, then worker 1's, ...) before
any lookup, so every worker counts the same global batch and holds the same map. When
each worker's share is its contiguous slice of the batch one process would read (records
sharded, ``mtlrec.training.distribute.sharding``), the gathered ids are that batch's, in its
order, and the maps equal one process's exactly.

Collectives carry numbers only: string ids travel as their bytes (``uint8`` codes and
lengths) and are joined back into the same strings on arrival.
"""

from __future__ import annotations

import tensorflow as tf

#: The one-byte strings, by byte value: bytes back to strings by a gather.
_BYTE_STRINGS = [bytes([i]) for i in range(256)]


def local_ids(strategy, features, observed_ids) -> dict:
    """``observed_ids`` (feature name -> 1-D ids) of this worker's replicas' batches,
    concatenated in replica order (no communication): the global batch's ids on one worker."""
    local = strategy.experimental_local_results(features)
    parts = [observed_ids(part) for part in local]
    return {name: tf.concat([p[name] for p in parts], axis=0) for name in parts[0]}


def gathered_ids(strategy, features, observed_ids) -> dict:
    """``observed_ids`` (feature name -> 1-D ids) of every replica of the cluster,
    concatenated in replica order (an all-gather per feature); call in cross-replica context
    (the step's ``tf.function``, outside ``strategy.run``)."""
    per_replica = strategy.run(observed_ids, args=(features,))
    return {name: _gather(strategy, ids) for name, ids in per_replica.items()}


def _gather(strategy, ids):
    dtype = strategy.experimental_local_results(ids)[0].dtype
    if dtype != tf.string:
        return strategy.gather(ids, axis=0)
    codes, lengths = strategy.run(_to_bytes, args=(ids,))
    codes, lengths = strategy.gather(codes, axis=0), strategy.gather(lengths, axis=0)
    return _from_bytes(codes, lengths)


def _to_bytes(strings):
    """1-D strings -> (their bytes as int32 codes, one after another; each string's length)."""
    split = tf.strings.bytes_split(strings)
    codes = tf.reshape(tf.io.decode_raw(split.flat_values, tf.uint8), [-1])  # one byte each
    return tf.cast(codes, tf.int32), split.row_lengths()


def _from_bytes(codes, lengths):
    """The strings of ``_to_bytes``' codes and lengths."""
    pieces = tf.gather(tf.constant(_BYTE_STRINGS), codes)
    return tf.strings.reduce_join(tf.RaggedTensor.from_row_lengths(pieces, lengths), axis=1)
