"""The Parquet stream against a row-by-row reference of its documented conversion, on a day
with every kind of column, nulls, NaN and infinities, odd row groups and batches that span
record batches and files."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtlrec.data_pipeline import make_dataset, parquet_reader

DAY = "2024-06-01"
SCHEMA = {
    "key": "rid",
    "categorical": [
        {"name": "uid", "dtype": "int64", "num_buckets": 10, "dim": 2},
        {"name": "scene", "dtype": "string", "num_buckets": 10, "dim": 2, "default": "none"},
        {"name": "shop", "dtype": "string", "num_buckets": 10, "dim": 2},
    ],
    "numeric": [{"name": "price", "normalize": "log1p", "default": -1.0}, {"name": "age", "default": 3.0}],
    "sequence": [
        {"name": "hist", "dtype": "int64", "max_len": 4, "num_buckets": 10, "dim": 2},
        {"name": "hist2", "dtype": "int64", "max_len": 4, "num_buckets": 10, "dim": 2},
        {"name": "hist_s", "dtype": "string", "max_len": 3, "num_buckets": 10, "dim": 2},
    ],
    "labels": [{"name": "click", "kind": "binary"}, {"name": "conversion", "kind": "binary"}],
}
EXTRAS = ("weight", "user_name", "uid")


def _file(rng, f, n):
    lens = rng.integers(0, 7, n)
    hist = [None if rng.random() < 0.1 else
            [None if rng.random() < 0.1 else int(x) for x in rng.integers(0, 1000, k)] for k in lens]
    return pa.table({
        "rid": pa.array([f"r{f}_{i}" for i in range(n)]),
        "uid": pa.array([None if rng.random() < 0.1 else int(x) for x in rng.integers(0, 10**6, n)], pa.int32()),
        "scene": pa.array([None if rng.random() < 0.2 else ["search", "rec", "ünï"][int(x)] for x in rng.integers(0, 3, n)]),
        "shop": pa.array(rng.integers(0, 10**5, n), pa.int64()),  # int ids declared string
        "price": pa.array([None if r < 0.1 else math.nan if r < 0.2 else math.inf if r < 0.25 else float(x)
                           for r, x in zip(rng.random(n), rng.normal(size=n))], pa.float64()),
        "age": pa.array(rng.integers(0, 90, n), pa.int16()),
        "hist": pa.array(hist, pa.list_(pa.int64())),
        "hist2": pa.array([None if h is None else [7 if x is None else x + 1 for x in h] for h in hist], pa.list_(pa.int64())),
        "hist_s": pa.array([[None if j == 2 else f"s{j}" for j in range(int(k))] for k in rng.integers(0, 6, n)]),
        "click": pa.array(rng.integers(0, 2, n), pa.int64()),
        "conversion": pa.array(rng.integers(0, 2, n), pa.int8()),
        "weight": pa.array(rng.random(n), pa.float32()),
        "user_name": pa.array([None if rng.random() < 0.2 else f"u{int(x)}" for x in rng.integers(0, 50, n)]),
    })


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    d = root / f"dt={DAY}"
    d.mkdir()
    rng = np.random.default_rng(4)
    tables = [_file(rng, f, n) for f, n in enumerate([181, 37, 242])]
    for f, (t, group) in enumerate(zip(tables, [50, 37, 61])):
        pq.write_table(t, d / f"part-{f:05d}.parquet", row_group_size=group)
    return root, pa.concat_tables(tables).to_pylist()


def _last(items, max_len, pad):
    items = [pad if v is None else v for v in (items or [])][-max_len:]
    return items + [pad] * (max_len - len(items))


def _finite(x, default):
    return default if x is None or not math.isfinite(x) else x


def reference(rows):
    """The documented conversion, one row at a time."""
    return {
        "uid": np.array([-1 if r["uid"] is None else r["uid"] for r in rows], np.int64),
        "scene": np.array([(r["scene"] or "none").encode() for r in rows], object),
        "shop": np.array([str(r["shop"]).encode() for r in rows], object),
        "price": np.array([_finite(r["price"], -1.0) for r in rows], np.float32),
        "age": np.array([float(r["age"]) for r in rows], np.float32),
        "hist": np.array([_last(r["hist"], 4, -1) for r in rows], np.int64),
        "hist2": np.array([_last(r["hist2"], 4, -1) for r in rows], np.int64),
        "hist_s": np.array([[s.encode() for s in _last(r["hist_s"], 3, "")] for r in rows], object),
        "click": np.array([r["click"] for r in rows], np.float32),
        "conversion": np.array([r["conversion"] for r in rows], np.float32),
        "weight": np.array([r["weight"] for r in rows], np.float32),
        "user_name": np.array([(r["user_name"] or "").encode() for r in rows], object),
    }


def _batches(ds):
    out = []
    for features, labels in ds:
        out.append({k: v.numpy() for k, v in {**features, **labels}.items()})
    return out


@pytest.mark.parametrize("batch_size,read_rows,workers", [(64, 65536, 0), (7, 23, 0), (7, 23, 2)])
def test_batches_equal_the_row_by_row_reference(day, monkeypatch, batch_size, read_rows, workers):
    root, rows = day
    monkeypatch.setattr(parquet_reader, "READ_BATCH_ROWS", read_rows)
    monkeypatch.setattr(parquet_reader, "READ_WORKERS", workers)
    batches = _batches(make_dataset(root, DAY, SCHEMA, batch_size=batch_size, extra_columns=EXTRAS))
    n = len(rows)
    assert [len(b["click"]) for b in batches] == [batch_size] * (n // batch_size) + [n % batch_size]
    want = reference(rows)
    for name, values in want.items():
        got = np.concatenate([b[name] for b in batches])
        assert got.dtype == values.dtype, name
        np.testing.assert_array_equal(got, values, err_msg=name)


@pytest.mark.parametrize("workers", [0, 3])
def test_shuffled_batches_are_the_same_rows_in_a_seeded_order(day, monkeypatch, workers):
    root, rows = day
    monkeypatch.setattr(parquet_reader, "READ_BATCH_ROWS", 40)
    monkeypatch.setattr(parquet_reader, "READ_WORKERS", workers)
    run = lambda seed: _batches(make_dataset(root, DAY, SCHEMA, batch_size=16, shuffle_buffer=100,  # noqa: E731
                                             seed=seed, extra_columns=EXTRAS))
    a, b, c = run(3), run(3), run(4)
    assert [len(x["click"]) for x in a] == [16] * (len(rows) // 16) + [len(rows) % 16]
    for x, y in zip(a, b):
        for name in x:
            np.testing.assert_array_equal(x[name], y[name], err_msg=name)
    got = {name: np.concatenate([x[name] for x in a]) for name in a[0]}
    assert not np.array_equal(got["weight"], np.concatenate([x["weight"] for x in c]))
    # the same rows: every row of the reference once, found by its unique weight
    want = reference(rows)
    order = np.argsort(want["weight"])
    found = np.argsort(got["weight"])
    for name, values in want.items():
        np.testing.assert_array_equal(got[name][found], values[order], err_msg=name)
