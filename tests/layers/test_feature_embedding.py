import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.layers import FeatureEmbedding
from mtlrec.layers.embedding.feature_embedding import hash_ids

SCHEMA = {
    "categorical": [
        {"name": "user_id", "dtype": "string", "num_buckets": 50, "dim": 3},
        {"name": "item_id", "dtype": "int64", "num_buckets": 40, "dim": 3},
        {"name": "brand", "dtype": "int64", "num_buckets": 40, "dim": 3, "shared_with": "item_id"},
    ],
    "numeric": [
        {"name": "price", "normalize": "log1p"},
        {"name": "hist_ctr", "normalize": "standardize", "mean": 0.1, "std": 0.05},
        {"name": "raw", "normalize": "none"},
    ],
    "sequence": [
        {"name": "hist_item", "dtype": "int64", "max_len": 4, "shared_with": "item_id"},
        {"name": "hist_scene", "dtype": "string", "max_len": 4, "num_buckets": 7, "dim": 2},
    ],
    "labels": [{"name": "click", "kind": "binary"}],
}


def _inputs(schema=SCHEMA):
    inputs = {}
    for f in schema.get("categorical", []):
        inputs[f["name"]] = keras.Input(shape=(), dtype=f["dtype"], name=f["name"])
    for f in schema.get("numeric", []):
        inputs[f["name"]] = keras.Input(shape=(), dtype="float32", name=f["name"])
    for f in schema.get("sequence", []):
        inputs[f["name"]] = keras.Input(shape=(f["max_len"],), dtype=f["dtype"], name=f["name"])
    return inputs


def _batch():
    return {
        "user_id": np.array(["u1", "u2", "u3"]),
        "item_id": np.array([7, 8, 7], dtype=np.int64),
        "brand": np.array([1, 2, 3], dtype=np.int64),
        "price": np.array([0.0, math.e - 1, -3.0], dtype=np.float32),
        "hist_ctr": np.array([0.1, 0.2, 0.0], dtype=np.float32),
        "raw": np.array([1.5, -2.0, 0.0], dtype=np.float32),
        "hist_item": np.array([[7, 9, -1, -1], [-1, -1, -1, -1], [1, 2, 3, 4]], dtype=np.int64),
        "hist_scene": np.array([["search", "", "", ""], ["", "", "", ""], ["a", "b", "a", "b"]]),
    }


def _set_tables(layer):
    """Row r of each table = r + column/10 (+100 for the sequence-own table)."""
    for name, table in layer.tables.items():
        rows, dim = table.shape
        value = np.arange(rows)[:, None] + np.arange(dim)[None, :] / 10.0
        table.assign(value + (100.0 if name == "hist_scene" else 0.0))


def _row(bucket, dim, offset=0.0):
    return bucket + np.arange(dim) / 10.0 + offset


def test_hash_is_pinned_and_int_equals_string():
    # FarmHash Fingerprint64 of the decimal string: fixed values, across versions and processes
    np.testing.assert_array_equal(hash_ids(["a", "search", "123", "", "-1"], 1000).numpy(), [939, 90, 931, 263, 430])
    np.testing.assert_array_equal(hash_ids(np.array([123, -1, 0, 5000007]), 1000).numpy(), [931, 430, 735, 118])
    np.testing.assert_array_equal(hash_ids(np.array([5000007], np.int32), 2**20).numpy(), [320126])


def test_hash_stable_across_processes():
    ids = ["item-1", "x", "42"]
    ints = [42, 7, 10**12]
    code = (
        "import json, os; os.environ['TF_CPP_MIN_LOG_LEVEL']='3';"
        "from mtlrec.layers.embedding.feature_embedding import hash_ids;"
        f"print(json.dumps([hash_ids({ids!r}, 97).numpy().tolist(), hash_ids({ints!r}, 97).numpy().tolist()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    other = json.loads(out.stdout.strip().splitlines()[-1])
    assert other == [hash_ids(ids, 97).numpy().tolist(), hash_ids(ints, 97).numpy().tolist()]


def test_outputs_values_and_shapes():
    layer = FeatureEmbedding(SCHEMA)
    layer.build()
    _set_tables(layer)
    out = layer(_batch())
    assert set(out) == {"dense", "fields", "embeddings", "numeric", "sequences", "masks"}
    assert out["dense"].shape == (3, 3 * 3 + 3)
    assert out["fields"].shape == (3, 3, 3)
    b = _batch()
    u = hash_ids(b["user_id"], 50).numpy()
    it = hash_ids(b["item_id"], 40).numpy()
    br = hash_ids(b["brand"], 40).numpy()
    np.testing.assert_allclose(out["embeddings"]["user_id"], np.stack([_row(x, 3) for x in u]), rtol=1e-6)
    np.testing.assert_allclose(out["embeddings"]["item_id"], np.stack([_row(x, 3) for x in it]), rtol=1e-6)
    # brand reads the item_id table
    np.testing.assert_allclose(out["embeddings"]["brand"], np.stack([_row(x, 3) for x in br]), rtol=1e-6)
    numeric = np.array([[0.0, 0.0, 1.5], [1.0, 2.0, -2.0], [-math.log(4.0), -2.0, 0.0]])
    np.testing.assert_allclose(out["numeric"], numeric, rtol=1e-5, atol=1e-6)
    dense = np.concatenate([out["embeddings"][k] for k in ("user_id", "item_id", "brand")] + [numeric], axis=1)
    np.testing.assert_allclose(out["dense"], dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["fields"][:, 2], out["embeddings"]["brand"])


def test_sequences_and_masks():
    layer = FeatureEmbedding(SCHEMA)
    layer.build()
    _set_tables(layer)
    out = layer(_batch())
    np.testing.assert_array_equal(out["masks"]["hist_item"], [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(out["masks"]["hist_scene"], [[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    seq = out["sequences"]["hist_item"].numpy()
    assert seq.shape == (3, 4, 3)
    np.testing.assert_allclose(seq[0, 0], _row(hash_ids([7], 40).numpy()[0], 3), rtol=1e-6)
    np.testing.assert_allclose(seq[2, 3], _row(hash_ids([4], 40).numpy()[0], 3), rtol=1e-6)
    assert not seq[0, 2:].any() and not seq[1].any()  # padded steps are zero
    # same id, same shared table -> same vector as the categorical lookup
    np.testing.assert_allclose(seq[0, 0], out["embeddings"]["item_id"][0])
    scene = out["sequences"]["hist_scene"].numpy()
    assert scene.shape == (3, 4, 2)
    np.testing.assert_allclose(scene[0, 0], _row(hash_ids(["search"], 7).numpy()[0], 2, 100.0), rtol=1e-6)


def test_a_subset_embeds_only_the_features_it_names():
    layer = FeatureEmbedding(SCHEMA)
    layer.build()
    _set_tables(layer)
    full = layer(_batch())
    b = _batch()
    sub = layer({k: b[k] for k in ("brand", "raw", "hist_scene")}, subset=["raw", "hist_scene", "brand"])
    assert set(sub) == {"dense", "fields", "embeddings", "numeric", "sequences", "masks"}
    assert list(sub["embeddings"]) == ["brand"] and list(sub["sequences"]) == ["hist_scene"]
    np.testing.assert_allclose(sub["embeddings"]["brand"], full["embeddings"]["brand"])
    np.testing.assert_allclose(sub["numeric"], full["numeric"][:, 2:])  # raw is the third numeric
    # dense = the subset's categorical embeddings, then its numerics (schema order)
    np.testing.assert_allclose(sub["dense"], np.concatenate([full["embeddings"]["brand"], full["numeric"][:, 2:]], 1))
    np.testing.assert_allclose(sub["sequences"]["hist_scene"], full["sequences"]["hist_scene"])
    numerics_only = layer({"price": b["price"]}, subset=["price"])
    assert set(numerics_only) == {"dense", "numeric", "embeddings", "sequences", "masks"}
    with pytest.raises(ValueError, match=r"expected subset to name features of the schema .*Received: subset=\['nope'\]"):
        layer(b, subset=["nope"])
    with pytest.raises(ValueError, match=r"Received: subset=\[\]"):
        layer(b, subset=[])
    with pytest.raises(ValueError, match=r"input feature 'raw' missing"):
        layer({"brand": b["brand"]}, subset=["brand", "raw"])


def test_tables_named_and_shared():
    layer = FeatureEmbedding(SCHEMA)
    layer.build()
    assert sorted(layer.tables) == ["hist_scene", "item_id", "user_id"]
    assert len(layer.weights) == 3
    assert all(w.name.startswith("embedding_") for w in layer.weights)
    assert layer.tables["item_id"].shape == (40, 3) and layer.tables["hist_scene"].shape == (7, 2)


def test_gradients_are_sparse_rows():
    layer = FeatureEmbedding(SCHEMA)
    layer.build()
    with tf.GradientTape() as tape:
        out = layer(_batch())
        loss = tf.reduce_sum(out["dense"]) + tf.reduce_sum(out["sequences"]["hist_item"])
    grad = tape.gradient(loss, layer.tables["item_id"])
    assert isinstance(grad, tf.IndexedSlices)


def test_fields_and_numeric_absent():
    schema = {"categorical": [{"name": "a", "num_buckets": 5, "dim": 2}, {"name": "b", "num_buckets": 5, "dim": 3}]}
    out = FeatureEmbedding(schema)({"a": np.array([1, 2]), "b": np.array([3, 4])})
    assert "fields" not in out and "numeric" not in out
    assert out["dense"].shape == (2, 5)
    assert out["sequences"] == {} and out["masks"] == {}


def test_accepts_column_vectors():
    schema = {"categorical": [{"name": "a", "num_buckets": 5, "dim": 2}], "numeric": [{"name": "x"}]}
    layer = FeatureEmbedding(schema)
    flat = layer({"a": np.array([1, 2]), "x": np.array([1.0, 2.0], np.float32)})
    col = layer({"a": np.array([[1], [2]]), "x": np.array([[1.0], [2.0]], np.float32)})
    np.testing.assert_allclose(flat["dense"], col["dense"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: schema=\\[1, 2\\]"):
        FeatureEmbedding([1, 2])
    with pytest.raises(ValueError, match=r"schema.numeric\[0\] \(x\): normalize: standardize needs mean and std"):
        FeatureEmbedding({"numeric": [{"name": "x", "normalize": "standardize"}]})
    with pytest.raises(ValueError, match=r"schema.categorical\[0\].num_buckets: expected a positive integer, got 0"):
        FeatureEmbedding({"categorical": [{"name": "a", "num_buckets": 0, "dim": 2}]})
    layer = FeatureEmbedding({"categorical": [{"name": "a", "num_buckets": 5, "dim": 2}]})
    with pytest.raises(ValueError, match="input feature 'a' missing"):
        layer({"b": np.array([1])})


def test_config_roundtrip():
    layer = FeatureEmbedding(SCHEMA, name="fe")
    config = layer.get_config()
    assert config["schema"]["sequence"][0] == {"name": "hist_item", "dtype": "int64", "max_len": 4, "shared_with": "item_id"}
    json.dumps(config)
    clone = FeatureEmbedding.from_config(config)
    assert clone.get_config() == config


def _model(schema=SCHEMA):
    inputs = _inputs(schema)
    out = FeatureEmbedding(schema, name="fe")(inputs)
    pooled = keras.ops.sum(out["sequences"]["hist_item"], axis=1)
    x = keras.layers.Concatenate()([out["dense"], pooled])
    y = keras.layers.Dense(1, activation="sigmoid", name="ctr")(x)
    return keras.Model(inputs, {"ctr": y})


def test_keras_roundtrip(keras_roundtrip):
    model = _model()
    expected = model(_batch())["ctr"]
    loaded = keras_roundtrip(model)
    np.testing.assert_allclose(loaded(_batch())["ctr"], expected, rtol=1e-6)
    fe = loaded.get_layer("fe")
    assert isinstance(fe, FeatureEmbedding) and fe.tables["item_id"] is not None


def test_export_serves_raw_string_ids(tmp_path):
    model = _model()
    batch = _batch()
    expected = model(batch)["ctr"].numpy()
    model.export(str(tmp_path / "export"), verbose=False)
    restored = tf.saved_model.load(str(tmp_path / "export"))
    served = restored.serve({k: tf.constant(v) for k, v in batch.items()})
    np.testing.assert_allclose(served["ctr"].numpy(), expected, rtol=1e-6)
    # an id never seen before is just another hash bucket
    unseen = dict(batch, user_id=np.array(["brand-new-user", "u2", "u3"]))
    assert restored.serve({k: tf.constant(v) for k, v in unseen.items()})["ctr"].shape == (3, 1)
    sig = restored.signatures["serving_default"]
    assert sig.structured_input_signature[1]["user_id"].dtype == tf.string
