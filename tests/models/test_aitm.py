"""AITM: information transfer along the funnel and the behavioural calibrator."""

import keras
import numpy as np
import pytest

from mtlrec.losses import task_losses
from mtlrec.models import AITM, build_model

THREE_STEPS = [
    {"name": "ctr", "label": "click"},
    {"name": "ctcvr", "label": "conversion"},
    {"name": "follow", "label": "follow"},
]


def test_default_funnel_outputs_and_round_trip(tiny_funnel, keras_roundtrip):
    model = AITM(tiny_funnel.schema, tower_units=[8, 4], seed=2)
    assert [t.name for t in model.task_specs] == ["ctr", "ctcvr"]
    assert [type(t).__name__ for t in model.transfers] == ["InformationTransfer"]
    features, _ = tiny_funnel.batch(32)
    out = {k: np.asarray(v) for k, v in model(features).items()}
    assert model.probability_names() == ["ctr", "ctcvr"]
    np.testing.assert_allclose(out["ctr"], 1 / (1 + np.exp(-out["ctr_logit"])), rtol=1e-5)
    for name in ("ctr", "ctcvr"):
        assert out[name].shape == (32,) and np.all((out[name] > 0) & (out[name] < 1))
    restored = keras_roundtrip(model)
    assert restored.get_config() == model.get_config()
    again = restored(features)
    for name in ("ctr", "ctcvr"):
        np.testing.assert_array_equal(np.asarray(again[name]), out[name])


def test_longer_funnels_chain_one_transfer_per_step(tiny_funnel):
    model = AITM(tiny_funnel.schema, THREE_STEPS, tower_units=[4])
    assert [t.name for t in model.transfers] == [
        "ctcvr_information_transfer",
        "follow_information_transfer",
    ]
    task_ids = {id(v) for v in model.variable_groups().task_order}
    assert all(id(v) in task_ids for t in model.transfers for v in t.trainable_variables)


def test_calibrator_by_hand(tiny_funnel):
    model = AITM(tiny_funnel.schema, THREE_STEPS, tower_units=[4], lambda_=0.5)
    outputs = {
        "ctr": np.array([0.5, 0.2, 0.3], "float32"),
        "ctcvr": np.array([0.4, 0.5, 0.3], "float32"),  # gaps (0, 0.3, 0): mean 0.1
        "follow": np.array([0.6, 0.1, 0.0], "float32"),  # gaps (0.2, 0, 0): mean 0.2/3
    }
    (calibration,) = model.auxiliary_losses({}, outputs).values()
    np.testing.assert_allclose(calibration, 0.5 * (0.1 + 0.2 / 3), rtol=1e-6)


def test_compute_loss_is_the_task_losses_plus_the_calibrator(tiny_funnel):
    model = AITM(tiny_funnel.schema, tower_units=[4], lambda_=2.0, seed=0)
    features, labels = tiny_funnel.batch(64)
    outputs = model(features)
    per_task = task_losses(model.task_specs, labels, outputs)
    ctr, ctcvr = np.asarray(outputs["ctr"]), np.asarray(outputs["ctcvr"])
    calibration = 2.0 * np.mean(np.maximum(ctcvr - ctr, 0.0))
    total = model.compute_loss(y=labels, y_pred=outputs)
    want = float(per_task["ctr"]) + float(per_task["ctcvr"]) + calibration
    np.testing.assert_allclose(float(total), want, rtol=1e-5)


def test_same_seed_same_weights(tiny_funnel):
    a, b = (AITM(tiny_funnel.schema, tower_units=[4], seed=7) for _ in range(2))
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.weights, b.weights):  # embedding tables included
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_config_key_lambda(tiny_funnel):
    model = build_model({"type": "aitm", "lambda": 0.25, "tower_units": [4]}, tiny_funnel.schema, None)
    assert model.lambda_ == 0.25 and model.get_config()["lambda_"] == 0.25
    with pytest.raises(ValueError, match=r"^model\.lambda: .*Received: lambda=-1"):
        build_model({"type": "aitm", "lambda": -1}, tiny_funnel.schema, None)


@pytest.mark.parametrize("tasks", [
    [{"name": "ctr", "label": "click"}],
    [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}],
])
def test_tasks_must_be_a_funnel_of_binary_steps(tiny_funnel, tasks):
    with pytest.raises(ValueError, match=r"AITM needs a funnel of two or more binary tasks without `parent`"):
        AITM(tiny_funnel.schema, tasks)
