"""Lazy row updates of a row-sharded table (the parameter_server building block) equal the
lazy optimizer's updates of the same table whole."""

import numpy as np
import pytest
import tensorflow as tf

from mtlrec.optimizers import LazyAdagrad, LazyAdam
from mtlrec.optimizers.sharded_rows import ShardedRowOptimizer, table_shards
from mtlrec.layers.embedding.sparse_reads import gather_rows


def _sharded(values):
    return tf.__internal__.distribute.ShardedVariable(
        [tf.Variable(values[:3], name="embedding_t/part_0"), tf.Variable(values[3:], name="embedding_t/part_1")]
    )


def test_gather_rows_of_a_sharded_table_keeps_the_order_of_the_ids():
    values = np.arange(10, dtype="float32").reshape(5, 2)
    rows = gather_rows(_sharded(values), tf.constant([[4, 0], [3, 1]]))
    np.testing.assert_array_equal(rows.numpy(), values[[[4, 0], [3, 1]]])


@pytest.mark.parametrize("make", [lambda: LazyAdam(learning_rate=0.1), lambda: LazyAdagrad(learning_rate=0.1)])
def test_sharded_row_updates_equal_the_whole_table_updates(make):
    values = np.random.default_rng(0).normal(size=(5, 2)).astype("float32")
    whole = tf.Variable(values, name="embedding_t")
    reference = make()
    reference.build([whole])
    sharded = _sharded(values)
    optimizer = make()
    optimizer.build([])
    rows = ShardedRowOptimizer(optimizer, [sharded], tf.distribute.get_strategy())
    grad_rows = np.array([[1.0, -2.0], [0.5, 0.5], [3.0, 1.0]], "float32")
    ids = [4, 1, 4]  # rows 1 (shard 0) and 4 (shard 1, its row 1), 4 twice
    for _ in range(2):
        reference.apply_gradients([(tf.IndexedSlices(tf.constant(grad_rows), tf.constant(ids), [5, 2]), whole)])
        rows.apply([([tf.IndexedSlices(tf.constant(grad_rows[1:2]), tf.constant([1])),
                      tf.IndexedSlices(tf.constant(grad_rows[[0, 2]]), tf.constant([1, 1]))], sharded)])
    got = tf.concat([s.read_value() for s in table_shards(sharded)], 0).numpy()
    np.testing.assert_allclose(got, whole.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(got[[0, 2, 3]], values[[0, 2, 3]])  # untouched rows stay
    assert int(optimizer.iterations.numpy()) == 2
    assert [s.shape.as_list() for s in rows.slot_shards(sharded)[optimizer.slot_names()[-1]]] == [[3, 2], [2, 2]]


def test_sharded_rows_decay_v_over_absent_steps_and_keep_row_steps_per_shard():
    # LazyAdam's per_step rule is the same on shards: a row back after 300 steps.
    values = np.random.default_rng(1).normal(size=(5, 2)).astype("float32")
    whole = tf.Variable(values, name="embedding_t")
    reference = LazyAdam(learning_rate=0.1)
    reference.build([whole])
    sharded = _sharded(values)
    optimizer = LazyAdam(learning_rate=0.1)
    optimizer.build([])
    rows = ShardedRowOptimizer(optimizer, [sharded], tf.distribute.get_strategy())
    g = tf.constant([[1.0, -2.0], [0.5, 0.5]])
    for _ in range(2):
        reference.apply_gradients([(tf.IndexedSlices(g, tf.constant([1, 4]), [5, 2]), whole)])
        rows.apply([([tf.IndexedSlices(g[:1], tf.constant([1])), tf.IndexedSlices(g[1:], tf.constant([1]))], sharded)])
        reference.iterations.assign(300)
        optimizer.iterations.assign(300)
    got = tf.concat([s.read_value() for s in table_shards(sharded)], 0).numpy()
    np.testing.assert_allclose(got, whole.numpy(), rtol=1e-6)
    slots = rows.slot_shards(sharded)
    velocity = tf.concat([s.read_value() for s in slots["velocity"]], 0).numpy()
    np.testing.assert_allclose(velocity, reference._velocities[0].numpy(), rtol=1e-6)
    # rows 1 and 4 decayed over 299 absent steps: B2^300 (1 - B2) g^2 + (1 - B2) g^2
    np.testing.assert_allclose(velocity[[1, 4]], (0.999**300 + 1) * 0.001 * g.numpy() ** 2, rtol=1e-5)
    steps = tf.concat([s.read_value() for s in slots["momentum"]], 0).numpy()
    np.testing.assert_array_equal(steps[:, 0], [0, 301, 0, 0, 301])


def test_reset_rows_sets_those_rows_of_every_slot_on_every_shard_back_to_their_initial_value():
    values = np.random.default_rng(2).normal(size=(5, 2)).astype("float32")
    sharded = _sharded(values)
    optimizer = LazyAdagrad(learning_rate=0.1, initial_accumulator_value=0.25)
    optimizer.build([])
    rows = ShardedRowOptimizer(optimizer, [sharded], tf.distribute.get_strategy())
    g = tf.constant([[1.0, -2.0], [0.5, 0.5], [2.0, 1.0]])
    rows.apply([([tf.IndexedSlices(g[:2], tf.constant([0, 1])), tf.IndexedSlices(g[2:], tf.constant([1]))], sharded)])
    (accumulator,) = rows.slot_shards(sharded).values()
    before = tf.concat([s.read_value() for s in accumulator], 0).numpy()
    # rows 0, 1 (shard 0) and 4 (shard 1, its row 1) were updated: 0.25 + g^2
    np.testing.assert_allclose(before[[0, 1, 4]], 0.25 + g.numpy() ** 2, rtol=1e-6)
    rows.reset_rows(sharded, [1, 4])  # one row on each shard
    after = tf.concat([s.read_value() for s in accumulator], 0).numpy()
    np.testing.assert_allclose(after[0], 0.25 + g.numpy()[0] ** 2, rtol=1e-6)
    np.testing.assert_array_equal(after[[1, 2, 3, 4]], np.full((4, 2), 0.25, "float32"))
