"""`clipnorm`, `global_clipnorm` and `clipvalue` clip the gradient the update uses: an
embedding gradient with its duplicate ids summed, the replicas' gradients summed."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.optimizers import make_optimizer
from mtlrec.optimizers.sharded_rows import ShardedRowOptimizer, table_shards

# Row 3 of a 5 x 2 table looked up by 1,000 rows of a batch, each lookup's gradient row
# (0.012, 0.016) (norm 0.02): the table's gradient is (12, 16) on row 3, norm 20. Keras
# saw the 1,000 rows: norm sqrt(1000) * 0.02 = 0.63, under a clipnorm of 1.
LOOKUPS = 1000
ROW = np.array([0.012, 0.016], "float32")


def _table_gradient(rows=5):
    values = np.tile(ROW, (LOOKUPS, 1))
    return tf.IndexedSlices(tf.constant(values), tf.constant([3] * LOOKUPS, tf.int64),
                            tf.constant([rows, 2], tf.int64))


NAMES = ["sgd", "lazy_adagrad", "lazy_adam", "adam", "adagrad"]


def _step(name, clip, grads_and_tables):
    opt = make_optimizer({"name": name, "learning_rate": 1.0, **clip})
    opt.apply_gradients(grads_and_tables)
    return opt


def _moved_as_by(name, opt, g):
    """The first update of a row with gradient `g` (lr 1), by hand."""
    if name == "sgd":
        return g
    if name in ("lazy_adagrad", "adagrad"):
        return g / np.sqrt(0.1 + g**2 + 1e-7)  # initial accumulator 0.1
    # Adam's first step: g / |g| (to eps; LazyAdam's per_step: k = 1.0045 times that,
    # the momentum's future); its v says which g it saw
    np.testing.assert_allclose(opt._velocities[0].numpy()[3], 0.001 * g**2, rtol=1e-4)
    k = 0.1 / (1 - 0.9 / np.sqrt(0.999)) if name == "lazy_adam" else 1.0
    return k * g / np.abs(g)


@pytest.mark.parametrize("name", NAMES)
def test_clipnorm_clips_the_norm_of_the_summed_rows(name):
    table = keras.Variable(np.zeros((5, 2), "float32"), name="embeddings")
    opt = _step(name, {"clipnorm": 1.0}, [(_table_gradient(), table)])
    clipped = np.array([12.0, 16.0]) / 20.0  # (0.6, 0.8); before: (12, 16) unclipped
    np.testing.assert_allclose(-table.numpy()[3], _moved_as_by(name, opt, clipped), rtol=1e-4)
    np.testing.assert_array_equal(np.delete(table.numpy(), 3, axis=0), 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_clipvalue_clips_the_values_of_the_summed_rows(name):
    table = keras.Variable(np.zeros((5, 2), "float32"), name="embeddings")
    opt = _step(name, {"clipvalue": 5.0}, [(_table_gradient(), table)])
    np.testing.assert_allclose(-table.numpy()[3], _moved_as_by(name, opt, np.array([5.0, 5.0])), rtol=1e-4)


@pytest.mark.parametrize("name", ["sgd", "lazy_adagrad"])
def test_global_clipnorm_takes_the_summed_rows_into_the_global_norm(name):
    table = keras.Variable(np.zeros((5, 2), "float32"), name="embeddings")
    kernel = keras.Variable(np.zeros((2, 1), "float32"), name="kernel")
    kernel_grad = tf.constant([[3.0], [4.0]])
    _step(name, {"global_clipnorm": 1.0}, [(_table_gradient(), table), (kernel_grad, kernel)])
    scale = 1.0 / np.sqrt(20.0**2 + 5.0**2)  # global norm of (12, 16) and (3, 4)
    g, k = np.array([12.0, 16.0]) * scale, np.array([3.0, 4.0]) * scale
    if name == "lazy_adagrad":
        g, k = g / np.sqrt(0.1 + g**2 + 1e-7), k / np.sqrt(0.1 + k**2 + 1e-7)
    np.testing.assert_allclose(-table.numpy()[3], g, rtol=1e-5)
    np.testing.assert_allclose(-kernel.numpy()[:, 0], k, rtol=1e-5)


def test_the_layout_of_the_lookups_does_not_change_the_clipped_update():
    # The same table gradient as 1,000 rows, as 10 rows of 100 lookups' sum, and as one.
    layouts = [_table_gradient(),
               tf.IndexedSlices(tf.constant(np.tile(ROW * 100, (10, 1))), tf.constant([3] * 10), [5, 2]),
               tf.IndexedSlices(tf.constant([ROW * LOOKUPS]), tf.constant([3]), [5, 2])]
    moved = []
    for gradient in layouts:
        table = keras.Variable(np.zeros((5, 2), "float32"), name="embeddings")
        _step("lazy_adagrad", {"clipnorm": 1.0}, [(gradient, table)])
        moved.append(table.numpy())
    np.testing.assert_allclose(moved[0], moved[2], rtol=1e-5)  # float32 sums of 1,000 rows
    np.testing.assert_allclose(moved[1], moved[2], rtol=1e-5)


def test_without_clipping_keras_optimizers_are_unchanged_bit_for_bit():
    rng = np.random.default_rng(3)
    for name, cls in (("adam", keras.optimizers.Adam), ("sgd", keras.optimizers.SGD)):
        a = keras.Variable(np.ones((4, 3), "float32"), name="kernel")
        b = keras.Variable(np.ones((4, 3), "float32"), name="kernel")
        ours, theirs = make_optimizer({"name": name, "learning_rate": 0.1}), cls(learning_rate=0.1)
        for _ in range(3):
            g = tf.constant(rng.normal(size=(4, 3)).astype("float32"))
            ours.apply_gradients([(g, a)])
            theirs.apply_gradients([(g, b)])
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_keras_serialization_keeps_the_class():
    opt = make_optimizer({"name": "adam", "learning_rate": 0.01, "clipnorm": 2.0})
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(restored) is type(opt)
    assert keras.saving.get_registered_name(type(opt)) == "mtlrec>Adam"
    assert restored.get_config() == opt.get_config()


@pytest.mark.parametrize("clip", [{"clipnorm": 1.0}, {"global_clipnorm": 1.0}, {"clipvalue": 5.0}])
def test_sharded_tables_clip_the_summed_rows_of_each_shard(clip):
    # Row 3 of a 5-row table sharded 3 + 2 is row 0 of the second shard.
    shards = [tf.Variable(np.zeros((3, 2), "float32"), name="embedding_t/part_0"),
              tf.Variable(np.zeros((2, 2), "float32"), name="embedding_t/part_1")]
    sharded = tf.__internal__.distribute.ShardedVariable(shards)
    optimizer = make_optimizer({"name": "lazy_adagrad", "learning_rate": 1.0, **clip})
    optimizer.build([])
    rows = ShardedRowOptimizer(optimizer, [sharded], tf.distribute.get_strategy())
    gradient = tf.IndexedSlices(tf.constant(np.tile(ROW, (LOOKUPS, 1))), tf.constant([0] * LOOKUPS))
    rows.apply([([None, gradient], sharded)])
    g = np.array([5.0, 5.0]) if "clipvalue" in clip else np.array([0.6, 0.8])
    got = tf.concat([s.read_value() for s in table_shards(sharded)], 0).numpy()
    np.testing.assert_allclose(-got[3], g / np.sqrt(0.1 + g**2 + 1e-7), rtol=1e-5)


_TWO_REPLICAS = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from mtlrec.optimizers import make_optimizer
from mtlrec.layers.embedding.sparse_reads import gather_rows

# A global batch of 8: id 1 five times, id 3 three times; replica 0 gets the first 4.
IDS = np.array([1, 1, 3, 1, 1, 3, 3, 1], "int64")
Y = np.array([1.0, 0.0, 2.0, 1.0, 3.0, -1.0, 2.0, 0.5], "float32")
TABLE = np.full((6, 2), 0.5, "float32")
KERNEL = np.array([[2.0], [-1.0]], "float32")

def run(strategy, embedding, dense, clip):
    with strategy.scope():
        table = keras.Variable(TABLE, name="embeddings")
        kernel = keras.Variable(KERNEL, name="kernel")
        emb_opt = make_optimizer({"name": embedding, "learning_rate": 0.1, **clip})
        dense_opt = make_optimizer({"name": dense, "learning_rate": 0.1, **clip})
        emb_opt.build([table])
        dense_opt.build([kernel])

    def replica_step(ids, y):
        # As mtlrec's trainer: the local mean loss, its gradient divided by the replicas.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            pred = tf.matmul(gather_rows(table, ids), kernel.value)[:, 0]
            loss = tf.reduce_mean(tf.square(pred - y))
        g_table, g_kernel = tape.gradient(loss, [table.value, kernel.value])
        g_table = tf.IndexedSlices(g_table.values / replicas, g_table.indices, g_table.dense_shape)
        emb_opt.apply_gradients([(g_table, table)])
        dense_opt.apply_gradients([(g_kernel / replicas, kernel)])

    step = tf.function(lambda ids, y: strategy.run(replica_step, args=(ids, y)))
    ds = tf.data.Dataset.from_tensor_slices((IDS, Y)).batch(8).repeat(3)
    for ids, y in strategy.experimental_distribute_dataset(ds):
        step(ids, y)
    return table.numpy(), kernel.numpy()

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": mirrored.num_replicas_in_sync, "diffs": {}, "moved": {}}
for embedding, dense, clip in (("lazy_adagrad", "sgd", {"clipnorm": 0.5}),
                               ("lazy_adagrad", "sgd", {"global_clipnorm": 0.5}),
                               ("lazy_adagrad", "sgd", {"clipvalue": 0.3}),
                               ("lazy_adam", "adam", {"global_clipnorm": 0.5})):
    one = run(tf.distribute.get_strategy(), embedding, dense, clip)
    two = run(mirrored, embedding, dense, clip)
    key = f"{embedding}+{dense} {json.dumps(clip)}"
    out["diffs"][key] = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two))
    out["moved"][key] = float(np.max(np.abs(one[0] - TABLE)))
print(json.dumps(out))
"""


def test_two_mirrored_replicas_clip_as_one_device():
    # Logical devices must be set before TensorFlow starts: separate process.
    root = pathlib.Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    proc = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], cwd=root, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert all(moved > 0.01 for moved in result["moved"].values()), result["moved"]
    assert {key: diff for key, diff in result["diffs"].items() if diff > 1e-6} == {}, result["diffs"]
