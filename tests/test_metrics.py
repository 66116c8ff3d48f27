import math

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from mtlrec.metrics import (
    auc,
    calibration,
    evaluate,
    expert_utilization,
    gauc,
    logloss,
    truth_auc,
)
from mtlrec.metrics.streaming import StreamingTaskMetrics

ESMM = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
]


def test_auc_logloss_calibration_by_hand():
    y = [0, 0, 1, 1]
    p = [0.1, 0.4, 0.35, 0.8]
    # positive 0.35 beats 0.1 only, 0.8 beats both: 3 of 4 pairs
    assert auc(y, p) == pytest.approx(0.75)
    assert logloss(y, p) == pytest.approx(
        -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    )
    assert calibration([0, 1, 1, 0], [0.2, 0.6, 0.4, 0.4]) == pytest.approx(0.4 / 0.5)


def test_undefined_metrics_are_nan():
    assert math.isnan(auc([1, 1], [0.2, 0.3]))
    assert math.isnan(calibration([0, 0], [0.2, 0.3]))
    assert math.isnan(logloss([], []))
    assert math.isnan(gauc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], ["a", "a", "b", "b"]))


def test_shape_and_length_errors():
    with pytest.raises(ValueError, match=r"same length, got \{'labels': 3, 'preds': 2\}"):
        auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"preds: expected a \(N,\) or \(N, 1\) array, got shape \(2, 2\)"):
        auc([0, 1], [[0.1, 0.2], [0.3, 0.4]])


def test_gauc_by_hand():
    groups = ["u1"] * 3 + ["u2"] * 2 + ["u3"] * 2 + ["u4"] * 4
    y = [1, 0, 0] + [1, 0] + [0, 0] + [1, 0, 1, 0]
    p = [0.9, 0.5, 0.95] + [0.3, 0.2] + [0.1, 0.9] + [0.5, 0.5, 0.7, 0.1]
    # u1: 0.9 beats 0.5, loses to 0.95 -> 0.5 (3 rows); u2: 1.0 (2 rows);
    # u3: one class only -> skipped; u4: (tie 0.5 + 1 + 1 + 1) / 4 = 0.875 (4 rows)
    assert gauc(y, p, groups) == pytest.approx((3 * 0.5 + 2 * 1.0 + 4 * 0.875) / 9)


def test_gauc_matches_sklearn_per_group():
    rng = np.random.default_rng(0)
    n = 2000
    groups = rng.integers(0, 60, size=n)
    y = (rng.random(n) < 0.3).astype(float)
    p = np.round(rng.random(n) + 0.3 * y, 1)  # rounding makes ties
    num = den = 0.0
    for g in np.unique(groups):
        m = groups == g
        if 0 < y[m].sum() < m.sum():
            num += m.sum() * roc_auc_score(y[m], p[m])
            den += m.sum()
    assert gauc(y, p, groups) == pytest.approx(num / den, rel=1e-12)


def test_truth_auc_by_hand_and_against_draws():
    # positives: (score .1, w .2), (.9, .6); negatives: (.1, .8), (.9, .4)
    # pairs: .2*.8 tie -> .08, .6*.8 win -> .48, .6*.4 tie -> .12; / (.8 * 1.2)
    assert truth_auc([0.1, 0.9], [0.2, 0.6]) == pytest.approx(0.68 / 0.96)
    rng = np.random.default_rng(3)
    t = rng.uniform(0.05, 0.6, size=400)
    p = t + rng.normal(0, 0.1, size=400)
    draws = [auc(rng.random(400) < t, p) for _ in range(100)]
    assert truth_auc(p, t) == pytest.approx(np.mean(draws), abs=0.01)


def funnel_data():
    labels = {
        "click": np.array([1, 1, 1, 1, 0, 0, 0, 0], float),
        "conversion": np.array([1, 1, 0, 0, 0, 0, 0, 0], float),
    }
    ctr = np.array([0.9, 0.8, 0.6, 0.7, 0.2, 0.65, 0.1, 0.3])
    cvr = np.array([0.6, 0.3, 0.4, 0.2, 0.9, 0.1, 0.5, 0.2])
    predictions = {"ctr": ctr, "cvr": cvr, "ctcvr": ctr * cvr}
    return labels, predictions


def test_evaluate_funnel_step():
    labels, preds = funnel_data()
    res = evaluate(ESMM, labels, preds)
    assert set(res) == {"ctr", "cvr", "ctcvr"}
    # ctr over all rows: positives .9 .8 .6 .7, negatives .2 .65 .1 .3 -> 15 of 16 pairs
    assert res["ctr"]["auc"] == pytest.approx(15 / 16)
    assert res["ctr"]["calibration"] == pytest.approx(np.mean(preds["ctr"]) / 0.5)
    assert res["ctr"]["count"] == 8 and res["ctr"]["positives"] == 4
    assert "auc_entire" not in res["ctr"]
    # cvr on clicked rows: positives .6 .3, negatives .4 .2 -> 3 of 4
    assert res["cvr"]["auc_clicked"] == res["cvr"]["auc"] == pytest.approx(0.75)
    assert res["cvr"]["count"] == 4
    assert res["cvr"]["calibration"] == pytest.approx(np.mean([0.6, 0.3, 0.4, 0.2]) / 0.5)
    # cvr over all rows: positives .6 .3 vs negatives .4 .2 .9 .1 .5 .2 -> (5 + 3) / 12
    assert res["cvr"]["auc_entire"] == pytest.approx(8 / 12)
    # joint output over all rows against the conversion label
    assert res["ctcvr"]["auc"] == pytest.approx(auc(labels["conversion"], preds["ctcvr"]))
    assert res["ctcvr"]["logloss"] == pytest.approx(logloss(labels["conversion"], preds["ctcvr"]))
    assert res["ctcvr"]["count"] == 8


def test_evaluate_sample_space_task_and_gauc():
    labels, preds = funnel_data()
    tasks = [ESMM[0], {"name": "cvr", "label": "conversion", "sample_space": "click"}]
    users = np.array(["a", "a", "b", "b", "a", "b", "c", "c"])
    res = evaluate(tasks, labels, {"ctr": preds["ctr"], "cvr": preds["cvr"]}, {"user_id": users})
    assert set(res) == {"ctr", "cvr"}
    assert res["cvr"]["auc"] == pytest.approx(0.75)
    assert res["cvr"]["auc_entire"] == pytest.approx(8 / 12)
    # cvr GAUC on clicked rows: user a rows (1: .6, 1: .3) -> one class; b (0: .4, 0: .2) too
    assert math.isnan(res["cvr"]["gauc"])
    # ctr GAUC: a: pos .9 .8 vs neg .2 -> 1 (3 rows); b: pos .6 .7 vs .65 -> 0.5 (3 rows); c: one class
    assert res["ctr"]["gauc"] == pytest.approx((3 * 1.0 + 3 * 0.5) / 6)


def test_evaluate_truth_metrics():
    labels, preds = funnel_data()
    true_ctr = np.array([0.7, 0.6, 0.5, 0.6, 0.3, 0.4, 0.1, 0.2])
    true_cvr = np.array([0.5, 0.4, 0.2, 0.3, 0.6, 0.1, 0.3, 0.2])
    res = evaluate(ESMM, labels, preds, {"true_ctr": true_ctr, "true_cvr": true_cvr})
    assert res["ctr"]["oracle_auc"] == pytest.approx(auc(labels["click"], true_ctr))
    assert res["ctr"]["truth_auc"] == pytest.approx(truth_auc(preds["ctr"], true_ctr))
    # cvr: oracle on clicked rows, truth AUC over every impression
    clicked = labels["click"] == 1
    assert res["cvr"]["oracle_auc"] == pytest.approx(auc(labels["conversion"][clicked], true_cvr[clicked]))
    assert res["cvr"]["truth_auc"] == pytest.approx(truth_auc(preds["cvr"], true_cvr))
    assert res["cvr"]["truth_auc_oracle"] == pytest.approx(truth_auc(true_cvr, true_cvr))
    assert res["cvr"]["truth_auc_oracle"] > res["cvr"]["truth_auc"]
    # joint truth = product along the chain
    assert res["ctcvr"]["truth_auc"] == pytest.approx(truth_auc(preds["ctcvr"], true_ctr * true_cvr))
    assert "oracle_auc" not in evaluate(ESMM, labels, preds)["cvr"]


def test_evaluate_multiclass_and_regression():
    tasks = [
        {"name": "pp", "label": "pp", "kind": "multiclass", "num_classes": 3},
        {"name": "price", "label": "price", "kind": "regression", "sample_space": "click"},
    ]
    labels = {"pp": np.array([0, 2, 1]), "price": np.array([1.0, 2.0, 5.0]), "click": np.array([1, 1, 0])}
    preds = {
        "pp": np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1]]),
        "price": np.array([[1.5], [1.0], [0.0]]),
    }
    res = evaluate(tasks, labels, preds)
    assert res["pp"]["accuracy"] == pytest.approx(2 / 3)
    assert res["pp"]["logloss"] == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.8)) / 3)
    assert res["price"] == pytest.approx({"count": 2.0, "mse": (0.25 + 1.0) / 2, "mae": (0.5 + 1.0) / 2})


def test_evaluate_errors_name_the_key():
    labels, preds = funnel_data()
    del preds["ctcvr"]
    with pytest.raises(ValueError, match=r"task 'cvr': joint prediction 'ctcvr' is missing"):
        evaluate(ESMM, labels, preds)
    with pytest.raises(ValueError, match=r"task 'ctr': label 'click' is missing"):
        evaluate(ESMM, {"conversion": labels["conversion"]}, preds)
    with pytest.raises(ValueError, match=r"same length"):
        evaluate([ESMM[0]], labels, {"ctr": np.ones(3)})


def test_expert_utilization():
    w = {"ctr": np.array([[0.5, 0.5, 0.0], [0.1, 0.3, 0.6]]), "cvr": np.array([[1.0, 0.0, 0.0]])}
    assert expert_utilization(w) == {
        "ctr": pytest.approx([0.3, 0.4, 0.3]),
        "cvr": pytest.approx([1.0, 0.0, 0.0]),
    }
    with pytest.raises(ValueError, match=r"weights\['ctr'\]: expected a \(N, num_experts\) array, got shape \(3,\)"):
        expert_utilization({"ctr": np.ones(3)})


def test_streaming_metrics_match_offline_ones():
    rng = np.random.default_rng(0)
    n = 600
    click = (rng.random(n) < 0.4).astype("float32")
    conv = click * (rng.random(n) < 0.3).astype("float32")
    ctr = np.clip(0.4 + 0.3 * (click - 0.4) + rng.normal(0, 0.2, n), 0.01, 0.99).astype("float32")
    cvr = np.clip(0.3 + 0.3 * (conv - 0.3) + rng.normal(0, 0.2, n), 0.01, 0.99).astype("float32")
    labels = {"click": click, "conversion": conv}
    preds = {"ctr": ctr, "cvr": cvr, "ctcvr": ctr * cvr}
    streaming = StreamingTaskMetrics(ESMM)

    @tf.function
    def update(lab, out):
        streaming.update_state(lab, out)

    for start in range(0, n, 200):
        sl = slice(start, start + 200)
        update({k: v[sl] for k, v in labels.items()}, {k: v[sl] for k, v in preds.items()})
    got = streaming.result()
    want = evaluate(ESMM, labels, preds)
    assert set(got) == {"ctr", "cvr", "ctcvr"}
    for name in got:
        assert got[name]["auc"] == pytest.approx(want[name]["auc"], abs=1e-9)  # same bins and rule
        assert got[name]["calibration"] == pytest.approx(want[name]["calibration"], rel=1e-4)
    streaming.reset_state()
    assert math.isnan(streaming.result()["ctr"]["auc"])
    assert math.isnan(streaming.result()["ctr"]["calibration"])


def test_streaming_multiclass_regression_and_sample_space():
    tasks = [
        {"name": "pp", "label": "pp", "kind": "multiclass", "num_classes": 3},
        {"name": "price", "label": "price", "kind": "regression", "sample_space": "click"},
    ]
    streaming = StreamingTaskMetrics(tasks)
    streaming.update_state(
        {"pp": np.array([0.0, 2.0]), "price": np.array([1.0, 4.0]), "click": np.array([1.0, 0.0])},
        {"pp": np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]]), "price": np.array([3.0, 0.0])},
    )
    assert streaming.result() == {"pp": {"accuracy": 0.5}, "price": {"mse": 4.0}}
    with pytest.raises(ValueError, match=r"task 'pp': output 'pp' is missing"):
        streaming.update_state({"pp": np.zeros(1), "price": np.zeros(1), "click": np.ones(1)}, {})
    with pytest.raises(ValueError, match=r"Expected bins to be an integer > 1\. Received: bins=1$"):
        StreamingTaskMetrics(tasks, bins=1)
