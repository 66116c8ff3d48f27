"""Sample weights and negative downsampling through the real commands: config checks, the
weight columns' validation, training, the evaluation and the export."""

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from mtlrec.data_pipeline import DataValidationError, make_dataset, validate_day
from mtlrec.data_pipeline.convert import convert_day
from mtlrec.data_pipeline.weight_columns import WeightColumn
from mtlrec.training.config import ConfigError, config_from_dict
from mtlrec.training.experiment import Experiment
from mtlrec.training.serving.export import latest_export

# tests/training/conftest.py by its path: `from conftest import` finds it only when another
# test put its folder on sys.path first (this file alone did not import)
_spec = importlib.util.spec_from_file_location("mtlrec_training_conftest", Path(__file__).with_name("conftest.py"))
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
BASE, DAYS, SCHEMA, merge = _fixtures.BASE, _fixtures.DAYS, _fixtures.SCHEMA, _fixtures.merge

KEEP = 0.5


def _day_file(root, day):
    return next((root / f"dt={day}").glob("*.parquet"))


@pytest.fixture(scope="module")
def downsampled_root(funnel_root, tmp_path_factory):
    """The tiny days with half their unclicked rows dropped, a sample weight column ``w``
    (0.5, 1 or 2) and each row's keep rate ``keep_rate`` (0.5 for an unclicked row)."""
    root = tmp_path_factory.mktemp("downsampled") / "data"
    rng = np.random.default_rng(11)
    for day in DAYS[:2]:
        table = pq.read_table(_day_file(funnel_root, day))
        click = table.column("click").to_numpy()
        kept = (click == 1) | (rng.random(len(click)) < KEEP)
        table = table.filter(pa.array(kept))
        table = table.append_column("w", pa.array(rng.choice([0.5, 1.0, 2.0], table.num_rows)))
        rate = np.where(table.column("click").to_numpy() == 1, 1.0, KEEP)
        table = table.append_column("keep_rate", pa.array(rate))
        (root / f"dt={day}").mkdir(parents=True)
        pq.write_table(table, root / f"dt={day}" / "part-0.parquet")
    return root


def _config(tmp_path, root, overrides):
    base = merge({"data": {"root": str(root)}, "run_dir": str(tmp_path / "run")}, overrides)
    return config_from_dict(merge(BASE, base), source=str(tmp_path / "exp.yaml"))


# --------------------------------------------------------------------------- bad input


def test_a_bad_keep_rate_exits_2_naming_its_key_path(write_config, cli_in_process):
    tasks = [{"name": "ctr", "label": "click", "negative_keep_rate": 1.5},
             {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}]
    code, _, err = cli_in_process("train", write_config({"tasks": tasks}), "--day", DAYS[0])
    assert code == 2
    [line] = [line for line in err.splitlines() if line.startswith("mtlrec:")]
    assert line.endswith("exp.yaml:43: tasks[0].negative_keep_rate: expected a number in (0, 1] "
                         "(the share of negatives kept), got 1.5")


@pytest.mark.parametrize("overrides, path", [
    ({"tasks": [{"name": "ctr", "label": "click", "negative_keep_rate": -0.1},
                {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}]},
     "tasks[0].negative_keep_rate"),
    ({"tasks": [{"name": "ctr", "label": "click"},
                {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr",
                 "negative_keep_rate": 0.1}]},
     "tasks[1].negative_keep_rate"),
    ({"data": {"sample_weight": "user_id"}}, "data.sample_weight"),
    ({"data": {"sample_weight": 3}}, "data.sample_weight"),
])
def test_bad_row_weight_config_names_the_key_path(tmp_path, funnel_root, overrides, path):
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, funnel_root, overrides)
    assert f": {path}" in str(info.value)


def test_data_sample_weight_goes_to_every_task_without_its_own(tmp_path, funnel_root):
    tasks = [{"name": "ctr", "label": "click", "sample_weight": "w_click"},
             {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}]
    config = _config(tmp_path, funnel_root, {"tasks": tasks, "data": {"sample_weight": "w"}})
    assert [t.sample_weight for t in config.tasks] == ["w_click", "w"]
    assert config.to_dict()["tasks"] == tasks and config.to_dict()["data"]["sample_weight"] == "w"
    plain = _config(tmp_path, funnel_root, {})
    assert plain.training_digest() != config.training_digest()


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
@pytest.mark.parametrize("column, values, message", [
    ("w", [1.0, -1.0], r"expected finite sample weights >= 0 \(data\.sample_weight\); found -1 at row 1"),
    ("w", [1.0, float("nan")], r"expected finite sample weights >= 0 \(data\.sample_weight\); found nan at row 1"),
    ("w", [1.0, None], r"(1 null value\(s\) \(first at row 1\)|found no value \(a null\) at row 1)"),
    ("keep_rate", [0.5, 0.0], r"expected keep rates in \(0, 1\] \(tasks\[0\]\.negative_keep_rate_column\); found 0 at row 1"),
    ("keep_rate", [1.5, 1.0], r"expected keep rates in \(0, 1\] .*found 1\.5 at row 0"),
    ("w", "missing", r"column missing from the file \(the data\.sample_weight column\)"),
])
def test_a_bad_weight_value_names_the_file_and_column(tmp_path, funnel_root, fmt, column, values, message):
    table = pq.read_table(_day_file(funnel_root, DAYS[0])).slice(0, 2)
    good = {"w": [1.0, 2.0], "keep_rate": [1.0, 0.5]}
    for name, default in good.items():
        if name == column and values == "missing":
            continue
        table = table.append_column(name, pa.array(values if name == column else default, pa.float64()))
    day = tmp_path / "data" / f"dt={DAYS[0]}"
    day.mkdir(parents=True)
    pq.write_table(table, day / "part-0.parquet")
    root = tmp_path / "data"
    if fmt == "tfrecord":
        convert_day(root, tmp_path / "tf", DAYS[0], SCHEMA, "tfrecord")
        root = tmp_path / "tf"
    columns = [WeightColumn("w", "sample_weight", "data.sample_weight"),
               WeightColumn("keep_rate", "keep_rate", "tasks[0].negative_keep_rate_column")]
    with pytest.raises(DataValidationError, match=message) as info:
        validate_day(root, DAYS[0], SCHEMA, fmt=fmt, weight_columns=columns)
    assert info.value.column == column and info.value.file.endswith((".parquet", ".tfrecord"))


def test_a_bad_weight_stops_train_before_anything_is_written(tmp_path, downsampled_root, cli_in_process, make_config):
    table = pq.read_table(_day_file(downsampled_root, DAYS[0]))
    w = table.column("w").to_numpy().copy()
    w[7] = -2.0
    table = table.set_column(table.schema.get_field_index("w"), "w", pa.array(w))
    (tmp_path / "data" / f"dt={DAYS[0]}").mkdir(parents=True)
    pq.write_table(table, tmp_path / "data" / f"dt={DAYS[0]}" / "part-0.parquet")
    config = make_config(tmp_path, tmp_path / "data", {"data": {"sample_weight": "w"}})
    code, _, err = cli_in_process("train", config, "--day", DAYS[0])
    assert code == 1 and not (tmp_path / "run").exists()
    assert "column 'w': expected finite sample weights >= 0 (data.sample_weight); found -2 at row 7" in err


# --------------------------------------------------------------------------- runs


def _model_inputs(root, day, model, rows=40):
    """The first ``rows`` rows of ``day`` as the model reads them, and their labels with
    the weight columns (numpy)."""
    dataset = make_dataset(root, [day], model.schema, batch_size=rows, extra_columns=("w", "keep_rate"))
    features, labels = next(iter(dataset))
    return features, {k: v.numpy() for k, v in labels.items()}


def test_a_keep_rate_is_corrected_in_the_export_and_the_evaluation(tmp_path, downsampled_root):
    config = _config(tmp_path, downsampled_root, {
        "data": {"sample_weight": "w"},
        "tasks": [{"name": "ctr", "label": "click", "negative_keep_rate": KEEP},
                  {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}],
        "evaluation": {"extras": ["user_id"]},
    })
    experiment = Experiment(config)
    experiment.train(day=DAYS[0])
    model = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "model.keras", safe_mode=True)
    features, labels = _model_inputs(downsampled_root, DAYS[1], model)
    raw = {k: np.asarray(v) for k, v in model(features, training=False).items()}
    # the Keras model keeps the probabilities of the kept rows; its logits are untouched
    np.testing.assert_allclose(raw["ctr"], 1 / (1 + np.exp(-raw["ctr_logit"])), rtol=1e-5)
    p = raw["ctr"].astype(np.float64)
    q = p / (p + (1 - p) / KEEP)  # He et al. 2014

    serve = tf.saved_model.load(str(latest_export(tmp_path / "run" / "export"))).signatures["serving_default"]
    served = {k: v.numpy() for k, v in serve(**features).items()}
    assert set(served) == {"ctr", "cvr", "ctcvr"}
    np.testing.assert_allclose(served["ctr"], q, rtol=1e-5)
    np.testing.assert_allclose(served["cvr"], raw["cvr"], rtol=1e-6)
    np.testing.assert_allclose(served["ctcvr"], q * raw["cvr"], rtol=1e-5)

    result = experiment.evaluate(DAYS[1])
    table = pq.read_table(_day_file(downsampled_root, DAYS[1]))
    all_features, all_labels = _model_inputs(downsampled_root, DAYS[1], model, rows=table.num_rows)
    p = np.asarray(model(all_features, training=False)["ctr"], dtype=np.float64)
    q = p / (p + (1 - p) / KEEP)
    y = all_labels["click"]
    weight = all_labels["w"] * np.where(y == 1, 1.0, 1 / KEEP)
    ctr = result.metrics["ctr"]
    assert ctr["count"] == pytest.approx(weight.sum())
    assert ctr["calibration"] == pytest.approx(np.dot(weight, q) / np.dot(weight, y), rel=1e-4)
    expected_logloss = -np.dot(weight, y * np.log(q) + (1 - y) * np.log1p(-q)) / weight.sum()
    assert ctr["logloss"] == pytest.approx(expected_logloss, rel=1e-4)


def test_a_keep_rate_column_weighs_the_negatives_in_training_and_serves_as_trained(tmp_path, downsampled_root):
    config = _config(tmp_path, downsampled_root, {
        "tasks": [{"name": "ctr", "label": "click", "negative_keep_rate_column": "keep_rate"},
                  {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}],
        "training": {"checkpoint_every": 1000},
    })
    experiment = Experiment(config)
    experiment.train(day=DAYS[0])
    model = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "model.keras", safe_mode=True)
    features, labels = _model_inputs(downsampled_root, DAYS[1], model)
    serve = tf.saved_model.load(str(latest_export(tmp_path / "run" / "export"))).signatures["serving_default"]
    served = {k: v.numpy() for k, v in serve(**features).items()}
    raw = model(features, training=False)
    for name in ("ctr", "cvr", "ctcvr"):  # the model learned the full traffic: nothing to correct
        np.testing.assert_allclose(served[name], np.asarray(raw[name]), rtol=1e-6)
    ctr = experiment.evaluate(DAYS[1]).metrics["ctr"]
    table = pq.read_table(_day_file(downsampled_root, DAYS[1]))
    rate = table.column("keep_rate").to_numpy()
    click = table.column("click").to_numpy()
    assert ctr["count"] == pytest.approx(np.sum(np.where(click == 1, 1.0, 1 / rate)))


def test_a_constant_weight_column_trains_the_model_of_no_weights(tmp_path, downsampled_root):
    """sum(w l) / sum(w) with every w = 2 is the plain mean: the same model, to rounding."""
    trained = {}
    for name, overrides in (("plain", {}), ("weighted", {"data": {"sample_weight": "two"}})):
        root = tmp_path / f"{name}_data"
        table = pq.read_table(_day_file(downsampled_root, DAYS[0]))
        table = table.append_column("two", pa.array(np.full(table.num_rows, 2.0)))
        (root / f"dt={DAYS[0]}").mkdir(parents=True)
        pq.write_table(table, root / f"dt={DAYS[0]}" / "part-0.parquet")
        config = _config(tmp_path / name, root, merge(overrides, {"training": {"checkpoint_every": 1000}}))
        experiment = Experiment(config)
        experiment.train(day=DAYS[0])
        trained[name] = [np.asarray(v) for v in experiment.trainer.model.weights]
    assert len(trained["plain"]) == len(trained["weighted"])
    for a, b in zip(trained["plain"], trained["weighted"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_dupn_serves_a_downsampled_task_corrected_in_both_signatures(funnel_root, tmp_path):
    from mtlrec.data_pipeline import funnel_schema_dict
    from mtlrec.models import build_model
    from mtlrec.training.serving.export import export_model

    schema = funnel_schema_dict(num_users=60, num_items=50, max_len=4, dim=4, property_dim=4)
    tasks = [{"name": "ctr", "label": "click", "negative_keep_rate": 0.25}, {"name": "follow", "label": "follow"}]
    model = build_model(
        {"type": "dupn", "lstm_units": 8, "attention_units": 8, "representation_dim": 8, "tower_units": [8], "seed": 3},
        schema, tasks,
    )
    loaded = tf.saved_model.load(str(export_model(model, tmp_path / "export", metadata={"schema": schema})))
    features, _ = next(iter(make_dataset(funnel_root, [DAYS[0]], schema, batch_size=6)))
    user_inputs = loaded.signatures["user_representation"].structured_input_signature[1]
    item_inputs = loaded.signatures["score_items"].structured_input_signature[1]
    rows = {k: tf.repeat(v[:1], 6, axis=0) if k in user_inputs else v for k, v in features.items()}
    raw = model(rows, training=False)
    q = tf.sigmoid(raw["ctr_logit"] + np.log(0.25)).numpy()
    serve = loaded.signatures["serving_default"]
    full = serve(**{k: rows[k] for k in serve.structured_input_signature[1]})
    np.testing.assert_allclose(full["ctr"].numpy(), q, rtol=1e-5)
    np.testing.assert_allclose(full["follow"].numpy(), np.asarray(raw["follow"]), rtol=1e-6)
    rep = loaded.signatures["user_representation"](**{k: rows[k][:1] for k in user_inputs})
    scored = loaded.signatures["score_items"](
        representation=rep["representation"], **{k: rows[k] for k in item_inputs if k != "representation"},
    )
    np.testing.assert_allclose(scored["ctr"].numpy(), q, rtol=1e-4, atol=1e-6)
