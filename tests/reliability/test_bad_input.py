"""Bad input: every case exits non-zero with one message naming the file/column/key and leaves
the run directory byte for byte as it was; and the inputs that are *not* errors."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtlrec.cli import main

DAY1, DAY2, DAY3 = "2024-01-01", "2024-01-02", "2024-01-03"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, funnel_root, training):
    """A run directory with day 1 trained: what every bad command must leave untouched."""
    from mtlrec.training.config import load_config
    from mtlrec.training.experiment import Experiment

    directory = tmp_path_factory.mktemp("trained")
    Experiment(load_config(training.config_file(directory, funnel_root))).train(day=DAY1)
    return directory / "run"


def _part(root, day):
    return next((root / f"dt={day}").glob("*.parquet"))


def _edit(root, day, fn):
    """Rewrite the day's Parquet file with ``fn(table) -> table``."""
    path = _part(root, day)
    pq.write_table(fn(pq.read_table(path)), path)
    return path


def _set(table, name, values, type_=None):
    return table.set_column(table.column_names.index(name), name, pa.array(values, type_))


def _with_row(table, name, row, value):
    values = table.column(name).to_pylist()
    values[row] = value
    return _set(table, name, values, table.schema.field(name).type)


def _truncate(root, day):
    path = _part(root, day)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbage_tfrecord(root, day):
    shutil.rmtree(root / f"dt={day}")
    (root / f"dt={day}").mkdir()
    path = root / f"dt={day}" / "part-00000.tfrecord"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    return path


def _zero_row_pandas_day(root, day):
    """The day's file replaced by what pandas writes for a frame with columns and no rows."""
    import pandas as pd

    path = _part(root, day)
    pd.DataFrame(columns=pq.read_schema(path).names).to_parquet(path)
    assert pq.read_schema(path).field("scene").type == pa.null()
    return root / f"dt={day}"


def _empty_day(root):
    (root / "dt=2024-01-05").mkdir()
    return root / "dt=2024-01-05"


# (case, config overrides, YAML text edit, data edit -> the path the message names,
#  day, exit code, the texts the message must contain ({config}, {file} filled in))
CASES = [
    ("yaml syntax error", {}, lambda t: t + "training: [batch_size\n", None, DAY2, 2,
     ["{config}:", "invalid YAML"]),
    ("unknown config key", {"training": {"checkpoint_evry": 3}}, None, None, DAY2, 2,
     ["{config}:", "training.checkpoint_evry: unknown key; expected one of batch_size"]),
    ("wrong hyperparameter type", {"model": {"dropout": "high"}}, None, None, DAY2, 2,
     ["{config}:", "model.dropout: expected a number, got 'high'"]),
    ("unknown model type", {"model": {"type": "mmoe2", "tower_units": None, "seed": None}}, None, None,
     DAY2, 2, ["{config}:", "model.type: expected one of", "got 'mmoe2'"]),
    ("unknown sequence encoder", {"model": {"sequence_encoders": {"hist_item_id": "din"}}}, None, None, DAY2, 2,
     ["{config}:", "model.sequence_encoders.hist_item_id.encoder: expected one of mean, target_attention, "
      "self_attention, property_gated_lstm, got 'din'"]),
    ("encoder query sharing no table with the history",
     {"model": {"sequence_encoders": {"hist_item_id": {"encoder": "target_attention", "query": ["user_id"]}}}},
     None, None, DAY2, 2,
     ["{config}:", "model.sequence_encoders.hist_item_id.query[0]: expected a candidate feature whose table a "
      "feature of history 'hist_item_id' shares (hist_item_id reads item_id's table), got 'user_id' (table 'user_id')"]),
    ("trained run's encoder changed", {"model": {"sequence_encoders": {"hist_item_id": "target_attention"}}}, None,
     None, DAY2, 2,
     ["{config}:", "model.sequence_encoders.hist_item_id: history 'hist_item_id' was trained with hist_item_id "
      "mean-pooled alone (not in the run's sequence_encoders), the config asks for target_attention in ",
      "; changing a trained run's sequence encoders is refused (its weights were trained for the encoders it "
      "was built with); keep them, or train into a new run_dir"]),
    ("task label not in schema", {"tasks": [{"name": "ctr", "label": "clicked"}]}, None, None, DAY2, 2,
     ["{config}:", "tasks[0].label", "clicked"]),
    ("schema column missing from data", {}, None,
     lambda r: _edit(r, DAY2, lambda t: t.drop_columns(["price"])), DAY2, 1,
     ["file {file}", "column 'price'", "missing"]),
    ("column of the wrong type", {}, None,
     lambda r: _edit(r, DAY2, lambda t: _set(t, "user_id", [f"u{i}" for i in range(t.num_rows)])), DAY2, 1,
     ["file {file}", "column 'user_id'", "expected", "int64"]),
    ("null label", {}, None, lambda r: _edit(r, DAY2, lambda t: _with_row(t, "click", 7, None)), DAY2, 1,
     ["file {file}", "column 'click'", "1 null label value(s)"]),
    ("binary label outside 0/1", {}, None, lambda r: _edit(r, DAY2, lambda t: _with_row(t, "click", 7, 2)),
     DAY2, 1, ["file {file}", "column 'click'", "expected binary label values in {{0, 1}}; found 2 at row 7"]),
    ("conversion without click", {}, None,
     lambda r: _edit(r, DAY2, lambda t: _with_row(_with_row(t, "click", 7, 0), "conversion", 7, 1)), DAY2, 1,
     ["file {file}", "column 'conversion'", "funnel inconsistency: conversion=1 with click=0 at row 7"]),
    ("truncated Parquet file", {}, None, lambda r: _truncate(r, DAY2), DAY2, 1,
     ["file {file}", "truncated or corrupt Parquet file"]),
    ("garbage TFRecord file", {"data": {"format": "tfrecord"}}, None, lambda r: _garbage_tfrecord(r, DAY2),
     DAY2, 1, ["file {file}: truncated or corrupt TFRecord file (the record at byte offset 0 is corrupted; "
               "expected TFRecord-framed tf.train.Example records)"]),
    ("empty day directory", {}, None, _empty_day, "2024-01-05", 1, ["{file}", "2024-01-05"]),
    ("0-row Parquet file from pandas", {}, None, lambda r: _zero_row_pandas_day(r, DAY2), DAY2, 1,
     ["file {file}: day 2024-01-02 is empty: its files hold no rows"]),
    ("day that does not exist", {}, None, None, "2030-01-01", 1, ["2030-01-01", "{root}"]),
    ("NaN numeric refused", {"data": {"non_finite_numeric": "refuse"}}, None,
     lambda r: _edit(r, DAY2, lambda t: _with_row(t, "price", 9, float("nan"))), DAY2, 1,
     ["file {file}", "column 'price'", "1 non-finite value(s)", "row 9", "non_finite_numeric: refuse"]),
    ("infinite numeric refused", {"data": {"non_finite_numeric": "refuse"}}, None,
     lambda r: _edit(r, DAY2, lambda t: _with_row(t, "item_hist_ctr", 3, float("-inf"))), DAY2, 1,
     ["file {file}", "column 'item_hist_ctr'", "first -inf at row 3"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_cleanly_and_leaves_the_run_alone(
    case, tmp_path, funnel_root, trained, training, snapshot, capsys
):
    name, overrides, edit_text, edit_data, day, code, texts = case
    root = tmp_path / "data"
    shutil.copytree(funnel_root, root)
    bad = edit_data(root) if edit_data else None
    config = training.config_file(tmp_path, root, training.merge(overrides, {"run_dir": str(trained)}))
    if edit_text:
        config.write_text(edit_text(config.read_text()))
    before = snapshot(trained)
    capsys.readouterr()

    assert main(["train", str(config), "--day", day]) == code, name
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mtlrec: error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err[-2000:]
    assert "Traceback" not in err
    for text in texts:
        expected = text.format(config=config, file=bad, root=root)
        assert expected in errors[0], (name, errors[0])
    assert snapshot(trained) == before, name


def test_inputs_that_are_not_errors(tmp_path, funnel_root, training, capsys):
    """NaN/inf numerics -> the default (counted in state.json); a sequence longer than max_len ->
    its most recent max_len items; an id in unusual unicode -> hashed like any other string."""
    from mtlrec.data_pipeline import make_dataset

    root = tmp_path / "data"
    shutil.copytree(funnel_root, root)
    odd_ids = ["\u0000", "e\u0301", "\u00e9", "\U0001F6D2\u200d", "\u202eRTL", "\ud7ff\ufeff"]

    def corrupt(t):
        t = _with_row(t, "price", 0, float("nan"))
        t = _with_row(t, "price", 1, float("inf"))
        t = _with_row(t, "item_hist_ctr", 2, float("-inf"))
        t = _with_row(t, "hist_item_id", 3, list(range(100, 110)))  # 10 items, max_len 4
        scenes = t.column("scene").to_pylist()
        scenes[: len(odd_ids)] = odd_ids
        return _set(t, "scene", scenes, pa.string())

    _edit(root, DAY1, corrupt)
    config = training.config_file(tmp_path, root)
    schema = training.SCHEMA
    features, _ = next(iter(make_dataset(root, [DAY1], schema, batch_size=16)))
    assert features["price"].numpy()[:2].tolist() == [0.0, 0.0]  # price default 0.0
    assert features["item_hist_ctr"].numpy()[2] == pytest.approx(0.08)  # its default
    assert features["hist_item_id"].numpy()[3].tolist() == [106, 107, 108, 109]  # the most recent 4
    assert [s.decode("utf-8") for s in features["scene"].numpy()[: len(odd_ids)]] == odd_ids  # bytes as stored

    capsys.readouterr()
    assert main(["train", str(config), "--day", DAY1]) == 0
    err = capsys.readouterr().err
    assert f"day {DAY1}: NaN/infinite numeric values replaced by the feature default: item_hist_ctr 1, price 2" in err
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["days"][0]["non_finite_replaced"] == {"price": 2, "item_hist_ctr": 1}

    # the odd ids score like any other (finite predictions; e + combining accent != precomposed)
    import tensorflow as tf

    from mtlrec.training.serving.export import latest_export

    serve = tf.saved_model.load(str(latest_export(tmp_path / "run" / "export"))).signatures["serving_default"]
    batch = {k: v[: len(odd_ids)] for k, v in features.items()}
    out = serve(**batch)
    assert all(np.isfinite(v.numpy()).all() for v in out.values())
    from mtlrec.layers import FeatureEmbedding  # noqa: F401  (the hashing lives in the model)

    hashed = tf.strings.to_hash_bucket_fast(tf.constant(odd_ids), 8).numpy()
    assert ((hashed >= 0) & (hashed < 8)).all()


def _rewrite_tfrecord(path, edit):
    """Rewrite a TFRecord file, each ``tf.train.Example`` passed through ``edit(i, example)``
    (which may return raw bytes to write instead)."""
    import tensorflow as tf

    records = [tf.train.Example.FromString(r) for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, example in enumerate(records):
            out = edit(i, example)
            writer.write(out if isinstance(out, bytes) else example.SerializeToString())


def _tfrecord_day(tmp_path, funnel_root, day, schema):
    from mtlrec.data_pipeline import convert_day

    root = tmp_path / "data"  # the day alone (no following day to evaluate on)
    convert_day(funnel_root, root, day, schema, "tfrecord")
    return root, sorted((root / f"dt={day}").glob("*.tfrecord"))


def _null(example, name, kind):
    """The feature present with an empty list: how many writers store a null."""
    feature = example.features.feature[name]
    feature.Clear()
    getattr(feature, kind).SetInParent()


def test_an_empty_list_in_a_tfrecord_reads_as_a_null(tmp_path, funnel_root, training, capsys):
    from mtlrec.data_pipeline import make_dataset

    root, files = _tfrecord_day(tmp_path, funnel_root, DAY1, training.SCHEMA)

    def nulls(i, example):
        if i < 3:
            _null(example, "price", "float_list")
            _null(example, "user_id", "int64_list")
            _null(example, "hist_item_id", "int64_list")

    _rewrite_tfrecord(files[0], nulls)
    features, _ = next(iter(make_dataset(root, [DAY1], training.SCHEMA, fmt="tfrecord", batch_size=8)))
    assert features["price"].numpy()[:3].tolist() == [0.0, 0.0, 0.0]  # price's default
    assert features["user_id"].numpy()[:3].tolist() == [-1, -1, -1]  # an id's null
    assert features["hist_item_id"].numpy()[:3].tolist() == [[-1] * 4] * 3
    config = training.config_file(tmp_path, root, {"data": {"format": "tfrecord"}})
    capsys.readouterr()
    assert main(["train", str(config), "--day", DAY1]) == 0, capsys.readouterr().err[-2000:]


def test_a_record_that_does_not_parse_is_one_line_naming_file_column_and_record(
    tmp_path, funnel_root, training, capsys
):
    root, files = _tfrecord_day(tmp_path, funnel_root, DAY1, training.SCHEMA)

    def wrong_type(i, example):
        if i == 300:  # after the records whose types are peeked at
            _null(example, "price", "bytes_list")
            example.features.feature["price"].bytes_list.value.append(b"12.5")

    _rewrite_tfrecord(files[0], wrong_type)
    config = training.config_file(tmp_path, root, {"data": {"format": "tfrecord"}})
    capsys.readouterr()
    assert main(["train", str(config), "--day", DAY1]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"mtlrec: error: file {files[0]}, column 'price': record 300 does not read as declared "
        f"(expected an int64_list or a float_list, found a bytes_list)"
    )
    assert not (tmp_path / "run").exists()

    def not_an_example(i, example):
        return b"\xff\x00 not a proto" if i == 5 else None

    _rewrite_tfrecord(files[0], not_an_example)
    assert main(["train", str(config), "--day", DAY1]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"mtlrec: error: file {files[0]}: record 5 is not a tf.train.Example"
    assert not (tmp_path / "run").exists()


def test_a_zero_row_file_beside_others_is_read_as_no_rows(tmp_path, funnel_root, training):
    import pandas as pd

    from mtlrec.data_pipeline import make_dataset, validate_day

    root = tmp_path / "data"
    shutil.copytree(funnel_root / f"dt={DAY1}", root / f"dt={DAY1}")
    names = pq.read_schema(_part(root, DAY1)).names
    pd.DataFrame(columns=names).to_parquet(root / f"dt={DAY1}" / "part-0.parquet")  # read first
    assert validate_day(root, DAY1, training.SCHEMA) == 320
    rows = sum(int(l["click"].shape[0]) for _, l in make_dataset(root, [DAY1], training.SCHEMA, batch_size=64))
    assert rows == 320


def test_values_far_outside_the_training_statistics_are_warned_about(tmp_path, funnel_root, training, capsys):
    root = tmp_path / "data"
    shutil.copytree(funnel_root, root)
    # item_hist_ctr's std is ~0.05: both are millions of standard deviations out, finite
    _edit(root, DAY2, lambda t: _with_row(_with_row(t, "item_hist_ctr", 4, 2.5e6), "item_hist_ctr", 9, -3e4))
    config = training.config_file(tmp_path, root)
    capsys.readouterr()
    assert main(["train", str(config), "--day", DAY1]) == 0  # statistics from day 1
    assert "far outside" not in capsys.readouterr().err
    assert main(["train", str(config), "--day", DAY2]) == 0
    err = capsys.readouterr().err
    assert (
        f"day {DAY2}: numeric values far outside the training statistics (more than 100 standard deviations "
        f"from the mean; they saturate the model): item_hist_ctr 2 values (largest 2.5e+06)"
    ) in err
