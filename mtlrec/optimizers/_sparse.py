"""Helpers shared by the lazy (row-sparse) optimizers."""

import keras
import tensorflow as tf

from mtlrec.optimizers.summed_gradients import SummedGradientClipping
from mtlrec.optimizers.summed_gradients import dedupe_slices
from mtlrec.layers.embedding.sparse_reads import gather_rows


def tf_variable(variable):
    """The `tf.Variable` (possibly a distributed one) behind a Keras variable."""
    if isinstance(variable, keras.Variable):
        return variable.value
    return variable


def decay_dense(optimizer, variable):
    """Keras' decoupled weight decay, `w <- w - w * wd * lr`, on a whole variable."""
    if optimizer.weight_decay is not None and optimizer._use_weight_decay(variable):
        lr = tf.cast(optimizer.learning_rate, variable.dtype)
        wd = tf.cast(optimizer.weight_decay, variable.dtype)
        variable.assign_sub(variable * wd * lr)


def decay_rows(optimizer, variable, ids, lr, decays=None):
    """The decay term `w_r * wd * lr` for rows `ids`, or None without decay.

    `decays`: whether the variable takes weight decay (default: asked of the optimizer
    for `variable`; a shard of a table passes the answer for its table).
    """
    if decays is None:
        decays = optimizer.weight_decay is not None and optimizer._use_weight_decay(variable)
    if optimizer.weight_decay is None or not decays:
        return None
    wd = tf.cast(optimizer.weight_decay, variable.dtype)
    return gather_rows(variable, ids) * wd * lr


def check_range(name, value, low, high=None, low_inclusive=True):
    """Raises `ValueError` unless `value` is a real number in the range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = value >= low if low_inclusive else value > low
        if ok and high is not None:
            ok = value < high
    if not ok:
        bound = f"{'[' if low_inclusive else '('}{low}, {high if high is not None else 'inf'})"
        raise ValueError(
            f"Expected {name} to be a number in {bound}. Received: {name}={value!r}"
        )


def refuse_gradient_accumulation(optimizer_name, steps):
    """Raises `ValueError` when `gradient_accumulation_steps` is set: its
    accumulators would be dense copies of the embedding tables."""
    if steps is not None:
        raise ValueError(
            f"{optimizer_name} does not support gradient accumulation (it would "
            "need dense accumulators for the embedding tables). Received: "
            f"gradient_accumulation_steps={steps!r}"
        )


class LazyRowUpdates(SummedGradientClipping):
    """Mixin placed before a Keras optimizer class: dense gradients take that
    optimizer's own update; an `IndexedSlices` gradient goes to `update_rows`.
    Clipping acts on the summed gradient (`SummedGradientClipping`).

    A subclass gives `SLOTS` (slot name -> its attribute list in the Keras optimizer),
    `slot_initial_value(name)` and `_row_step(values, ids, lr, slots)`: the step for
    rows `ids` given their summed gradients, updating those rows of `slots` (slot name
    -> variable, numbered like the rows). Keras' own slots serve a whole table;
    `mtlrec.optimizers.sharded_rows` passes the slot shards of one table shard.
    """

    #: slot name -> the Keras optimizer's list attribute holding it (per variable index)
    SLOTS = {}

    def _apply_weight_decay(self, variables):
        # Done per variable in `update_step`, where it is known whether the
        # gradient is sparse (decay the touched rows only) or dense.
        return

    def slot_names(self):
        """The row slots this optimizer keeps per table, in creation order."""
        return [name for name, attr in self.SLOTS.items() if self._keeps_slot(name)]

    def _keeps_slot(self, name):
        return True

    def slot_initial_value(self, name):
        return 0.0

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            decay_dense(self, variable)
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        slots = {name: getattr(self, self.SLOTS[name])[index] for name in self.slot_names()}
        self.update_rows(gradient, variable, learning_rate, slots)

    def update_rows(self, gradient, variable, learning_rate, slots, decays=None):
        """Sums the duplicate ids of `gradient` (`IndexedSlices` on `variable`'s rows),
        then `w_r <- w_r - (step + decoupled decay)` on those rows only.

        `variable` is a table or one shard of it, `slots` its slots (same row numbers),
        `decays` whether it takes weight decay (default: asked for `variable`).
        """
        values, ids = dedupe_slices(gradient, variable.dtype)
        lr = tf.cast(learning_rate, variable.dtype)
        step = self._row_step(values, ids, lr, slots)
        decay = decay_rows(self, variable, ids, lr, decays)
        if decay is not None:
            step = step + decay
        self.assign_sub(variable, tf.IndexedSlices(step, ids))
