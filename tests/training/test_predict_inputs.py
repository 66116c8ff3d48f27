"""`predict` and training read the same rows into the same model inputs (one converter:
types, defaults of nulls and non-finite numerics, sequences cut and padded)."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtlrec.data_pipeline import make_dataset
from mtlrec.data_pipeline.partitions import day_dir
from mtlrec.data_pipeline.tfrecord_io import write_tfrecord
from mtlrec.training.serving.predict import _record_batches, batch_inputs, input_files

DAY = "2024-03-01"
SCHEMA = {
    "categorical": [
        {"name": "user_id", "dtype": "int64", "num_buckets": 16, "dim": 2},
        {"name": "scene", "dtype": "string", "num_buckets": 8, "dim": 2, "default": "home"},
        {"name": "shop", "dtype": "string", "num_buckets": 8, "dim": 2},
    ],
    "numeric": [
        {"name": "price", "normalize": "log1p", "default": 1.5},
        {"name": "age", "normalize": "none"},
    ],
    "sequence": [
        {"name": "hist_item", "dtype": "int64", "max_len": 3, "num_buckets": 16, "dim": 2},
        {"name": "hist_scene", "dtype": "string", "max_len": 3, "num_buckets": 8, "dim": 2},
    ],
    "labels": [{"name": "click", "kind": "binary"}],
}
# Row 0 plain; 1 nulls everywhere; 2 longer lists than max_len, a null inside a list, an
# integer shop id (read as its decimal string), NaN and inf numerics; 3 empty lists.
COLUMNS = {
    "user_id": pa.array([3, None, 7, 0], pa.int64()),
    "scene": pa.array(["feed", None, "cart", ""], pa.string()),
    "shop": pa.array([11, None, 12345, 4], pa.int64()),
    "price": pa.array([2.0, None, math.nan, math.inf], pa.float64()),
    "age": pa.array([30.0, None, -math.inf, 0.5], pa.float32()),
    "hist_item": pa.array([[1, 2], None, [5, None, 7, 8, 9], []], pa.list_(pa.int64())),
    "hist_scene": pa.array([["a"], None, ["a", "b", None, "c"], []], pa.list_(pa.string())),
    "click": pa.array([1.0, 0.0, 1.0, 0.0], pa.float32()),
}
EXPECTED = {
    "user_id": [3, -1, 7, 0],
    "scene": ["feed", "home", "cart", ""],
    "shop": ["11", "", "12345", "4"],
    "price": [2.0, 1.5, 1.5, 1.5],
    "age": [30.0, 0.0, 0.0, 0.5],
    "hist_item": [[1, 2, -1], [-1, -1, -1], [7, 8, 9], [-1, -1, -1]],
    "hist_scene": [["a", "", ""], ["", "", ""], ["b", "", "c"], ["", "", ""]],
}


def _as_str(value):
    return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value) if value.dtype == object else value


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_inputs")
    path = day_dir(root, DAY)
    (root / f"dt={DAY}").mkdir()
    table = pa.table(COLUMNS)
    pq.write_table(table, f"{path}/part-0.parquet")
    write_tfrecord(f"{path}/part-0.tfrecord", table.to_batches())
    return root


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_predict_and_training_read_the_same_inputs(root, fmt):
    features, _ = next(iter(make_dataset(root, DAY, SCHEMA, fmt=fmt, batch_size=16)))
    trained = {name: _as_str(value.numpy()) for name, value in features.items()}
    file = next(f for f in input_files(root / f"dt={DAY}") if f.name.endswith(fmt))
    sequences = {"hist_item", "hist_scene"}
    dtypes = {"user_id": "int64", "hist_item": "int64", "price": "float32", "age": "float32"}
    inputs = {  # as an export's metadata lists its serving inputs
        name: {"dtype": dtypes.get(name, "string"), "shape": [None, None] if name in sequences else [None]}
        for name in EXPECTED
    }
    (batch,) = list(_record_batches(file, list(inputs), sequences, batch_size=16))
    predicted = batch_inputs(batch, inputs, SCHEMA, file)
    assert sorted(predicted) == sorted(trained) == sorted(EXPECTED)
    for name, expected in EXPECTED.items():
        np.testing.assert_array_equal(trained[name], np.array(expected, dtype=trained[name].dtype), err_msg=name)
        np.testing.assert_array_equal(predicted[name], trained[name], err_msg=name)
        assert predicted[name].dtype == trained[name].dtype, name
