"""Lazy row updates of embedding tables row-sharded over parameter servers."""

import tensorflow as tf

from mtlrec.optimizers._sparse import LazyRowUpdates
from mtlrec.optimizers._sparse import tf_variable
from mtlrec.optimizers.summed_gradients import clips
from mtlrec.optimizers.summed_gradients import summed_slices


def table_shards(table):
    """The shard variables of a table (a Keras or TF variable): the parts of a
    ``ShardedVariable``, else the variable alone."""
    variable = tf_variable(table)
    if isinstance(variable, tf.__internal__.distribute.ShardedVariable):
        return list(variable.variables)
    return [variable]


def _as_row_slices(gradient):
    if isinstance(gradient, tf.IndexedSlices):
        return gradient
    rows = tf.range(tf.shape(gradient, out_type=tf.int64)[0])
    return tf.IndexedSlices(gradient, rows, tf.shape(gradient, out_type=tf.int64))


class ShardedRowOptimizer(tf.Module):
    """A lazy optimizer (`LazyAdam`, `LazyAdagrad`) for tables sharded by rows.

    Keras' optimizers cannot update a ``ShardedVariable`` (``apply_gradients`` converts
    it "as a reference", which it refuses) and would create each slot whole, next to no
    shard. Here every shard of a table gets its own slots, created on the shard's
    parameter server (``colocate_vars_with``) with the shard's shape, and a step updates,
    on each shard, only the rows its gradient touches (``update_rows``): the rows move
    between a worker and a parameter server, never a whole shard.

    The slots of a table are one ``ShardedVariable`` per slot name (checkpointed like the
    table: one tensor, restorable into any number of shards). The optimizer keeps the
    hyperparameters and the step counter (``iterations``, counted here once per step).

    Args:
        optimizer: a built `LazyRowUpdates` optimizer (its Keras slots are not used).
        tables: the tables (Keras variables) it updates.
        strategy: the ``ParameterServerStrategy`` the tables were created under.
    """

    def __init__(self, optimizer, tables, strategy):
        super().__init__(name="sharded_rows")
        if not isinstance(optimizer, LazyRowUpdates):
            raise ValueError(
                "optimizer.embedding: a parameter_server run updates the embedding tables "
                "row by row on their shards; expected lazy_adam or lazy_adagrad, got "
                f"{type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.tables = list(tables)
        self.slots = {}
        for table in self.tables:
            self.slots[_key(table)] = {
                name: self._slot(table, name, strategy) for name in optimizer.slot_names()
            }

    def _slot(self, table, name, strategy):
        initial = self.optimizer.slot_initial_value(name)
        parts = []
        for i, shard in enumerate(table_shards(table)):
            with strategy.extended.colocate_vars_with(shard):
                parts.append(
                    tf.Variable(
                        tf.fill(shard.shape, tf.cast(initial, shard.dtype)),
                        trainable=False,
                        name=f"{_key(table)}_{name}/part_{i}",
                    )
                )
        if len(parts) == 1:
            return parts[0]
        return tf.__internal__.distribute.ShardedVariable(parts, name=f"{_key(table)}_{name}")

    def slot_shards(self, table):
        """slot name -> its shard variables, aligned with ``table_shards(table)``."""
        return {name: table_shards(slot) for name, slot in self.slots[_key(table)].items()}

    def reset_rows(self, table, rows) -> None:
        """Set rows ``rows`` (the table's row numbers) of every slot of ``table`` back to
        the slot's initial value, as if never updated (a row given to a new id)."""
        rows = tf.convert_to_tensor(rows, tf.int64)
        for name, slot in self.slots[_key(table)].items():
            initial = tf.cast(self.optimizer.slot_initial_value(name), slot.dtype)
            values = tf.fill(tf.stack([tf.size(rows), tf.constant(slot.shape[1])]), initial)
            slot.scatter_update(tf.IndexedSlices(values, rows))

    def checkpoint(self) -> tf.train.Checkpoint:
        """The slots by table path and slot name (``<table path>.<slot>``)."""
        return tf.train.Checkpoint(
            **{f"{key}.{name}": slot for key, slots in self.slots.items() for name, slot in slots.items()}
        )

    def apply(self, table_gradients):
        """One step: ``table_gradients`` is ``[(per-shard gradients, table), ...]``, the
        gradients in the shards' own row numbers (None for an untouched shard)."""
        optimizer = self.optimizer
        lr = optimizer.learning_rate
        for gradients, table in clip_tables(optimizer, table_gradients):
            decays = optimizer.weight_decay is not None and optimizer._use_weight_decay(table)
            slots = self.slot_shards(table)
            for i, (gradient, shard) in enumerate(zip(gradients, table_shards(table))):
                if gradient is None:
                    continue
                optimizer.update_rows(
                    _as_row_slices(gradient), shard, lr, {name: parts[i] for name, parts in slots.items()}, decays
                )
        optimizer.iterations.assign_add(1)


def clip_tables(optimizer, table_gradients):
    """The optimizer's clipping, as on whole tables, of each shard's gradient with its
    duplicate ids summed (``summed_slices``): ``clipnorm`` by the norm of each table (all
    its shards together), ``global_clipnorm`` over every table, ``clipvalue`` element by
    element."""
    if not clips(optimizer):
        return table_gradients
    table_gradients = [
        ([summed_slices(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients], table)
        for gradients, table in table_gradients
    ]
    out = []
    if optimizer.clipnorm and optimizer.clipnorm > 0:
        for gradients, table in table_gradients:
            present = [g for g in gradients if g is not None]
            clipped = iter(tf.clip_by_global_norm(present, optimizer.clipnorm)[0] if present else [])
            out.append(([None if g is None else next(clipped) for g in gradients], table))
        return out
    flat = [g for gradients, _ in table_gradients for g in gradients]
    clipped = iter(optimizer.clip_summed_gradients(flat))
    for gradients, table in table_gradients:
        out.append(([next(clipped) for _ in gradients], table))
    return out


def _key(table):
    return (getattr(table, "path", None) or table.name.split(":")[0]).replace("/", ".")
