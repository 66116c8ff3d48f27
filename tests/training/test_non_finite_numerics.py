"""A NaN or infinite numeric reads as the feature's default in the model itself, so the
SavedModel's `serving_default`, `model(...)` and `model.fit` agree with training (whose
readers have always read it so); finite data trains bit for bit as before."""

import copy
import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.layers import FeatureEmbedding
from mtlrec.models import build_model
from mtlrec.training.serving.export import export_model

_spec = importlib.util.spec_from_file_location("mtlrec_training_conftest", Path(__file__).with_name("conftest.py"))
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

#: The tiny ESMM schema with its standardize statistics: price (log1p, default 0.0),
#: item_hist_ctr (standardize, default 0.08).
STATS_SCHEMA = copy.deepcopy(_fixtures.SCHEMA)
STATS_SCHEMA["numeric"][1].update(mean=0.08, std=0.05)
TASKS = [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}]
NON_FINITE = [np.nan, np.inf, -np.inf]


def _esmm(seed=3):
    return build_model({"type": "esmm", "tower_units": [8], "seed": seed}, STATS_SCHEMA, TASKS)


def _rows():
    """Row 0 with the numeric defaults, then rows with NaN / ±inf in one or both numerics
    (ids and histories alike)."""
    price = [0.0, np.nan, np.inf, -np.inf, 0.0, 0.0, np.nan]
    ctr = [0.08, 0.08, 0.08, 0.08, np.nan, -np.inf, np.inf]
    n = len(price)
    return {
        "user_id": np.full(n, 5, np.int64),
        "item_id": np.full(n, 9, np.int64),
        "scene": np.array(["home"] * n),
        "price": np.array(price, np.float32),
        "item_hist_ctr": np.array(ctr, np.float32),
        "hist_item_id": np.array([[9, 4, -1, -1]] * n, np.int64),
    }


def _assert_every_row_scores_as_row_0(outputs, names=("ctr", "cvr", "ctcvr")):
    for name in names:
        values = np.asarray(outputs[name]).reshape(-1)
        assert np.all(np.isfinite(values)), name
        np.testing.assert_array_equal(values, np.full_like(values, values[0]), err_msg=name)


def test_serving_default_scores_a_nan_or_infinite_numeric_as_the_features_default(tmp_path):
    model = _esmm()
    export = export_model(model, tmp_path / "export", metadata={"schema": STATS_SCHEMA})
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    served = serve(**{k: tf.constant(v) for k, v in _rows().items()})
    _assert_every_row_scores_as_row_0(served)
    direct = model({k: tf.constant(v) for k, v in _rows().items()}, training=False)
    np.testing.assert_allclose(served["ctr"].numpy(), np.asarray(direct["ctr"]).reshape(-1), rtol=0, atol=1e-6)


def test_calling_the_model_scores_a_nan_or_infinite_numeric_as_the_features_default():
    model = _esmm()
    _assert_every_row_scores_as_row_0(model({k: tf.constant(v) for k, v in _rows().items()}, training=False))
    layer = FeatureEmbedding(STATS_SCHEMA)
    numeric = np.asarray(layer({k: tf.constant(v) for k, v in _rows().items()})["numeric"])
    # price: log1p(0.0) = 0; item_hist_ctr: (0.08 - 0.08) / 0.05 = 0
    np.testing.assert_array_equal(numeric, np.zeros((7, 2), np.float32))


def _features_labels(rows, price, ctr, seed):
    gen = np.random.default_rng(seed)
    features = {
        "user_id": gen.integers(0, 60, rows),
        "item_id": gen.integers(0, 50, rows),
        "scene": gen.choice(["home", "search", "cart"], rows),
        "price": np.asarray(price, np.float32),
        "item_hist_ctr": np.asarray(ctr, np.float32),
        "hist_item_id": gen.integers(-1, 50, (rows, 4)),
    }
    click = gen.integers(0, 2, rows).astype(np.float32)
    labels = {"click": click, "conversion": click * gen.integers(0, 2, rows).astype(np.float32)}
    return features, labels


def _fit(features, labels, no_replacement=False, monkeypatch=None):
    keras.utils.set_random_seed(11)
    if no_replacement:  # the layer as it was before the rule moved into it
        monkeypatch.setattr(FeatureEmbedding, "_finite_or_default", staticmethod(lambda f, x: x))
    model = _esmm(seed=4)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(32)
    model.fit(data, epochs=2, verbose=0, shuffle=False)
    outputs = model({k: tf.constant(v) for k, v in features.items()}, training=False)
    if no_replacement:
        monkeypatch.undo()
    return [w.numpy() for w in model.weights], {k: np.asarray(v) for k, v in outputs.items()}


def test_training_on_finite_data_is_bit_for_bit_what_it_was_and_fit_reads_non_finite_as_default(monkeypatch):
    gen = np.random.default_rng(0)
    price = gen.exponential(5.0, 96)
    ctr = gen.normal(0.08, 0.05, 96)
    features, labels = _features_labels(96, price, ctr, seed=1)
    weights, outputs = _fit(features, labels)
    before_weights, before_outputs = _fit(features, labels, no_replacement=True, monkeypatch=monkeypatch)
    assert len(weights) == len(before_weights)
    for a, b in zip(weights, before_weights):
        np.testing.assert_array_equal(a, b)
    for name in outputs:
        np.testing.assert_array_equal(outputs[name], before_outputs[name])
    # model.fit on raw rows with NaN / inf trains exactly as on the rows with the defaults
    holes = np.arange(96) % 5 == 0
    raw_price = np.where(holes, np.resize(NON_FINITE, 96), price)
    filled_price = np.where(holes, 0.0, price)
    raw, _ = _features_labels(96, raw_price, np.where(holes, np.nan, ctr), seed=1)
    filled, _ = _features_labels(96, filled_price, np.where(holes, 0.08, ctr), seed=1)
    raw_weights, _ = _fit(raw, labels)
    filled_weights, _ = _fit(filled, labels)
    assert all(np.all(np.isfinite(w)) for w in raw_weights if w.dtype.kind == "f")
    for a, b in zip(raw_weights, filled_weights):
        np.testing.assert_array_equal(a, b)
