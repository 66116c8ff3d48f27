"""Row reads of embedding tables and optimizer slots that stay sparse under tf.distribute."""

import keras
import tensorflow as tf


def gather_rows(variable, ids):
    """Rows ``ids`` of ``variable`` (a Keras or TF variable), reading only those rows.

    On a plain ``tf.Variable``, ``tf.gather`` is a ``ResourceGather``. A mirrored
    variable (``MirroredStrategy``, ``MultiWorkerMirroredStrategy``) has no
    ``sparse_read``, so ``tf.gather`` on it reads the whole table and then gathers
    (``ReadVariableOp`` + ``GatherV2``); the next row update of that table then
    copies all of it, once per step. Reading the component of the current replica
    (or, inside ``strategy.extended.update``, of the variable being updated) keeps
    the read a ``ResourceGather`` whose gradient is ``IndexedSlices`` on the same
    variable. Two workers on localhost with two 1,000,000 x 16 tables: 381 -> 51 ms
    per step (``benchmarks/multi_worker_throughput.py``, ``docs/scaling.md``).
    """
    if isinstance(variable, keras.Variable):
        variable = variable.value
    # The accessor the distributed variable's own `handle` and reads use (TF-internal,
    # present in every version setup.py admits; without it the read is still correct).
    local = getattr(variable, "_get_on_device_or_primary", None)
    if isinstance(variable, tf.distribute.DistributedValues) and local is not None:
        variable = local()
    return tf.gather(variable, ids)
