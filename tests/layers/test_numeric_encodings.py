"""Numeric features as embeddings: bucket ids and piecewise-linear encodings at and
around the cuts, the embeddings `FeatureEmbedding` reads from their tables, fields."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.layers import FeatureEmbedding
from mtlrec.layers.embedding.numeric_encodings import bucket_ids, piecewise_linear

BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # the float32 just under 1

SCHEMA = {
    "categorical": [
        {"name": "user_id", "dtype": "int64", "num_buckets": 10, "dim": 2},
        {"name": "item_id", "dtype": "int64", "num_buckets": 10, "dim": 2},
    ],
    "numeric": [
        {"name": "price", "normalize": "bucketize", "boundaries": [0.0, 1.0, 2.5]},
        {"name": "age", "normalize": "piecewise_linear", "boundaries": [0.0, 1.0, 3.0]},
        {"name": "raw", "normalize": "none"},
    ],
    "labels": [{"name": "click"}],
}


def test_bucket_ids_count_the_cuts_at_or_below_the_value():
    x = np.array([-7.0, -0.0, 0.0, 0.5, BELOW_ONE, 1.0, 2.4999, 2.5, 1e30], dtype=np.float32)
    # cuts 0, 1, 2.5: a value equal to a cut is in the bucket above it
    assert np.asarray(bucket_ids(x, [0.0, 1.0, 2.5])).tolist() == [0, 1, 1, 1, 1, 2, 2, 3, 3]


def test_piecewise_linear_is_the_position_inside_each_bucket_between_two_cuts():
    x = np.array([-1.0, 0.0, 0.25, BELOW_ONE, 1.0, 2.0, 3.0, 1e9], dtype=np.float32)
    got = np.asarray(piecewise_linear(x, [0.0, 1.0, 3.0]))
    expected = [
        [0.0, 0.0],  # below the first cut: zeros (the paper's unclipped value would be -1)
        [0.0, 0.0],
        [0.25, 0.0],
        [BELOW_ONE, 0.0],
        [1.0, 0.0],  # at a cut: the bucket below is full, the one above empty
        [1.0, 0.5],  # (2 - 1) / (3 - 1)
        [1.0, 1.0],
        [1.0, 1.0],  # far above the last cut: ones, not 5e8
    ]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)


def _layer():
    layer = FeatureEmbedding(SCHEMA, seed=3)
    layer.build()
    for table in list(layer.tables.values()) + list(layer.numeric_tables.values()):
        rows, dim = table.shape
        table.assign(np.arange(rows * dim, dtype=np.float32).reshape(rows, dim))
    return layer


def _batch():
    return {
        "user_id": np.array([1, 2, 3], dtype=np.int64),
        "item_id": np.array([4, 5, 6], dtype=np.int64),
        "price": np.array([-1.0, 1.0, 2.5], dtype=np.float32),
        "age": np.array([0.5, 2.0, 10.0], dtype=np.float32),
        "raw": np.array([7.0, 8.0, 9.0], dtype=np.float32),
    }


def test_embeddings_are_table_rows_and_their_piecewise_linear_mix():
    layer = _layer()
    assert {k: tuple(v.shape) for k, v in layer.numeric_tables.items()} == {"price": (4, 2), "age": (3, 2)}
    assert [v.path for v in layer.weights] == [
        "feature_embedding/embedding_user_id", "feature_embedding/embedding_item_id",
        "feature_embedding/embedding_price", "feature_embedding/embedding_age",
    ]
    out = layer(_batch())
    # price: buckets 0, 2, 3 -> rows [0, 1], [4, 5], [6, 7]
    np.testing.assert_array_equal(out["embeddings"]["price"], [[0, 1], [4, 5], [6, 7]])
    # age: rows W0 = [0, 1] (bias), W1 = [2, 3], W2 = [4, 5]; e(0.5) = (0.5, 0),
    # e(2) = (1, 0.5), e(10) = (1, 1)
    np.testing.assert_allclose(out["embeddings"]["age"], [[1, 2.5], [4, 6.5], [6, 9]])
    assert list(out["embeddings"]) == ["user_id", "item_id", "price", "age"]
    assert tuple(out["fields"].shape) == (3, 4, 2)  # the numeric embeddings are fields too
    np.testing.assert_array_equal(out["fields"][:, 2], out["embeddings"]["price"])
    np.testing.assert_array_equal(out["numeric"], [[7], [8], [9]])  # only the scalar numeric
    dense = np.asarray(out["dense"])
    assert dense.shape == (3, 9)  # 2 ids x 2 + 2 numerics x 2 + 1 raw value
    np.testing.assert_allclose(dense[:, 4:8], np.concatenate([out["embeddings"]["price"], out["embeddings"]["age"]], -1))


def test_numeric_tables_get_row_sparse_gradients():
    layer = _layer()
    with tf.GradientTape() as tape:
        out = layer(_batch())
        loss = tf.reduce_sum(out["embeddings"]["price"]) + tf.reduce_sum(out["embeddings"]["age"])
    price, age = tape.gradient(loss, [layer.numeric_tables["price"], layer.numeric_tables["age"]])
    assert isinstance(price, tf.IndexedSlices) and sorted(price.indices.numpy().tolist()) == [0, 2, 3]
    # every PLE row is read: the bias row by each value (3), W1 by 0.5 + 1 + 1, W2 by 0 + 0.5 + 1
    dense_age = tf.math.unsorted_segment_sum(age.values, age.indices, 3).numpy()
    np.testing.assert_allclose(dense_age, [[3, 3], [2.5, 2.5], [1.5, 1.5]])


def test_tables_are_seeded_and_a_missing_boundary_is_refused():
    a, b = FeatureEmbedding(SCHEMA, seed=5), FeatureEmbedding(SCHEMA, seed=5)
    a.build(), b.build()
    np.testing.assert_array_equal(a.numeric_tables["age"].numpy(), b.numeric_tables["age"].numpy())
    assert np.abs(a.numeric_tables["price"].numpy()).max() <= 0.05
    schema = {"numeric": [{"name": "x", "normalize": "bucketize", "dim": 4}]}
    with pytest.raises(ValueError, match=r"schema.numeric\[0\] \(x\): normalize: bucketize needs boundaries"):
        FeatureEmbedding(schema)


def test_keras_roundtrip_keeps_boundaries_and_tables(keras_roundtrip):
    inputs = {f["name"]: keras.Input(shape=(), dtype=f.get("dtype", "float32"), name=f["name"])
              for f in SCHEMA["categorical"] + SCHEMA["numeric"]}
    layer = FeatureEmbedding(SCHEMA, seed=1)
    model = keras.Model(inputs, layer(inputs)["dense"])
    loaded = keras_roundtrip(model)
    restored = loaded.get_layer("feature_embedding")
    assert restored.get_config()["schema"]["numeric"][1]["boundaries"] == [0.0, 1.0, 3.0]
    np.testing.assert_array_equal(loaded(_batch()), model(_batch()))
