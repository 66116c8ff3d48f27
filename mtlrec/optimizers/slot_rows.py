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


def slots_of(optimizer, variable) -> list:
    """`[(slot, initial value)]`: every slot `optimizer` keeps for `variable` (the Keras
    variables) with the value it starts at (0, or Adagrad's `initial_accumulator_value`)."""
    index = optimizer._get_variable_index(variable)
    found = []
    for attr, initial in _SLOTS:
        slots = getattr(optimizer, attr, None) or []
        if index < len(slots) and slots[index] is not None:
            found.append((slots[index], initial(optimizer)))
    return found


def reset_slot_rows(optimizer, variable, rows):
    """Set rows `rows` of every slot `optimizer` keeps for `variable` back to their
    initial value (0, or Adagrad's `initial_accumulator_value`), as if never updated.

    Returns:
        The number of slot variables reset (0 when the optimizer keeps none for it).
    """
    rows = tf.convert_to_tensor(rows, tf.int64)
    found = slots_of(optimizer, variable)
    for slot, initial in found:
        slot = tf_variable(slot)
        values = tf.fill(tf.stack([tf.size(rows), tf.shape(slot)[1]]), tf.cast(initial, slot.dtype))
        slot.scatter_update(tf.IndexedSlices(values, rows))
    return len(found)
