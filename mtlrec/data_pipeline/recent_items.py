"""The one rule of sequence features: a row keeps its most recent (last) ``width``
items, in order, left-aligned and padded after them.

Training reads TFRecord lists with ``last_items``; a SavedModel's serving
signatures fit client-padded sequences with ``fit_padded`` (which finds each
row's items and applies ``last_items``), so a row scores as training read it.
"""

import tensorflow as tf


def last_items(values, row_splits, width, fill):
    """(B, width): the last `width` values of each row, padded after them with `fill`
    (dense index arithmetic; cheaper than slicing a RaggedTensor)."""
    lengths = row_splits[1:] - row_splits[:-1]
    kept = tf.minimum(lengths, width)
    start = row_splits[:-1] + lengths - kept
    steps = tf.range(width, dtype=row_splits.dtype)
    mask = steps[None, :] < kept[:, None]
    index = tf.where(mask, start[:, None] + steps[None, :], 0)
    values = tf.concat([values, tf.fill([1], tf.constant(fill, values.dtype))], 0)  # never empty
    return tf.where(mask, tf.gather(values, index), tf.constant(fill, values.dtype))


def fit_padded(x, width, pad):
    """(B, L) rows padded after their items with `pad` (any L, 0 included) -> (B, width).

    A row's items run up to its last value that is not `pad` (a `pad` before it is an
    item, as a null inside a list is in training); the last `width` of them are kept."""
    x = tf.convert_to_tensor(x)
    real = tf.cast(tf.not_equal(x, tf.constant(pad, x.dtype)), tf.int64)
    lengths = tf.reduce_sum(tf.cast(tf.cumsum(real, axis=1, reverse=True) > 0, tf.int64), axis=1)
    rows = tf.RaggedTensor.from_tensor(x, lengths=lengths, row_splits_dtype=tf.int64)
    return last_items(rows.flat_values, rows.row_splits, width, pad)
