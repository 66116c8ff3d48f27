"""LazyAdam's default (`row_momentum="per_step"`) on rows that come back after many steps,
as ids do in daily incremental training: `v` decays over the absent steps as in dense
Adam, so a row moves about as far as under dense Adam whatever its gap."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.optimizers import LazyAdam

LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-7
K = (1 - B1) / (1 - B1 / np.sqrt(B2))  # the sum of a gradient's momentum future


def _row(rows, dim, row, g):
    g = np.broadcast_to(np.asarray(g, "float32"), (1, dim))
    return tf.IndexedSlices(tf.constant(g), tf.constant([row], tf.int64), tf.constant([rows, dim], tf.int64))


def _lazy_distance(gap, lookups, g=1.0):
    """Row 0 of a 4-row table gets gradient `g` at steps 1, 1 + gap, ...; the other
    steps touch other rows (here: the step counter moves on)."""
    table = keras.Variable(np.zeros((4, 1), "float32"), name="embeddings")
    opt = LazyAdam(learning_rate=LR)
    opt.build([table])
    for i in range(lookups):
        opt.iterations.assign(i * gap)
        opt.apply_gradients([(_row(4, 1, 0, g), table)])
    return -float(table.numpy()[0, 0])


def _dense_adam_distance(gap, lookups, g=1.0):
    """Keras' dense Adam on the same row, in numpy (float64): the gradient is 0 on the
    steps between lookups, and the run ends where the next lookup would be."""
    b1_32, b2_32 = float(np.float32(B1)), float(np.float32(B2))
    m = v = w = 0.0
    for t in range(1, lookups * gap + 1):
        grad = g if (t - 1) % gap == 0 else 0.0
        m += (grad - m) * (1 - B1)
        v += (grad * grad - v) * (1 - B2)
        w -= LR * math.sqrt(1 - b2_32**t) / (1 - b1_32**t) * m / (math.sqrt(v) + EPS)
    return -w


def test_the_numpy_dense_adam_reference_is_keras_adam():
    table = keras.Variable(np.zeros((4, 1), "float32"), name="embeddings")
    opt = keras.optimizers.Adam(learning_rate=LR)
    gap, lookups = 7, 3
    for t in range(1, gap * lookups + 1):
        grad = np.zeros((4, 1), "float32")
        grad[0, 0] = 1.0 if (t - 1) % gap == 0 else 0.0
        opt.apply_gradients([(tf.constant(grad), table)])
    np.testing.assert_allclose(-table.numpy()[0, 0], _dense_adam_distance(gap, lookups), rtol=1e-5)


@pytest.mark.parametrize("gap", [1, 10, 100, 300, 1000, 10000])
def test_a_row_looked_up_every_gap_steps_moves_as_far_as_under_dense_adam(gap):
    # 25 lookups from step 1. Before v decayed over the absent steps: 0.75 of dense
    # Adam at gap 100, 0.56 at 300, 0.39 at 1,000, 0.32 at 10,000.
    lookups = 25
    ratio = _lazy_distance(gap, lookups) / _dense_adam_distance(gap, lookups)
    assert 0.9 <= ratio <= 1.1, ratio


@pytest.mark.parametrize("gap", [1, 2, 50])
def test_v_of_a_row_is_dense_adams_after_absent_steps(gap):
    # Row 2 looked up at step 1 (g1), then at step 1 + gap (g2): by hand,
    # v = B2^gap (1 - B2) g1^2 + (1 - B2) g2^2, and Keras' dense Adam agrees.
    g1, g2 = np.array([2.0, -0.5]), np.array([1.0, 3.0])
    table = keras.Variable(np.ones((6, 2), "float32"), name="embeddings")
    dense_table = keras.Variable(np.ones((6, 2), "float32"), name="embeddings")
    opt, dense = LazyAdam(learning_rate=LR), keras.optimizers.Adam(learning_rate=LR)
    opt.build([table])
    opt.apply_gradients([(_row(6, 2, 2, g1), table)])
    opt.iterations.assign(gap)
    before = table.numpy()[2].copy()
    opt.apply_gradients([(_row(6, 2, 2, g2), table)])
    for t in range(1, gap + 2):
        g = g1 if t == 1 else g2 if t == gap + 1 else np.zeros(2)
        dense.apply_gradients([(tf.convert_to_tensor(_row(6, 2, 2, g)), dense_table)])

    v = opt._velocities[0].numpy()[2]
    expected_v = B2**gap * (1 - B2) * g1**2 + (1 - B2) * g2**2
    np.testing.assert_allclose(v, expected_v, rtol=1e-5)
    np.testing.assert_allclose(v, dense._velocities[0].numpy()[2], rtol=1e-5)
    t = gap + 1
    step = LR * np.sqrt(1 - np.float32(B2) ** t) * K * g2 / (np.sqrt(expected_v) + EPS)
    np.testing.assert_allclose(before - table.numpy()[2], step, rtol=1e-5)
    np.testing.assert_array_equal(opt._momentums[0].numpy()[2], [t, t])  # the row's last step


def _checkpointed(tmp_path, momentum_row):
    """A checkpoint as written before the momentum slot held steps: step 5,000, row 1 with
    v = (0.04, 0.09) and `momentum_row` (zeros from per_step, a first moment from per_lookup)."""
    table = keras.Variable(np.ones((4, 2), "float32"), name="embeddings")
    opt = LazyAdam(learning_rate=LR)
    opt.build([table])
    opt.iterations.assign(5000)
    opt._velocities[0].assign(np.array([[0, 0], [0.04, 0.09], [0, 0], [0, 0]], "float32"))
    opt._momentums[0].assign(np.array([[0, 0], momentum_row, [0, 0], [0, 0]], "float32"))
    return tf.train.Checkpoint(table=table, optimizer=opt).save(str(tmp_path / "ckpt"))


@pytest.mark.parametrize("momentum_row", [[0.0, 0.0], [0.013, -0.2], [3.0, 4.0]])
def test_an_older_checkpoint_restores_and_its_rows_take_no_decay_on_first_use(tmp_path, momentum_row):
    path = _checkpointed(tmp_path, momentum_row)
    table = keras.Variable(np.zeros((4, 2), "float32"), name="embeddings")
    opt = LazyAdam(learning_rate=LR)
    opt.build([table])
    tf.train.Checkpoint(table=table, optimizer=opt).restore(path).assert_consumed()

    # First lookup after the restore (t = 5,001): the row's last step is unknown, so v
    # takes only this step's decay (as before the change), and the row gets its step.
    g = np.array([0.5, -1.0])
    opt.apply_gradients([(_row(4, 2, 1, g), table)])
    v0 = np.array([0.04, 0.09])
    v1 = v0 + (g**2 - v0) * (1 - B2)
    np.testing.assert_allclose(opt._velocities[0].numpy()[1], v1, rtol=1e-5)
    step = LR * np.sqrt(1 - np.float32(B2) ** 5001) * K * g / (np.sqrt(v1) + EPS)
    np.testing.assert_allclose(1.0 - table.numpy()[1], step, rtol=1e-5)
    np.testing.assert_array_equal(opt._momentums[0].numpy()[1], [5001, 5001])

    # From then on the absent steps decay it: the next lookup at t = 5,301.
    opt.iterations.assign(5300)
    opt.apply_gradients([(_row(4, 2, 1, g), table)])
    np.testing.assert_allclose(opt._velocities[0].numpy()[1], B2**300 * v1 + (1 - B2) * g**2, rtol=1e-5)
    np.testing.assert_array_equal(table.numpy()[[0, 2, 3]], 1.0)


def test_a_row_step_from_a_later_point_than_the_counter_reads_as_unknown():
    # A slot whose steps are ahead of the step counter (a counter set back, or a stale
    # parameter-server worker) does not decay v by a negative number of steps.
    table = keras.Variable(np.zeros((4, 1), "float32"), name="embeddings")
    opt = LazyAdam(learning_rate=LR)
    opt.build([table])
    opt._velocities[0].assign(np.full((4, 1), 0.25, "float32"))
    opt._momentums[0].assign(np.full((4, 1), 900.0, "float32"))
    opt.iterations.assign(99)
    opt.apply_gradients([(_row(4, 1, 3, 2.0), table)])
    np.testing.assert_allclose(opt._velocities[0].numpy()[3], 0.25 + (4.0 - 0.25) * (1 - B2), rtol=1e-6)
    assert opt._momentums[0].numpy()[3, 0] == 100.0


def test_per_lookup_resumed_from_a_per_step_run_starts_the_first_moment_at_zero(tmp_path):
    table = keras.Variable(np.zeros((4, 2), "float32"), name="embeddings")
    opt = LazyAdam(learning_rate=LR)
    opt.build([table])
    for _ in range(3):
        opt.apply_gradients([(_row(4, 2, 1, [1.0, -1.0]), table)])
    assert opt._momentums[0].numpy()[1].tolist() == [3.0, 3.0]  # per_step's row step
    path = tf.train.Checkpoint(table=table, optimizer=opt).save(str(tmp_path / "ckpt"))

    per_lookup = LazyAdam(learning_rate=LR, row_momentum="per_lookup")
    per_lookup.build([table])
    tf.train.Checkpoint(table=table, optimizer=per_lookup).restore(path).assert_consumed()
    g = np.array([0.5, 2.0])
    per_lookup.apply_gradients([(_row(4, 2, 1, g), table)])
    np.testing.assert_allclose(per_lookup._momentums[0].numpy()[1], (1 - B1) * g, rtol=1e-6)


@pytest.mark.parametrize("beta_1, beta_2", [(0.9, 0.8), (0.95, 0.9)])
def test_per_step_refuses_betas_whose_momentum_future_has_no_sum(beta_1, beta_2):
    with pytest.raises(ValueError, match=r"beta_1 < sqrt\(beta_2\)\. Received: beta_1="):
        LazyAdam(beta_1=beta_1, beta_2=beta_2)
    LazyAdam(beta_1=beta_1, beta_2=beta_2, row_momentum="per_lookup")  # no such sum there
