"""The global step of each embedding row's last update, kept in a slot's rows.

`LazyAdam(row_momentum="per_step")` keeps no first moment, so its `momentum` slot holds,
in every column of a row, the step `t` (`optimizer.iterations + 1`) at which the row was
last updated: a whole number from 1 up. A row whose slot holds anything else (zeros: a
row never updated, a reset row, or a checkpoint written before the slot held steps; or a
first moment written by `row_momentum="per_lookup"`) has no known last step.

The steps are exact in a float32 slot up to 2**24 (16,777,216) steps; past that they
round to the nearest representable number (a step of a few global steps at 2**26).
"""

import tensorflow as tf


def last_steps(slot_rows, step):
    """The step of each row's last update, 0 where unknown.

    Args:
        slot_rows: `(U, ...)` rows of the slot holding the steps.
        step: the current global step `t` (a scalar of `slot_rows`' dtype). A value
            `>= t` is not a past step (it cannot come from this run's past updates)
            and reads as unknown.

    Returns:
        `(U, 1, ...)`: the last step (broadcastable against `slot_rows`), or 0.
    """
    first = slot_rows[:, :1]
    same = tf.reduce_all(tf.equal(slot_rows, first), axis=list(range(1, slot_rows.shape.rank)),
                         keepdims=True)
    known = same & tf.equal(first, tf.floor(first)) & (first >= 1) & (first < step)
    return tf.where(known, first, tf.zeros_like(first))


def stamped(slot_rows, step):
    """Rows holding `step` in every column (the value `last_steps` reads back)."""
    return tf.fill(tf.shape(slot_rows), step)
