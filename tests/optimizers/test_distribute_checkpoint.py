import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.optimizers import LazyAdagrad
from mtlrec.optimizers import LazyAdam

VOCAB = 12
# Rows 0, 6, 9, 10, 11 are never looked up; 2 is looked up in batch 1 only.
BATCHES = [
    ([[1, 2], [2, 3], [4, 1]], [[1.0], [0.0], [1.0]]),
    ([[3, 5], [7, 8], [5, 4]], [[0.0], [1.0], [1.0]]),
]


def _model():
    inputs = keras.Input((2,), dtype="int64")
    x = keras.layers.Embedding(VOCAB, 3, embeddings_initializer="ones", name="embedding")(inputs)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(1, kernel_initializer="ones", name="head")(x)
    return keras.Model(inputs, out)


def _loss(model, ids, y):
    return tf.reduce_sum(tf.square(model(ids) - y))


def _train_plain(make_opt, batches):
    model, opt = _model(), make_opt()
    for ids, y in batches:
        with tf.GradientTape() as tape:
            loss = _loss(model, tf.constant(ids, "int64"), tf.constant(y))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
    return model, opt


@pytest.mark.parametrize("make_opt", [lambda: LazyAdam(0.05), lambda: LazyAdagrad(0.1)])
def test_mirrored_strategy_custom_loop_matches_single_device(make_opt):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model, opt = _model(), make_opt()
        opt.build(model.trainable_variables)

    @tf.function
    def train_step(ids, y):
        def replica_fn(ids, y):
            with tf.GradientTape() as tape:
                loss = _loss(model, ids, y)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))

        strategy.run(replica_fn, args=(ids, y))

    ids = np.array([b[0] for b in BATCHES], "int64").reshape(-1, 2)
    ys = np.array([b[1] for b in BATCHES], "float32").reshape(-1, 1)
    dataset = tf.data.Dataset.from_tensor_slices((ids, ys)).batch(3)
    snapshots = []
    for ids_b, y_b in strategy.experimental_distribute_dataset(dataset):
        train_step(ids_b, y_b)
        snapshots.append([v.numpy().copy() for v in model.weights + opt.variables])

    table_1, table_2 = snapshots[0][0], snapshots[1][0]
    np.testing.assert_array_equal(table_2[[0, 6, 9, 10, 11]], 1.0)
    # Row 2 was only in batch 1: it and its slots do not move in batch 2.
    np.testing.assert_array_equal(table_2[2], table_1[2])
    slot_offset = len(model.weights) + 2  # after the weights, iteration and learning rate
    np.testing.assert_array_equal(snapshots[1][slot_offset][2], snapshots[0][slot_offset][2])
    assert not np.array_equal(table_2[2], np.ones(3))

    ref_model, ref_opt = _train_plain(make_opt, BATCHES)
    for a, b in zip(model.weights + opt.variables, ref_model.weights + ref_opt.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


_TWO_REPLICAS = r"""
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from mtlrec.optimizers import LazyAdam

def model():
    inputs = keras.Input((2,), dtype="int64")
    x = keras.layers.Embedding(10, 2, embeddings_initializer="ones")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones")(keras.layers.Flatten()(x)))

# Both replicas look up rows 1 and 3: the all-reduced gradient repeats them.
ids = np.array([[1, 3], [3, 1], [1, 1], [3, 5]], "int64")
y = np.array([[1.0], [0.0], [2.0], [1.0]], "float32")
loss_fn = lambda m, a, b: tf.reduce_sum(tf.square(m(a) - b))

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    dist_model, dist_opt = model(), LazyAdam(0.05)
    dist_opt.build(dist_model.trainable_variables)

@tf.function
def step(a, b):
    def fn(a, b):
        with tf.GradientTape() as tape:
            loss = loss_fn(dist_model, a, b)
        grads = tape.gradient(loss, dist_model.trainable_variables)
        dist_opt.apply_gradients(zip(grads, dist_model.trainable_variables))
    strategy.run(fn, args=(a, b))

ds = tf.data.Dataset.from_tensor_slices((ids, y)).batch(4).repeat(2)
for a, b in strategy.experimental_distribute_dataset(ds):
    step(a, b)

ref_model, ref_opt = model(), LazyAdam(0.05)
for _ in range(2):
    with tf.GradientTape() as tape:
        loss = loss_fn(ref_model, tf.constant(ids), tf.constant(y))
    grads = tape.gradient(loss, ref_model.trainable_variables)
    ref_opt.apply_gradients(zip(grads, ref_model.trainable_variables))

table = dist_model.weights[0].numpy()
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "max_diff": max(float(np.max(np.abs(p.numpy() - q.numpy())))
                    for p, q in zip(dist_model.weights + dist_opt.variables,
                                    ref_model.weights + ref_opt.variables)),
    "untouched_equal": bool(np.all(table[[0, 2, 4, 6, 7, 8, 9]] == 1.0)),
    "touched_moved": bool(np.all(table[[1, 3, 5]] != 1.0)),
}))
"""


def test_two_replicas_with_repeated_ids_match_single_device():
    # Logical devices must be set before TensorFlow starts: separate process.
    root = pathlib.Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICAS], cwd=root, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["max_diff"] < 1e-6
    assert result["untouched_equal"] and result["touched_moved"]


@pytest.mark.parametrize(
    "make_opt, slot_attrs",
    [(lambda: LazyAdam(0.05, amsgrad=True, row_momentum="per_lookup"),
      ["_momentums", "_velocities", "_velocity_hats"]),
     # per_step keeps no row momentum: its momentum slot holds each row's last step.
     (lambda: LazyAdam(0.05, amsgrad=True), ["_velocities", "_velocity_hats", "_momentums"]),
     (lambda: LazyAdagrad(0.1), ["_accumulators"])],
)
def test_checkpoint_round_trip_of_slots(tmp_path, make_opt, slot_attrs):
    model, opt = _train_plain(make_opt, BATCHES[:1])

    def state(m, o):
        slots = [s.numpy().copy() for attr in slot_attrs for s in getattr(o, attr)]
        return [w.numpy().copy() for w in m.weights] + slots + [o.iterations.numpy()]

    saved = state(model, opt)
    assert np.any(saved[len(model.weights)] != 0.0)  # the first slot has been written
    path = tf.train.Checkpoint(model=model, optimizer=opt).save(str(tmp_path / "ckpt"))

    # Change everything, then restore in place.
    for ids, y in BATCHES[1:]:
        with tf.GradientTape() as tape:
            loss = _loss(model, tf.constant(ids, "int64"), tf.constant(y))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
    changed = state(model, opt)
    assert any(not np.array_equal(a, b) for a, b in zip(saved[len(model.weights):], changed[len(model.weights):]))
    tf.train.Checkpoint(model=model, optimizer=opt).restore(path).assert_consumed()
    for a, b in zip(state(model, opt), saved):
        np.testing.assert_array_equal(a, b)

    # And into a fresh model and optimizer.
    fresh_model, fresh_opt = _model(), make_opt()
    fresh_opt.build(fresh_model.trainable_variables)
    tf.train.Checkpoint(model=fresh_model, optimizer=fresh_opt).restore(path).assert_consumed()
    for a, b in zip(state(fresh_model, fresh_opt), saved):
        np.testing.assert_array_equal(a, b)
