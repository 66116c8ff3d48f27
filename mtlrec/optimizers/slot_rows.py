"""Reset the optimizer slots of some rows of a variable (a row given to a new id)."""

import tensorflow as tf

from mtlrec.optimizers._sparse import tf_variable

#: Slot lists of the optimizers in `OPTIMIZERS` (Adam / LazyAdam, Adagrad / LazyAdagrad,
#: SGD with momentum), with the value each starts at.
_SLOTS = (
    ("_momentums", lambda opt: 0.0),
    ("_velocities", lambda opt: 0.0),
    ("_velocity_hats", lambda opt: 0.0),
    ("_accumulators", lambda opt: opt.initial_accumulator_value),
    ("momentums", lambda opt: 0.0),
)


def reset_slot_rows(optimizer, variable, rows):
    """Set rows `rows` of every slot `optimizer` keeps for `variable` back to their
    initial value (0, or Adagrad's `initial_accumulator_value`), as if never updated.

    Returns:
        The number of slot variables reset (0 when the optimizer keeps none for it).
    """
    rows = tf.convert_to_tensor(rows, tf.int64)
    index = optimizer._get_variable_index(variable)
    reset = 0
    for attr, initial in _SLOTS:
        slots = getattr(optimizer, attr, None) or []
        if index >= len(slots) or slots[index] is None:
            continue
        slot = tf_variable(slots[index])
        values = tf.fill(tf.stack([tf.size(rows), tf.shape(slot)[1]]), tf.cast(initial(optimizer), slot.dtype))
        slot.scatter_update(tf.IndexedSlices(values, rows))
        reset += 1
    return reset
