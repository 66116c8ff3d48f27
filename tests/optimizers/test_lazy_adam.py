import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.optimizers import LazyAdam

LR, B1, B2, EPS = 0.1, 0.9, 0.999, 1e-7


def _table(rows=6, dim=2):
    init = np.arange(rows * dim, dtype="float32").reshape(rows, dim) / 10.0
    return keras.Variable(init, name="embeddings")


def _slices(indices, values, rows=6):
    values = np.asarray(values, dtype="float32")
    return tf.IndexedSlices(
        tf.constant(values), tf.constant(indices, dtype="int64"),
        tf.constant([rows, values.shape[1]], dtype="int64"),
    )


def _per_lookup(**kwargs):
    return LazyAdam(row_momentum="per_lookup", **kwargs)


def _slots(opt, index=0):
    return opt._momentums[index].numpy(), opt._velocities[index].numpy()


def _numpy_lazy_adam(w, steps):
    """Reference: for each step, {row: summed gradient}; the global step t drives
    the bias correction; absent rows and their moments are left alone."""
    w = w.astype("float64").copy()
    m, v = np.zeros_like(w), np.zeros_like(w)
    # The optimizer raises the float32 betas to the power t: 1 - 0.999**t is
    # sensitive to that rounding (1e-5 relative), so the reference does it too.
    b1_32, b2_32 = float(np.float32(B1)), float(np.float32(B2))
    for t, grads in enumerate(steps, start=1):
        alpha = LR * np.sqrt(1 - b2_32**t) / (1 - b1_32**t)
        for row, g in grads.items():
            m[row] = B1 * m[row] + (1 - B1) * g
            v[row] = B2 * v[row] + (1 - B2) * g**2
            w[row] -= alpha * m[row] / (np.sqrt(v[row]) + EPS)
    return w, m, v


# Step 1 looks row 1 up twice (the two gradients must be summed) and row 3
# once; step 2 touches rows 3 and 4 only, so row 1 has a non-zero momentum that
# dense Adam would keep applying.
STEP1 = ([1, 3, 1], [[1.0, -2.0], [0.5, 0.25], [3.0, 1.0]])
STEP2 = ([4, 3], [[-1.0, 2.0], [0.5, -4.0]])


def test_two_sparse_steps_match_numpy_reference_and_leave_other_rows_alone():
    table = _table()
    w0 = table.numpy()
    opt = _per_lookup(learning_rate=LR, beta_1=B1, beta_2=B2, epsilon=EPS)

    opt.apply_gradients([(_slices(*STEP1), table)])
    w1 = table.numpy()
    m1, v1 = _slots(opt)
    untouched = [0, 2, 4, 5]
    np.testing.assert_array_equal(w1[untouched], w0[untouched])
    np.testing.assert_array_equal(m1[untouched], 0.0)
    np.testing.assert_array_equal(v1[untouched], 0.0)

    opt.apply_gradients([(_slices(*STEP2), table)])
    w2 = table.numpy()
    m2, v2 = _slots(opt)
    # Rows absent from step 2 (1 included, though its momentum is non-zero)
    # and their slots are bit-for-bit what step 1 left.
    for row in [0, 1, 2, 5]:
        np.testing.assert_array_equal(w2[row], w1[row])
        np.testing.assert_array_equal(m2[row], m1[row])
        np.testing.assert_array_equal(v2[row], v1[row])

    ref_w, ref_m, ref_v = _numpy_lazy_adam(
        w0,
        [
            {1: np.array([4.0, -1.0]), 3: np.array([0.5, 0.25])},
            {4: np.array([-1.0, 2.0]), 3: np.array([0.5, -4.0])},
        ],
    )
    np.testing.assert_allclose(w2, ref_w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m2, ref_m, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(v2, ref_v, rtol=1e-6, atol=1e-9)
    assert int(opt.iterations.numpy()) == 2


def test_per_lookup_bias_correction_uses_the_global_step():
    # A row first seen at global step t = 10001: corrections are those of t,
    # the moments those of a first step, so it moves by about 3.2 lr.
    table = _table()
    w0 = table.numpy()
    opt = _per_lookup(learning_rate=LR, beta_1=B1, beta_2=B2, epsilon=EPS)
    opt.build([table])
    opt.iterations.assign(10000)
    g = np.array([2.0, -0.5])
    opt.apply_gradients([(_slices([5], [g]), table)])
    t = 10001
    alpha = LR * np.sqrt(1 - np.float32(B2) ** t) / (1 - np.float32(B1) ** t)
    step = alpha * (1 - B1) * g / (np.sqrt((1 - B2) * g**2) + EPS)
    np.testing.assert_allclose(w0[5] - table.numpy()[5], step, rtol=1e-5)
    np.testing.assert_allclose(np.abs(step), LR * (1 - B1) / np.sqrt(1 - B2), rtol=1e-4)


def test_dense_adam_would_move_the_absent_row():
    # Guards the test above: the rows it checks are ones dense Adam changes.
    table = _table()
    opt = keras.optimizers.Adam(learning_rate=LR)
    opt.apply_gradients([(_slices(*STEP1), table)])
    row1 = table.numpy()[1]
    opt.apply_gradients([(_slices(*STEP2), table)])
    assert not np.array_equal(table.numpy()[1], row1)


def test_per_lookup_every_row_touched_equals_dense_adam_exactly():
    lazy_table, dense_table = _table(4), _table(4)
    lazy, dense = _per_lookup(learning_rate=LR), keras.optimizers.Adam(learning_rate=LR)
    rng = np.random.default_rng(0)
    for _ in range(3):
        g = _slices([2, 0, 3, 1], rng.normal(size=(4, 2)), rows=4)
        lazy.apply_gradients([(g, lazy_table)])
        dense.apply_gradients([(tf.convert_to_tensor(g), dense_table)])
    np.testing.assert_array_equal(lazy_table.numpy(), dense_table.numpy())
    np.testing.assert_array_equal(lazy._momentums[0].numpy(), dense._momentums[0].numpy())
    np.testing.assert_array_equal(lazy._velocities[0].numpy(), dense._velocities[0].numpy())


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"amsgrad": True}, {"weight_decay": 0.05}, {"clipnorm": 0.5}, {"global_clipnorm": 0.5}],
)
def test_dense_gradients_match_keras_adam_exactly(kwargs):
    rng = np.random.default_rng(1)
    init = rng.normal(size=(3, 4)).astype("float32")
    a, b = keras.Variable(init, name="kernel"), keras.Variable(init, name="kernel")
    lazy = LazyAdam(learning_rate=0.01, **kwargs)
    dense = keras.optimizers.Adam(learning_rate=0.01, **kwargs)
    for _ in range(3):
        g = tf.constant(rng.normal(size=(3, 4)).astype("float32"))
        lazy.apply_gradients([(g, a)])
        dense.apply_gradients([(g, b)])
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    for x, y in zip(lazy.variables, dense.variables):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_amsgrad_sparse_keeps_max_velocity_on_touched_rows_only():
    table = _table()
    opt = LazyAdam(learning_rate=LR, amsgrad=True)
    opt.apply_gradients([(_slices([1], [[10.0, 10.0]]), table)])
    opt.apply_gradients([(_slices([1, 2], [[0.0, 0.0], [1.0, 1.0]]), table)])
    v_hat = opt._velocity_hats[0].numpy()
    v = opt._velocities[0].numpy()
    np.testing.assert_allclose(v_hat[1], (1 - B2) * 100.0, rtol=1e-6)  # the max, not v
    assert np.all(v[1] < v_hat[1])
    np.testing.assert_allclose(v_hat[2], v[2], rtol=1e-6)
    np.testing.assert_array_equal(v_hat[[0, 3, 4, 5]], 0.0)


def test_sparse_weight_decay_touches_batch_rows_only():
    table = _table()
    w0 = table.numpy()
    opt = _per_lookup(learning_rate=LR, weight_decay=0.5)
    opt.apply_gradients([(_slices([2], [[1.0, -1.0]]), table)])
    w1 = table.numpy()
    np.testing.assert_array_equal(np.delete(w1, 2, axis=0), np.delete(w0, 2, axis=0))
    # First Adam step moves by lr * sign(g) (to within eps); decay lr*wd*w.
    expected = w0[2] - LR * 0.5 * w0[2] - LR * np.array([1.0, -1.0])
    np.testing.assert_allclose(w1[2], expected, rtol=1e-5)


def test_embedding_layer_gradients_in_tf_function_match_eager():
    def build():
        emb = keras.layers.Embedding(8, 3, embeddings_initializer="ones")
        dense = keras.layers.Dense(1, kernel_initializer="ones")
        model = keras.Sequential([keras.Input((2,), dtype="int32"), emb,
                                  keras.layers.Flatten(), dense])
        return model, LazyAdam(learning_rate=0.05)

    def step(model, opt, ids, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(ids) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        assert isinstance(grads[0], tf.IndexedSlices)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    batches = [([[1, 2], [2, 5]], [[1.0], [0.0]]), ([[5, 5], [3, 1]], [[0.0], [2.0]]),
               ([[0, 7], [7, 0]], [[1.0], [1.0]])]
    eager_model, eager_opt = build()
    graph_model, graph_opt = build()
    graph_step = tf.function(step)
    for ids, y in batches:
        ids, y = tf.constant(ids, dtype="int32"), tf.constant(y)
        step(eager_model, eager_opt, ids, y)
        graph_step(graph_model, graph_opt, ids, y)
    for a, b in zip(eager_model.weights + eager_opt.variables,
                    graph_model.weights + graph_opt.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    table = graph_model.layers[0].embeddings.numpy()
    np.testing.assert_array_equal(table[[4, 6]], 1.0)  # never looked up
    assert not np.allclose(table[[0, 1, 2, 3, 5, 7]], 1.0)


def test_compile_fit_and_keras_roundtrip(keras_roundtrip):
    inputs = keras.Input((1,), dtype="int32")
    x = keras.layers.Flatten()(keras.layers.Embedding(50, 4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer=_per_lookup(learning_rate=0.01, beta_2=0.99), loss="mse")
    ids = np.array([[1], [2], [3], [4]] * 4, dtype="int32")
    model.fit(ids, np.ones((16, 1), "float32"), batch_size=4, epochs=1, verbose=0)
    table = model.layers[1].embeddings.numpy()
    m = model.optimizer._momentums[0].numpy()
    assert np.all(m[5:] == 0.0) and np.all(m[1:5] != 0.0)

    loaded = keras_roundtrip(model)
    assert type(loaded.optimizer) is LazyAdam
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    np.testing.assert_array_equal(loaded.layers[1].embeddings.numpy(), table)
    np.testing.assert_array_equal(loaded.optimizer._momentums[0].numpy(), m)


def test_get_config_is_constructor_args_and_deserializes():
    opt = LazyAdam(learning_rate=0.02, beta_1=0.8, epsilon=1e-6, amsgrad=True, clipnorm=1.0,
                   row_momentum="per_lookup")
    config = opt.get_config()
    assert config["row_momentum"] == "per_lookup"
    params = set(inspect.signature(LazyAdam.__init__).parameters) - {"self", "kwargs"}
    assert set(config) == params
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(restored) is LazyAdam
    assert restored.get_config() == config
    assert keras.saving.get_registered_name(LazyAdam) == "mtlrec>LazyAdam"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta_1": 1.0}, r"Received: beta_1=1.0"),
        ({"beta_2": -0.1}, r"Received: beta_2=-0.1"),
        ({"epsilon": "small"}, r"Received: epsilon='small'"),
        ({"gradient_accumulation_steps": 2}, r"Received: gradient_accumulation_steps=2"),
        ({"row_momentum": "lazy"}, r"one of \['per_step', 'per_lookup'\]. Received: row_momentum='lazy'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LazyAdam(**kwargs)


def test_per_step_is_the_default_and_a_lookup_moves_the_row_as_far_as_dense_adam():
    # Dense Adam: one gradient at step t = 10001, then 400 steps without one;
    # the row keeps moving with its decaying momentum. LazyAdam's default moves
    # the row that whole way at the lookup, and no other row.
    g = np.array([2.0, -0.5])
    lazy_table, dense_table = _table(), _table()
    w0 = lazy_table.numpy()
    lazy, dense = LazyAdam(learning_rate=LR), keras.optimizers.Adam(learning_rate=LR)
    assert lazy.row_momentum == "per_step"
    for opt, table in ((lazy, lazy_table), (dense, dense_table)):
        opt.build([table])
        opt.iterations.assign(10000)
    lazy.apply_gradients([(_slices([5], [g]), lazy_table)])
    dense.apply_gradients([(tf.convert_to_tensor(_slices([5], [g])), dense_table)])
    for _ in range(400):
        dense.apply_gradients([(tf.zeros((6, 2)), dense_table)])
    np.testing.assert_allclose(lazy_table.numpy(), dense_table.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(lazy_table.numpy()[:5], w0[:5])
    # By hand: v = (1 - B2) g^2, so the step is lr sqrt(1 - B2^t) k sign(g) with
    # k = (1 - B1) / (1 - B1 / sqrt(B2)) = 1.00452 (the sum of the momentum's future).
    t = 10001
    k = (1 - B1) / (1 - B1 / np.sqrt(B2))
    step = LR * np.sqrt(1 - np.float32(B2) ** t) * k * g / (np.sqrt((1 - B2) * g**2) + EPS)
    np.testing.assert_allclose(w0[5] - lazy_table.numpy()[5], step, rtol=1e-5)
    np.testing.assert_allclose(np.abs(step), LR * 1.00452 * np.sqrt((1 - B2**t) / (1 - B2)), rtol=1e-4)


def test_per_step_keeps_each_rows_last_step_and_sums_duplicate_ids():
    table = _table()
    w0 = table.numpy()
    opt = LazyAdam(learning_rate=LR)
    opt.apply_gradients([(_slices(*STEP1), table)])
    opt.apply_gradients([(_slices(*STEP2), table)])
    m, v = _slots(opt)
    # No first moment: the momentum slot holds the step of each row's last lookup.
    np.testing.assert_array_equal(m, [[0, 0], [1, 1], [0, 0], [2, 2], [2, 2], [0, 0]])
    # Reference: v as in Adam over the row's lookups, step lr sqrt(1 - B2^t) k g / sqrt(v).
    b2_32 = float(np.float32(B2))
    k = (1 - B1) / (1 - B1 / np.sqrt(B2))
    w, ref_v = w0.astype("float64"), np.zeros_like(w0, dtype="float64")
    steps = [{1: np.array([4.0, -1.0]), 3: np.array([0.5, 0.25])},
             {4: np.array([-1.0, 2.0]), 3: np.array([0.5, -4.0])}]
    for t, grads in enumerate(steps, start=1):
        for row, g in grads.items():
            ref_v[row] = B2 * ref_v[row] + (1 - B2) * g**2
            w[row] -= LR * np.sqrt(1 - b2_32**t) * k * g / (np.sqrt(ref_v[row]) + EPS)
    np.testing.assert_allclose(table.numpy(), w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(v, ref_v, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(table.numpy()[[0, 2, 5]], w0[[0, 2, 5]])
