import copy

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtlrec.data_pipeline import funnel_schema_dict, generate_funnel

KNOBS = dict(num_users=300, num_items=200, num_categories=10, num_brands=20, num_shops=15, max_len=5,
             files_per_day=2, row_group_size=500)
DAYS = ["2024-03-01", "2024-03-02", "2024-03-03"]


@pytest.fixture(scope="session")
def funnel_root(tmp_path_factory):
    """Three Parquet days of 3000 rows (two files each) of a small synthetic funnel."""
    root = tmp_path_factory.mktemp("funnel")
    generate_funnel(root, DAYS[0], len(DAYS), 3000, seed=7, **KNOBS)
    return root


@pytest.fixture(scope="session")
def funnel_schema():
    return funnel_schema_dict(**KNOBS)


HAND_SCHEMA = {
    "key": "rid",
    "categorical": [
        {"name": "uid", "dtype": "int64", "num_buckets": 10, "dim": 2},
        {"name": "scene", "dtype": "string", "num_buckets": 10, "dim": 2, "default": "none"},
        {"name": "shop", "dtype": "string", "num_buckets": 10, "dim": 2},
    ],
    "numeric": [{"name": "price", "normalize": "log1p", "default": -1.0}],
    "sequence": [
        {"name": "hist", "dtype": "int64", "max_len": 3, "num_buckets": 10, "dim": 2},
        {"name": "hist_s", "dtype": "string", "max_len": 2, "num_buckets": 10, "dim": 2},
    ],
    "labels": [{"name": "click", "kind": "binary"}, {"name": "conversion", "kind": "binary"}],
}


def _hand_table(n=10):
    """Rows with known values: nulls in features, long sequences, an int column read as string."""
    return pa.table({
        "rid": pa.array([f"r{i}" for i in range(n)]),
        "uid": pa.array([i if i % 4 else None for i in range(n)], pa.int32()),
        "scene": pa.array([None if i % 3 == 0 else ("search" if i % 2 else "rec") for i in range(n)]),
        "shop": pa.array([100 + i for i in range(n)], pa.int64()),  # int ids declared string
        "price": pa.array([None if i == 2 else float(i) for i in range(n)], pa.float64()),
        "hist": pa.array([list(range(i)) if i != 5 else None for i in range(n)], pa.list_(pa.int64())),
        "hist_s": pa.array([[f"s{j}" for j in range(i % 4)] for i in range(n)]),
        "click": pa.array([i % 2 for i in range(n)], pa.int64()),
        "conversion": pa.array([1 if i % 4 == 1 else 0 for i in range(n)], pa.int8()),
        "noise": pa.array([0.5] * n),
    })


def _write_day(root, day, tables, name="part-{i:05d}.parquet"):
    d = root / f"dt={day}"
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, t in enumerate(tables):
        path = d / name.format(i=i)
        pq.write_table(t, path, row_group_size=4)
        paths.append(path)
    return paths


@pytest.fixture
def hand_schema():
    return copy.deepcopy(HAND_SCHEMA)


@pytest.fixture
def hand_table():
    return _hand_table


@pytest.fixture
def write_day():
    return _write_day


@pytest.fixture(scope="session")
def funnel_days():
    return list(DAYS)


@pytest.fixture(scope="session")
def funnel_knobs():
    return dict(KNOBS)
