"""Under a mirroring strategy, table and slot rows are read row by row, not whole tables.

A mirrored variable has no ``sparse_read``: ``tf.gather`` on it reads the whole table
(``ReadVariableOp`` + ``GatherV2``), and the next row update then copies the table,
which made a multi-worker step cost table size instead of rows touched.
"""

import keras
import numpy as np
import tensorflow as tf

from mtlrec.layers import FeatureEmbedding
from mtlrec.optimizers import LazyAdagrad, LazyAdam
from mtlrec.layers.embedding.sparse_reads import gather_rows

SCHEMA = {
    "categorical": [{"name": "item_id", "dtype": "int64", "num_buckets": 1000, "dim": 4}],
    "labels": [{"name": "click", "kind": "binary"}],
}
IDS = tf.constant([3, 17, 3, 250], tf.int64)


def _op_types(concrete):
    graph = concrete.graph.as_graph_def()
    types = [n.op for n in graph.node]
    for function in graph.library.function:
        types += [n.op for n in function.node_def]
    return types


def _train(strategy, make_optimizer, steps=2):
    keras.utils.set_random_seed(1)
    with strategy.scope():
        layer = FeatureEmbedding(SCHEMA)
        layer({"item_id": IDS})
        optimizer = make_optimizer()
        optimizer.build(layer.trainable_variables)
    table = layer.tables["item_id"]

    def replica_step(ids):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer({"item_id": ids})["dense"] - 1.0))
        (grad,) = tape.gradient(loss, [table])
        assert isinstance(grad, tf.IndexedSlices), type(grad)
        optimizer.apply_gradients([(grad, table)])
        return loss

    step = tf.function(lambda ids: strategy.run(replica_step, args=(ids,)))
    before = table.numpy().copy()
    for _ in range(steps):
        step(IDS)
    return before, table.numpy(), _op_types(step.get_concrete_function(IDS))


def test_gather_rows_reads_a_mirrored_variable_row_by_row_with_sparse_gradient():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        variable = tf.Variable(np.arange(20, dtype="float32").reshape(10, 2))
    assert isinstance(variable, tf.distribute.DistributedValues)

    def replica(ids):
        with tf.GradientTape() as tape:
            rows = gather_rows(variable, ids)
            loss = tf.reduce_sum(rows)
        grad = tape.gradient(loss, variable)
        return rows, grad.values, grad.indices

    fn = tf.function(lambda ids: strategy.run(replica, args=(ids,)))
    rows, values, indices = fn(tf.constant([4, 1]))
    np.testing.assert_array_equal(rows.numpy(), [[8.0, 9.0], [2.0, 3.0]])
    np.testing.assert_array_equal(values.numpy(), np.ones((2, 2)))
    np.testing.assert_array_equal(indices.numpy(), [4, 1])
    types = _op_types(fn.get_concrete_function(tf.constant([4, 1])))
    assert "ResourceGather" in types and "GatherV2" not in types


def test_lazy_optimizers_under_mirrored_strategy_gather_rows_and_match_one_device():
    for make_optimizer in (lambda: LazyAdam(0.05), lambda: LazyAdagrad(0.1)):
        before, after, types = _train(tf.distribute.MirroredStrategy(["/cpu:0"]), make_optimizer)
        # The lookup and the optimizer's slot reads (2 for Adam, 1 for Adagrad) are all
        # row reads; none reads the whole table.
        assert "GatherV2" not in types
        assert types.count("ResourceGather") >= 2
        changed = np.flatnonzero(np.any(after != before, axis=1))
        assert changed.size == 3  # three distinct ids, three rows moved, the rest untouched
        reference_before, reference, _ = _train(tf.distribute.get_strategy(), make_optimizer)
        np.testing.assert_array_equal(before, reference_before)
        np.testing.assert_allclose(after, reference, rtol=1e-6, atol=1e-7)
