import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtlrec.data_pipeline import DataValidationError, make_dataset, validate_day
from mtlrec.data_pipeline.tfrecord_io import write_tfrecord

DAY = "2024-06-01"


def _replace(table, name, array):
    return table.set_column(table.column_names.index(name), name, array)


def _write(root, table, fmt, first=None):
    """Rows 0..3 (from `first` when given) to part-00000, rows 4.. of `table` to part-00001."""
    d = root / f"dt={DAY}"
    d.mkdir(parents=True, exist_ok=True)
    head = (table if first is None else first).slice(0, 4)
    pq.write_table(head, d / "part-00000.parquet") if fmt == "parquet" else write_tfrecord(d / "part-00000.tfrecord", head)
    path = d / ("part-00001.parquet" if fmt == "parquet" else "part-00001.tfrecord.gz")
    pq.write_table(table.slice(4), path) if fmt == "parquet" else write_tfrecord(path, table.slice(4))
    return str(path)


def _bad_cases(t):
    """(name, table, column, message regex) — the defect is in rows 4.., the second file."""
    n = t.num_rows
    click = t.column("click").to_pylist()
    return [
        ("missing column", t.drop_columns(["price"]), "price", r"column missing from the file"),
        ("ids as text", _replace(t, "uid", pa.array([f"u{i}" for i in range(n)])), "uid",
         r"type not readable as declared: expected (integer ids \(int64\), found string|an int64_list \(int64\), found a bytes_list)"),
        ("numeric as text", _replace(t, "price", pa.array(["cheap"] * n)), "price",
         r"type not readable as declared.*(found string|found a bytes_list)"),
        ("null label", _replace(t, "click", pa.array(click[:6] + [None] + click[7:])), "click",
         r"1 null label value\(s\) \(first at row 2"),
        ("binary label 2", _replace(t, "click", pa.array(click[:5] + [2] + click[6:])), "click",
         r"expected binary label values in \{0, 1\}; found 2 at row 1"),
        ("conversion without click", _replace(t, "conversion", pa.array([0] * 8 + [1] + [0] * (n - 9))), "conversion",
         r"funnel inconsistency: conversion=1 with click=0 at row 4 \(1 such rows in this batch\); expected conversion only inside click"),
    ]


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_good_day_passes_with_null_features(tmp_path, hand_schema, hand_table, fmt):
    _write(tmp_path, hand_table(), fmt)
    assert validate_day(tmp_path, DAY, hand_schema, fmt=fmt) == 10


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
@pytest.mark.parametrize("case", range(6))
def test_each_defect_names_file_and_column(tmp_path, hand_schema, hand_table, fmt, case):
    name, table, column, message = _bad_cases(hand_table())[case]
    path = _write(tmp_path, table, fmt, first=hand_table())
    with pytest.raises(DataValidationError, match=message) as err:
        validate_day(tmp_path, DAY, hand_schema, fmt=fmt)
    assert err.value.file == path, name
    assert err.value.column == column, name
    assert str(err.value).startswith(f"file {path}, column '{column}': ")


def test_funnel_check_follows_the_config(tmp_path, hand_schema, hand_table):
    t = _replace(hand_table(), "conversion", pa.array([0] * 8 + [1, 0]))
    _write(tmp_path, t, "parquet")
    assert validate_day(tmp_path, DAY, hand_schema, funnel=()) == 10
    with pytest.raises(DataValidationError, match="funnel inconsistency"):
        validate_day(tmp_path, DAY, hand_schema, funnel=[["click", "conversion"]])
    with pytest.raises(ValueError, match="Expected funnel as \\(parent, child\\) label name pairs"):
        validate_day(tmp_path, DAY, hand_schema, funnel=("click",))


def test_multiclass_and_regression_labels(tmp_path, hand_schema, hand_table):
    schema = dict(hand_schema, labels=[{"name": "pp", "kind": "multiclass", "num_classes": 3}, {"name": "y", "kind": "regression"}])
    t = hand_table().append_column("pp", pa.array([0, 1, 2, 0, 1, 2, 0, 1, 3, 0])).append_column("y", pa.array([0.5] * 10))
    path = _write(tmp_path, t, "parquet")
    with pytest.raises(DataValidationError, match=r"expected integer class labels in \[0, 3\); found 3 at row 4") as err:
        validate_day(tmp_path, DAY, schema)
    assert (err.value.file, err.value.column) == (path, "pp")
    t = _replace(_replace(t, "pp", pa.array([0] * 10)), "y", pa.array([0.5] * 9 + [float("inf")]))
    _write(tmp_path, t, "parquet")
    with pytest.raises(DataValidationError, match=r"column 'y': expected finite regression labels; found inf at row 5"):
        validate_day(tmp_path, DAY, schema)


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_truncated_file(tmp_path, hand_schema, hand_table, fmt):
    path = _write(tmp_path, hand_table(40), fmt)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 30)
    with pytest.raises(DataValidationError, match="truncated or corrupt") as err:
        validate_day(tmp_path, DAY, hand_schema, fmt=fmt)
    assert err.value.file == path and err.value.column is None


def test_garbage_parquet(tmp_path, hand_schema, hand_table):
    path = _write(tmp_path, hand_table(), "parquet")
    with open(path, "wb") as f:
        f.write(b"this is not parquet" * 10)
    with pytest.raises(DataValidationError, match=f"file {path}: truncated or corrupt Parquet file"):
        validate_day(tmp_path, DAY, hand_schema)
    with pytest.raises(Exception, match=f"file {path}: truncated or corrupt Parquet file"):
        for _ in make_dataset(tmp_path, DAY, hand_schema):
            pass


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_empty_and_missing_day(tmp_path, hand_schema, hand_table, fmt):
    with pytest.raises(DataValidationError, match=f"dt={DAY}: day {DAY} missing"):
        validate_day(tmp_path, DAY, hand_schema, fmt=fmt)
    (tmp_path / f"dt={DAY}").mkdir()
    with pytest.raises(DataValidationError, match=f"day {DAY} is empty: no {fmt} files"):
        validate_day(tmp_path, DAY, hand_schema, fmt=fmt)
    empty = hand_table().slice(0, 0)
    d = tmp_path / f"dt={DAY}"
    pq.write_table(empty, d / "part-00000.parquet") if fmt == "parquet" else write_tfrecord(d / "part-00000.tfrecord", empty)
    with pytest.raises(DataValidationError, match=f"dt={DAY}: day {DAY} is empty: its files hold no rows"):
        validate_day(tmp_path, DAY, hand_schema, fmt=fmt)


def test_null_label_also_stops_the_reader(tmp_path, hand_schema, hand_table):
    t = _replace(hand_table(), "click", pa.array([None] + [1] * 9))
    _write(tmp_path, t, "parquet")
    with pytest.raises(Exception, match="column 'click': 1 null label"):
        for _ in make_dataset(tmp_path, DAY, hand_schema):
            pass
