import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.optimizers import LazyAdagrad

LR, ACC0, EPS = 0.5, 0.1, 1e-7


def _table(rows=5, dim=2):
    init = np.arange(rows * dim, dtype="float32").reshape(rows, dim) / 10.0
    return keras.Variable(init, name="embeddings")


def _slices(indices, values, rows=5):
    values = np.asarray(values, dtype="float32")
    return tf.IndexedSlices(
        tf.constant(values), tf.constant(indices, dtype="int64"),
        tf.constant([rows, values.shape[1]], dtype="int64"),
    )


def test_two_sparse_steps_match_numpy_reference_and_leave_other_rows_alone():
    table = _table()
    w0 = table.numpy()
    opt = LazyAdagrad(learning_rate=LR, initial_accumulator_value=ACC0, epsilon=EPS)
    # Step 1 looks row 2 up twice; step 2 touches rows 0 and 2.
    opt.apply_gradients([(_slices([2, 4, 2], [[1.0, -1.0], [2.0, 0.5], [0.5, 3.0]]), table)])
    w1, a1 = table.numpy(), opt._accumulators[0].numpy()
    np.testing.assert_array_equal(w1[[0, 1, 3]], w0[[0, 1, 3]])
    np.testing.assert_array_equal(a1[[0, 1, 3]], np.float32(ACC0))
    opt.apply_gradients([(_slices([0, 2], [[-1.0, 1.0], [2.0, 2.0]]), table)])
    w2, a2 = table.numpy(), opt._accumulators[0].numpy()
    np.testing.assert_array_equal(w2[[1, 3, 4]], w1[[1, 3, 4]])
    np.testing.assert_array_equal(a2[[1, 3, 4]], a1[[1, 3, 4]])

    w, a = w0.astype("float64"), np.full((5, 2), ACC0)
    for grads in [{2: [1.5, 2.0], 4: [2.0, 0.5]}, {0: [-1.0, 1.0], 2: [2.0, 2.0]}]:
        for row, g in grads.items():
            g = np.array(g)
            a[row] += g**2
            w[row] -= LR * g / np.sqrt(a[row] + EPS)
    np.testing.assert_allclose(a2, a, rtol=1e-6)
    np.testing.assert_allclose(w2, w, rtol=1e-6, atol=1e-7)


def test_sparse_equals_dense_adagrad_everywhere():
    # Adagrad has no decay: a zero gradient changes nothing, so lazy == dense.
    lazy_table, dense_table = _table(), _table()
    lazy, dense = LazyAdagrad(learning_rate=LR), keras.optimizers.Adagrad(learning_rate=LR)
    rng = np.random.default_rng(0)
    for ids in ([0, 3, 3], [1, 4], [3]):
        g = _slices(ids, rng.normal(size=(len(ids), 2)))
        lazy.apply_gradients([(g, lazy_table)])
        dense.apply_gradients([(tf.convert_to_tensor(g), dense_table)])
    np.testing.assert_allclose(lazy_table.numpy(), dense_table.numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        lazy._accumulators[0].numpy(), dense._accumulators[0].numpy(), rtol=1e-6
    )


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.05}, {"clipvalue": 0.3}])
def test_dense_gradients_match_keras_adagrad_exactly(kwargs):
    rng = np.random.default_rng(1)
    init = rng.normal(size=(3, 4)).astype("float32")
    a, b = keras.Variable(init, name="kernel"), keras.Variable(init, name="kernel")
    lazy = LazyAdagrad(learning_rate=0.05, **kwargs)
    dense = keras.optimizers.Adagrad(learning_rate=0.05, **kwargs)
    for _ in range(3):
        g = tf.constant(rng.normal(size=(3, 4)).astype("float32"))
        lazy.apply_gradients([(g, a)])
        dense.apply_gradients([(g, b)])
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    for x, y in zip(lazy.variables, dense.variables):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


@pytest.mark.parametrize(
    "kwargs, clipped",
    [
        # values clipped to +-0.5 element-wise
        ({"clipvalue": 0.5}, [0.5, -0.5]),
        # the one gradient row [3, -4] has global norm 5, scaled to norm 1
        ({"global_clipnorm": 1.0}, [0.6, -0.8]),
        ({"clipnorm": 1.0}, [0.6, -0.8]),
    ],
)
def test_clipping_keeps_sparse_gradients_sparse(kwargs, clipped):
    table = _table()
    w0 = table.numpy()
    opt = LazyAdagrad(learning_rate=LR, **kwargs)
    opt.apply_gradients([(_slices([1], [[3.0, -4.0]]), table)])
    g = np.array(clipped)
    expected = w0[1] - LR * g / np.sqrt(ACC0 + g**2 + EPS)
    np.testing.assert_allclose(table.numpy()[1], expected, rtol=1e-5)
    np.testing.assert_array_equal(np.delete(table.numpy(), 1, axis=0), np.delete(w0, 1, axis=0))
    np.testing.assert_array_equal(np.delete(opt._accumulators[0].numpy(), 1, axis=0), np.float32(ACC0))


def test_sparse_weight_decay_touches_batch_rows_only():
    table = _table()
    w0 = table.numpy()
    opt = LazyAdagrad(learning_rate=LR, weight_decay=0.2)
    opt.apply_gradients([(_slices([3], [[1.0, 1.0]]), table)])
    w1 = table.numpy()
    np.testing.assert_array_equal(np.delete(w1, 3, axis=0), np.delete(w0, 3, axis=0))
    expected = w0[3] - LR * 0.2 * w0[3] - LR * 1.0 / np.sqrt(ACC0 + 1.0 + EPS)
    np.testing.assert_allclose(w1[3], expected, rtol=1e-6)


def test_embedding_layer_in_tf_function():
    emb = keras.layers.Embedding(6, 2, embeddings_initializer="ones")
    emb.build((None,))
    opt = LazyAdagrad(learning_rate=LR)

    @tf.function
    def step(ids):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(emb(ids))
        grads = tape.gradient(loss, emb.trainable_variables)
        opt.apply_gradients(zip(grads, emb.trainable_variables))

    step(tf.constant([1, 1, 4]))
    step(tf.constant([4, 0, 4]))
    w = emb.embeddings.numpy()
    np.testing.assert_array_equal(w[[2, 3, 5]], 1.0)
    acc = opt._accumulators[0].numpy()[:, 0]
    np.testing.assert_allclose(acc, [ACC0 + 1, ACC0 + 4, ACC0, ACC0, ACC0 + 1 + 4, ACC0], rtol=1e-6)
    row4 = 1 - LR / np.sqrt(ACC0 + 1 + EPS) - LR * 2 / np.sqrt(ACC0 + 5 + EPS)
    np.testing.assert_allclose(w[4], row4, rtol=1e-6)


def test_get_config_is_constructor_args_and_deserializes():
    opt = LazyAdagrad(learning_rate=0.2, initial_accumulator_value=0.5, epsilon=1e-5)
    config = opt.get_config()
    params = set(inspect.signature(LazyAdagrad.__init__).parameters) - {"self", "kwargs"}
    assert set(config) == params
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(restored) is LazyAdagrad
    assert restored.get_config() == config


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"initial_accumulator_value": -1.0}, r"Received: initial_accumulator_value=-1.0"),
        ({"epsilon": None}, r"Received: epsilon=None"),
        ({"gradient_accumulation_steps": 4}, r"Received: gradient_accumulation_steps=4"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LazyAdagrad(**kwargs)
