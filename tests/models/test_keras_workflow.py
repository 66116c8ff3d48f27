"""The models under Keras' own workflow: compile's losses refused, metrics keyed by output
name, a loaded `.keras` model training on, identity/dynamic lookups under `fit`."""

import json
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest

from mtlrec.models import ESMM, SingleTask

N = 256
SCHEMA = {
    "categorical": [
        {"name": "user_id", "dtype": "int64", "num_buckets": 64, "dim": 4},
        {"name": "item_id", "dtype": "int64", "num_buckets": 64, "dim": 4},
        {"name": "scene", "dtype": "string", "num_buckets": 8, "dim": 4},
    ],
    "numeric": [{"name": "price", "normalize": "log1p"}],
    "labels": [
        {"name": "click", "kind": "binary"},
        {"name": "conversion", "kind": "binary"},
        {"name": "stars", "kind": "multiclass", "num_classes": 3},
        {"name": "dwell", "kind": "regression"},
    ],
}


def _data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    features = {
        "user_id": rng.integers(0, 40, n),
        "item_id": rng.integers(0, 50, n),
        "scene": rng.choice(np.array(["home", "search", "cart"], dtype=object), n),
        "price": rng.gamma(2.0, 10.0, n).astype("float32"),
    }
    click = (rng.random(n) < 0.4).astype("float32")
    labels = {
        "click": click,
        "conversion": click * (rng.random(n) < 0.5).astype("float32"),
        "stars": rng.integers(0, 3, n).astype("float32"),
        "dwell": rng.random(n).astype("float32"),
    }
    return features, labels


def _numpy(outputs):
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


# ------------------------------------------------------------------ compile(loss=...)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"loss": "this_is_not_a_loss"}, r"compile\(loss=\.\.\.\) is not used by mtlrec models: each task's loss "
         r"follows from its kind and weight in the model's `tasks`.*Received: loss='this_is_not_a_loss'"),
        ({"loss": {"ctr": "mse"}}, r"compile\(loss=\.\.\.\).*`tasks`.*Received: loss=\{'ctr': 'mse'\}"),
        ({"loss_weights": {"ctr": 2.0}}, r"compile\(loss_weights=\.\.\.\).*set each task's `weight`"),
        ({"weighted_metrics": ["auc"]}, r"compile\(weighted_metrics=\.\.\.\).*pass them as metrics="),
    ],
)
def test_compile_refuses_a_loss_in_one_line_saying_where_losses_are_set(arguments, message):
    model = ESMM(SCHEMA, seed=1)
    with pytest.raises(ValueError, match=message) as raised:
        model.compile(optimizer="adam", **arguments)
    assert "\n" not in str(raised.value)


def test_compile_without_a_loss_still_trains():
    features, labels = _data()
    model = ESMM(SCHEMA, seed=1)
    model.compile()  # Keras' default optimizer
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(features, labels, batch_size=64, epochs=2, verbose=0).history
    assert sorted(history) == ["ctr_loss", "cvr_loss", "loss"]
    assert history["loss"][1] < history["loss"][0]


# ------------------------------------------------------------------ compile(metrics=...)


def _expected_metrics(model, features, labels):
    """Hand-made: Keras' AUC and the weighted mean absolute error on each output's own rows
    (cvr: the clicked rows; ctr and the joint ctcvr: every row)."""
    out = _numpy(model.predict(features, batch_size=N, verbose=0))
    clicked = labels["click"] == 1
    rows = {"ctr": slice(None), "cvr": clicked, "ctcvr": slice(None)}
    label = {"ctr": "click", "cvr": "conversion", "ctcvr": "conversion"}
    expected = {}
    for name in rows:
        y, p = labels[label[name]][rows[name]], out[name][rows[name]]
        auc = keras.metrics.AUC()
        auc.update_state(y, p)
        expected[f"{name}_auc"] = float(auc.result())
        expected[f"{name}_mean_absolute_error"] = float(np.mean(np.abs(y - p)))
    return expected


def test_metrics_by_output_name_measure_each_output_on_its_own_rows():
    features, labels = _data()
    model = ESMM(SCHEMA, seed=1)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        metrics={"ctr": ["auc", "mean_absolute_error"], "cvr": ["auc", "mean_absolute_error"],
                 "ctcvr": [keras.metrics.AUC(name="auc"), "mean_absolute_error"]},
    )
    history = model.fit(features, labels, batch_size=64, epochs=2, verbose=0).history
    assert {"ctr_auc", "cvr_auc", "ctcvr_auc", "ctr_loss", "cvr_loss", "loss"} <= set(history)
    assert all(0.0 <= v <= 1.0 for v in history["cvr_auc"])

    got = model.evaluate(features, labels, batch_size=64, verbose=0, return_dict=True)
    for name, value in _expected_metrics(model, features, labels).items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_list_of_metrics_applies_to_every_output_by_its_kind():
    tasks = [
        {"name": "ctr", "label": "click"},
        {"name": "stars", "label": "stars", "kind": "multiclass", "num_classes": 3},
        {"name": "dwell", "label": "dwell", "kind": "regression"},
    ]
    features, labels = _data()
    model = SingleTask(SCHEMA, tasks, tower_units=[4], seed=1)
    model.compile(optimizer="adam", metrics=["accuracy"])
    got = model.evaluate(features, labels, batch_size=64, verbose=0, return_dict=True)
    out = _numpy(model.predict(features, batch_size=N, verbose=0))
    # binary: BinaryAccuracy at 0.5; multiclass: the class ids against the argmax
    np.testing.assert_allclose(got["ctr_accuracy"], np.mean((out["ctr"] > 0.5) == labels["click"]), rtol=1e-6)
    np.testing.assert_allclose(
        got["stars_accuracy"], np.mean(out["stars"].argmax(axis=1) == labels["stars"]), rtol=1e-6
    )
    np.testing.assert_allclose(got["dwell_accuracy"], np.mean(out["dwell"] == labels["dwell"]), rtol=1e-6)


def test_metrics_read_the_downsampling_corrected_probabilities_and_row_weights():
    """A task with negative_keep_rate w: its output is corrected to q = p / (p + (1 - p) / w)
    and each kept negative counts 1 / w times, as in `mtlrec evaluate`."""
    rate = 0.25
    tasks = [{"name": "ctr", "label": "click", "negative_keep_rate": rate}]
    features, labels = _data()
    model = SingleTask(SCHEMA, tasks, tower_units=[4], seed=1)
    model.compile(optimizer="adam", metrics={"ctr": ["mean_absolute_error"]})
    got = model.evaluate(features, labels, batch_size=N, verbose=0, return_dict=True)
    p = _numpy(model.predict(features, batch_size=N, verbose=0))["ctr"].astype(np.float64)
    q = p / (p + (1 - p) / rate)
    y = labels["click"]
    w = np.where(y == 1, 1.0, 1 / rate)
    np.testing.assert_allclose(got["ctr_mean_absolute_error"], np.sum(w * np.abs(y - q)) / np.sum(w), rtol=1e-5)


def test_an_unknown_output_name_is_refused_naming_the_valid_outputs():
    model = ESMM(SCHEMA, seed=1)
    with pytest.raises(ValueError, match=r"^compile\(metrics=\.\.\.\): unknown output 'click'; "
                       r"the model's outputs are ctr, cvr, ctcvr$"):
        model.compile(optimizer="adam", metrics={"click": ["auc"]})
    with pytest.raises(ValueError, match="unknown output 'ctr_logit'"):
        model.compile(optimizer="adam", metrics={"ctr_logit": ["auc"]})


def test_two_metrics_logged_under_one_name_are_refused():
    model = ESMM(SCHEMA, seed=1)
    with pytest.raises(ValueError, match="two metrics would be logged as 'ctr_loss'"):
        model.compile(optimizer="adam", metrics={"ctr": [keras.metrics.Mean(name="loss")]})


def test_a_metric_that_cannot_read_an_output_says_which_in_one_line():
    tasks = [{"name": "stars", "label": "stars", "kind": "multiclass", "num_classes": 3}]
    features, labels = _data()
    model = SingleTask(SCHEMA, tasks, tower_units=[4], seed=1)
    model.compile(optimizer="adam", metrics={"stars": ["binary_accuracy"]})
    with pytest.raises(ValueError, match=r"metric 'stars_binary_accuracy' cannot measure output 'stars' "
                       r"\(a multiclass task's: class ids \(B,\) and class probabilities \(B, classes\)\)"):
        model.evaluate(features, labels, batch_size=64, verbose=0)


# ------------------------------------------------------------------ a loaded .keras model


def test_a_loaded_model_trains_on_with_its_optimizer_state(tmp_path):
    features, labels = _data()
    model = ESMM(SCHEMA, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(features, labels, batch_size=64, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")

    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.compiled
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 4
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the same next epoch from the file as from the model in memory
    kwargs = dict(batch_size=64, epochs=1, verbose=0, shuffle=False)
    ours = model.fit(features, labels, **kwargs).history
    theirs = loaded.fit(features, labels, **kwargs).history
    assert sorted(theirs) == ["ctr_loss", "cvr_loss", "loss"]
    for key in ours:
        np.testing.assert_allclose(theirs[key], ours[key], rtol=1e-5, err_msg=key)
    assert int(loaded.optimizer.iterations.numpy()) == 8


def test_a_loaded_model_keeps_its_metrics(tmp_path):
    features, labels = _data()
    model = ESMM(SCHEMA, seed=1)
    model.compile(optimizer="adam", metrics={"ctr": ["auc"], "ctcvr": [keras.metrics.AUC(num_thresholds=50, name="auc50")]})
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    history = loaded.fit(features, labels, batch_size=64, epochs=1, verbose=0).history
    assert sorted(history) == ["ctcvr_auc50", "ctr_auc", "ctr_loss", "cvr_loss", "loss"]
    assert [m.num_thresholds for m in loaded.metrics if m.name == "ctcvr_auc50"] == [50]


def test_a_file_saved_with_an_ignored_loss_still_loads_and_trains(tmp_path):
    """Before compile refused losses, `compile(loss=...)` was accepted and saved: such a
    file loads with a warning and without the loss."""
    features, labels = _data()
    model = ESMM(SCHEMA, seed=1)
    model.compile(optimizer="adam")
    path = tmp_path / "model.keras"
    model.save(path)
    patched = tmp_path / "older.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(patched, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["compile_config"]["loss"] = "binary_crossentropy"
                data = json.dumps(config).encode()
            target.writestr(item, data)
    with pytest.warns(UserWarning, match=r"the saved compile\(loss=\.\.\.\) is dropped"):
        loaded = keras.saving.load_model(patched, safe_mode=True)
    history = loaded.fit(features, labels, batch_size=64, epochs=1, verbose=0).history
    assert sorted(history) == ["ctr_loss", "cvr_loss", "loss"]


# ------------------------------------------------------------------ lookups under fit

DYNAMIC = {
    "categorical": [
        {"name": "item_id", "dtype": "int64", "num_buckets": 4, "dim": 4, "lookup": "dynamic",
         "min_count": 2, "ttl_days": 1, "oov_buckets": 1},
        {"name": "scene", "dtype": "string", "num_buckets": 8, "dim": 4},
    ],
    "labels": [{"name": "click", "kind": "binary"}, {"name": "conversion", "kind": "binary"}],
}


def _day(items):
    n = len(items)
    features = {"item_id": np.array(items, dtype="int64"), "scene": np.array(["home"] * n, dtype=object)}
    labels = {"click": np.tile([1.0, 0.0], n)[:n].astype("float32"), "conversion": np.zeros(n, "float32")}
    return features, labels


def _rows(model, ids):
    return keras.ops.convert_to_numpy(model.feature_embedding.id_maps["item_id"].rows(np.array(ids, dtype="int64")))


def test_fit_refuses_a_dynamic_table_before_a_day_is_open():
    model = ESMM(DYNAMIC, tower_units=[4], seed=1)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"^lookup: dynamic table 'item_id' has no day open: call "
                       r"model.start_day\('YYYY-MM-DD'\) before fitting each day's data \(as `mtlrec train` does\)"):
        model.fit(*_day([1, 1, 2]), verbose=0)


def test_fit_admits_dynamic_ids_and_start_day_evicts_and_expires_them():
    """Capacity 4, min_count 2, ttl_days 1, one batch a day. Day 1: 10, 11, 13, 14 reach
    two sightings first and take rows 0-3 in order of first appearance; 15 (three
    sightings) waits, 12 (one) stays out. Opening day 2: 15, counted more than the least
    counted admitted id with the lowest row (10, row 0), takes its row, which starts
    afresh with its optimizer slots reset. Opening day 3: the ids not seen on day 2 expire."""
    model = ESMM(DYNAMIC, tower_units=[4], seed=1)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    fit = dict(batch_size=64, epochs=1, verbose=0, shuffle=False)
    assert model.start_day("2024-01-01") == {}
    model.fit(*_day([10, 10, 11, 12, 11, 13, 14, 13, 15, 14, 15, 15]), **fit)
    np.testing.assert_array_equal(_rows(model, [10, 11, 13, 14]), [0, 1, 2, 3])
    assert _rows(model, [12])[0] == 4 and _rows(model, [15])[0] == 4  # the one OOV row
    report = model.lookup_report()["item_id"]
    assert (report["rows_in_use"], report["admitted"], report["lookups"]) == (4, 4, 12)
    assert (report["ids_tracked"], report["ids_waiting"], report["overflow_lookups"]) == (6, 2, 3)

    table = model.feature_embedding.tables["item_id"]
    slots = [v for v in model.optimizer.variables if tuple(v.shape) == tuple(table.shape)]
    assert len(slots) == 2 and all(np.any(s.numpy()[0] != 0) for s in slots)  # Adam's moments
    before = table.numpy().copy()
    assert model.start_day("2024-01-02") == {"item_id": 1}
    np.testing.assert_array_equal(_rows(model, [15, 11, 13, 14, 10]), [0, 1, 2, 3, 4])
    assert np.all(table.numpy()[0] != before[0]) and np.all(np.abs(table.numpy()[0]) <= 0.05)
    np.testing.assert_array_equal(table.numpy()[1:], before[1:])
    for slot in slots:
        np.testing.assert_array_equal(slot.numpy()[0], 0.0)
        assert np.any(slot.numpy()[1] != 0)

    model.fit(*_day([11, 11]), **fit)
    assert model.start_day("2024-01-03") == {"item_id": 3}  # 13, 14, 15 last seen on day 1
    np.testing.assert_array_equal(_rows(model, [11, 13, 14, 15]), [1, 4, 4, 4])
    # evaluation and prediction only read the map
    model.evaluate(*_day([20, 20, 21]), verbose=0)
    model.predict(_day([20, 20])[0], verbose=0)
    assert model.lookup_report()["item_id"]["rows_in_use"] == 1


def test_fit_under_jit_compile_falls_back_for_id_features():
    """Ids are hashed as strings (no XLA kernels): `jit_compile=True`, which Keras' "auto"
    picks on a GPU, warns and trains without XLA instead of failing in the first step."""
    features, labels = _data()
    model = ESMM(SCHEMA, seed=1)
    with pytest.warns(UserWarning, match="Model doesn't support `jit_compile=True`"):
        model.compile(optimizer="adam", jit_compile=True)
    assert model.jit_compile is False
    history = model.fit(features, labels, batch_size=64, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_fit_counts_identity_lookups_as_the_trainer():
    schema = {
        "categorical": [{"name": "item_id", "dtype": "int64", "num_buckets": 10, "dim": 4, "lookup": "identity"}],
        "labels": [{"name": "click", "kind": "binary"}, {"name": "conversion", "kind": "binary"}],
    }
    model = ESMM(schema, tower_units=[4], seed=1)
    model.compile(optimizer="adam")
    features = {"item_id": np.array([1, 2, 3, 12, 15, -1], dtype="int64")}
    labels = {"click": np.array([1, 0, 1, 0, 1, 0], "float32"), "conversion": np.zeros(6, "float32")}
    model.fit(features, labels, batch_size=6, epochs=2, verbose=0)
    assert model.feature_embedding.lookup_report()["item_id"] == {
        "lookup": "identity", "lookups": 12, "oov_lookups": 6, "oov_share": 0.5
    }
    assert model.start_day("2024-01-01") == {}  # a new day starts the counts afresh
    assert model.lookup_report()["item_id"]["lookups"] == 0


def test_fit_refuses_a_dynamic_table_on_several_replicas():
    """Each replica would admit the ids of its own part of a batch: refused, naming the trainer."""
    script = textwrap.dedent(
        f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from mtlrec.models import ESMM
        with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
            model = ESMM({DYNAMIC!r}, tower_units=[4], seed=1)
            model.compile(optimizer="adam")
        model.start_day("2024-01-01")
        features = {{"item_id": np.array([1, 1, 2, 3], "int64"), "scene": np.array(["a"] * 4, object)}}
        labels = {{"click": np.array([1, 0, 1, 0], "float32"), "conversion": np.zeros(4, "float32")}}
        try:
            model.fit(features, labels, batch_size=4, verbose=0)
        except ValueError as error:
            print(error)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == (
        "model.fit cannot train the lookup: dynamic tables (item_id) on 2 replicas (each would admit "
        "the ids of its own part of a batch); train with `mtlrec train` or Experiment.train, which "
        "admit on the global batch"
    )
