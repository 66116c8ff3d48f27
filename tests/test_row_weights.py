"""Sample weights and negative downsampling: the row weights of the losses and the metrics,
and the He et al. correction of a downsampled task's probabilities."""

import math

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import log_loss, roc_auc_score

from mtlrec.conventions.key_paths import KeyPathError
from mtlrec.losses import task_losses
from mtlrec.metrics import auc, calibration, evaluate, gauc, logloss
from mtlrec.metrics.streaming import StreamingTaskMetrics
from mtlrec.models.base.downsampling_correction import (
    corrected_logit,
    corrected_outputs,
    corrected_probability,
)
from mtlrec.row_weights import loss_weights, metric_weights, weight_columns
from mtlrec.tasks import Task, validate_tasks

SCHEMA = {"labels": [{"name": n, "kind": "binary"} for n in ("click", "conversion", "like")]}
ESMM = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
]


def bce(y, p):
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def logit(p):
    return math.log(p) - math.log1p(-p)


def tasks_of(dicts):
    return validate_tasks(dicts, SCHEMA)


def values(losses):
    return {k: float(v) for k, v in losses.items()}


# --------------------------------------------------------------------------- losses


def test_weighted_loss_of_a_tiny_batch_by_hand():
    tasks = tasks_of([{"name": "ctr", "label": "click", "sample_weight": "w"}])
    p = [0.8, 0.8, 0.2, 0.5]
    labels = {"click": tf.constant([1.0, 0.0, 0.0, 1.0]), "w": tf.constant([2.0, 1.0, 0.0, 3.0])}
    outputs = {"ctr_logit": tf.constant([logit(x) for x in p])}
    expected = (2 * bce(1, 0.8) + 1 * bce(0, 0.8) + 0 + 3 * bce(1, 0.5)) / 6
    assert values(task_losses(tasks, labels, outputs))["ctr"] == pytest.approx(expected, rel=1e-6)


def test_weighted_loss_in_a_sample_space_by_hand_both_normalisations():
    labels = {
        "click": tf.constant([1.0, 1.0, 0.0, 1.0]),
        "conversion": tf.constant([1.0, 0.0, 0.0, 0.0]),
        "w": tf.constant([1.0, 2.0, 5.0, 0.5]),
    }
    outputs = {"cvr_logit": tf.constant([logit(0.5), logit(0.25), logit(0.9), logit(0.1)])}
    summed = 1 * bce(1, 0.5) + 2 * bce(0, 0.25) + 0.5 * bce(0, 0.1)  # the unclicked row is out
    cvr = {"name": "cvr", "label": "conversion", "sample_space": "click", "sample_weight": "w"}
    batch = values(task_losses(tasks_of([cvr]), labels, outputs))["cvr"]
    space = values(task_losses(tasks_of([dict(cvr, loss_normalization="sample_space")]), labels, outputs))["cvr"]
    assert batch == pytest.approx(summed / 8.5, rel=1e-6)  # the batch's total weight
    assert space == pytest.approx(summed / 3.5, rel=1e-6)  # the space's total weight


def test_weighted_funnel_step_and_all_zero_weights():
    tasks = tasks_of([dict(t, sample_weight="w") for t in ESMM])
    labels = {"click": tf.constant([1.0, 0.0]), "conversion": tf.constant([1.0, 0.0]), "w": tf.constant([3.0, 1.0])}
    outputs = {"ctr_logit": tf.constant([0.0, 0.0]), "ctcvr_logit": tf.constant([logit(0.2), logit(0.4)])}
    got = values(task_losses(tasks, labels, outputs))
    assert got["cvr"] == pytest.approx((3 * bce(1, 0.2) + bce(0, 0.4)) / 4, rel=1e-6)
    zero = dict(labels, w=tf.constant([0.0, 0.0]))
    assert values(task_losses(tasks, zero, outputs)) == {"ctr": 0.0, "cvr": 0.0}  # not NaN


def test_losses_without_row_weights_are_the_plain_means_bit_for_bit():
    rng = np.random.default_rng(0)
    labels = {"click": tf.constant((rng.random(64) < 0.3).astype("float32"))}
    z = tf.constant(rng.normal(size=64).astype("float32"))
    got = task_losses(tasks_of([{"name": "ctr", "label": "click"}]), labels, {"ctr_logit": z})["ctr"]
    y = labels["click"]
    plain = tf.reduce_mean(-(y * tf.math.log_sigmoid(z) + (1 - y) * tf.math.log_sigmoid(-z)))
    assert got.numpy().tobytes() == plain.numpy().tobytes()


def test_the_loss_weights_of_a_keep_rate_and_of_a_keep_rate_column():
    click = np.array([1.0, 0.0, 0.0])
    labels = {"click": click, "conversion": np.zeros(3), "like": np.zeros(3), "rate": np.array([1.0, 0.5, 0.2])}
    mmoe_like = {"name": "like", "label": "like"}
    rate = tasks_of([dict(ESMM[0], negative_keep_rate=0.25), ESMM[1], mmoe_like])
    flat = np.asarray
    # one rate: the funnel of ctr learns the kept rows as they are, a task outside it gets 1 / w
    assert loss_weights(rate[0], rate, labels, flat) is None
    assert loss_weights(rate[1], rate, labels, flat) is None
    np.testing.assert_allclose(loss_weights(rate[2], rate, labels, flat), [1.0, 4.0, 4.0])
    # the metrics count every negative of ctr 1 / w times, for every output
    for task in rate:
        np.testing.assert_allclose(metric_weights(task, rate, labels, flat), [1.0, 4.0, 4.0])
    column = tasks_of([dict(ESMM[0], negative_keep_rate_column="rate"), ESMM[1], mmoe_like])
    for task in column:
        np.testing.assert_allclose(loss_weights(task, column, labels, flat), [1.0, 2.0, 5.0])
    assert weight_columns(column) == ["rate"]


def test_keep_rate_in_a_sample_space_and_times_the_sample_weight():
    tasks = tasks_of([
        {"name": "cvr", "label": "conversion", "sample_space": "click", "negative_keep_rate": 0.5,
         "sample_weight": "w"},
    ])
    labels = {"click": np.array([1.0, 1.0, 0.0]), "conversion": np.array([1.0, 0.0, 0.0]), "w": np.array([2.0, 3.0, 1.0])}
    # the negative of the space counts twice; the unclicked row is no negative of cvr's space
    np.testing.assert_allclose(metric_weights(tasks[0], tasks, labels, np.asarray), [2.0, 6.0, 1.0])


def test_with_one_keep_rate_the_downsampled_funnel_learns_the_kept_rows_unweighted():
    # ESMM on the kept rows: pCTR' = p / (p + (1 - p) w) and pCTCVR' = pCTR' x pCVR; the
    # loss at those probabilities is the minimum of the kept rows' loss, no weight enters
    tasks = tasks_of([dict(ESMM[0], negative_keep_rate=0.5), ESMM[1]])
    labels = {"click": tf.constant([1.0, 0.0, 0.0]), "conversion": tf.constant([1.0, 0.0, 0.0])}
    outputs = {"ctr_logit": tf.constant([0.0, 0.0, 0.0]), "ctcvr_logit": tf.constant([0.0, 0.0, 0.0])}
    assert values(task_losses(tasks, labels, outputs)) == pytest.approx({"ctr": math.log(2), "cvr": math.log(2)})


# --------------------------------------------------------------------------- task config


@pytest.mark.parametrize("bad, path, message", [
    ({"negative_keep_rate": -0.1}, "tasks[0].negative_keep_rate", r"expected a number in \(0, 1\]"),
    ({"negative_keep_rate": 0}, "tasks[0].negative_keep_rate", r"expected a number in \(0, 1\]"),
    ({"negative_keep_rate": 1.5}, "tasks[0].negative_keep_rate", r"got 1\.5"),
    ({"negative_keep_rate": "low"}, "tasks[0].negative_keep_rate", "got 'low'"),
    ({"negative_keep_rate": 0.1, "negative_keep_rate_column": "r"}, "tasks[0].negative_keep_rate_column", "not both"),
    ({"sample_weight": ""}, "tasks[0].sample_weight", "non-empty string"),
])
def test_bad_row_weight_keys_name_their_path(bad, path, message):
    with pytest.raises(KeyPathError, match=message) as info:
        Task.from_dict(dict(ESMM[0], **bad), "tasks[0]")
    assert info.value.path == path


def test_downsampling_is_refused_on_a_funnel_step_a_non_binary_task_and_twice():
    with pytest.raises(KeyPathError, match=r"declare the downsampling on the top of the funnel") as info:
        tasks_of([ESMM[0], dict(ESMM[1], negative_keep_rate=0.1)])
    assert info.value.path == "tasks[1].negative_keep_rate"
    with pytest.raises(KeyPathError, match=r"applies to a binary task \(kind is 'regression'\)"):
        Task.from_dict({"name": "dwell", "label": "dwell", "kind": "regression", "negative_keep_rate": 0.5})
    with pytest.raises(KeyPathError, match=r"only one task may declare negative downsampling") as info:
        tasks_of([dict(ESMM[0], negative_keep_rate=0.1), {"name": "like", "label": "like", "negative_keep_rate": 0.5}])
    assert info.value.path == "tasks[1].negative_keep_rate"


def test_row_weight_keys_round_trip_and_stay_out_of_older_task_dicts():
    task = Task.from_dict(dict(ESMM[0], sample_weight="w", negative_keep_rate=1))
    assert task.to_dict() == {"name": "ctr", "label": "click", "kind": "binary", "weight": 1.0,
                              "sample_weight": "w", "negative_keep_rate": 1.0}
    assert "sample_weight" not in Task.from_dict(ESMM[0]).to_dict()


# --------------------------------------------------------------------------- metrics


def test_weighted_metrics_equal_sklearn():
    rng = np.random.default_rng(3)
    n = 400
    y = (rng.random(n) < 0.3).astype(float)
    p = np.round(rng.uniform(0.01, 0.99, n), 2)  # ties included
    w = rng.integers(0, 4, n).astype(float)
    assert auc(y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)
    assert logloss(y, p, w) == pytest.approx(log_loss(y, p, sample_weight=w), rel=1e-9)
    assert calibration(y, p, w) == pytest.approx(np.dot(w, p) / np.dot(w, y), rel=1e-12)
    groups = rng.integers(0, 20, n)
    num = den = 0.0
    for g in np.unique(groups):
        rows = groups == g
        pos, neg = np.dot(w[rows], y[rows]), np.dot(w[rows], 1 - y[rows])
        if pos > 0 and neg > 0:
            num += roc_auc_score(y[rows], p[rows], sample_weight=w[rows]) * w[rows].sum()
            den += w[rows].sum()
    assert gauc(y, p, groups, w) == pytest.approx(num / den, abs=1e-12)


def test_integer_weights_equal_repeated_rows_in_a_day_s_metrics():
    rng = np.random.default_rng(5)
    n = 300
    tasks = [dict(ESMM[0], sample_weight="w"), dict(ESMM[1], sample_weight="w")]
    click = (rng.random(n) < 0.4).astype(float)
    labels = {"click": click, "conversion": click * (rng.random(n) < 0.5), "w": rng.integers(0, 4, n).astype(float)}
    predictions = {"ctr": rng.random(n), "cvr": rng.random(n)}
    predictions["ctcvr"] = predictions["ctr"] * predictions["cvr"]
    users = rng.integers(0, 15, n)
    weighted = evaluate(tasks, labels, predictions, {"user_id": users})
    repeat = np.repeat(np.arange(n), labels["w"].astype(int))
    plain = evaluate(ESMM, {k: v[repeat] for k, v in labels.items()},
                     {k: v[repeat] for k, v in predictions.items()}, {"user_id": users[repeat]})
    for output in ("ctr", "cvr", "ctcvr"):
        for metric in ("count", "positives", "auc", "logloss", "calibration", "gauc"):
            assert weighted[output][metric] == pytest.approx(plain[output][metric], rel=1e-9), (output, metric)
    assert weighted["cvr"]["auc_entire"] == pytest.approx(plain["cvr"]["auc_entire"], rel=1e-9)


def test_multiclass_and_regression_metrics_weighted_by_hand():
    tasks = [
        {"name": "topic", "label": "topic", "kind": "multiclass", "num_classes": 2, "sample_weight": "w"},
        {"name": "dwell", "label": "dwell", "kind": "regression", "sample_weight": "w"},
    ]
    labels = {"topic": np.array([0, 1, 1]), "dwell": np.array([1.0, 2.0, 4.0]), "w": np.array([1.0, 3.0, 0.0])}
    predictions = {"topic": np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]]), "dwell": np.array([2.0, 2.0, 0.0])}
    out = evaluate(tasks, labels, predictions)
    assert out["topic"] == pytest.approx({"count": 4.0, "accuracy": 0.25,
                                          "logloss": -(math.log(0.8) + 3 * math.log(0.4)) / 4})
    assert out["dwell"] == pytest.approx({"count": 4.0, "mse": 0.25, "mae": 0.25})


def test_downsampled_day_metrics_count_each_kept_negative_one_over_the_rate_times():
    tasks = [dict(ESMM[0], negative_keep_rate=0.25), ESMM[1]]
    labels = {"click": np.array([1.0, 0.0, 0.0, 1.0]), "conversion": np.array([1.0, 0.0, 0.0, 0.0])}
    predictions = {"ctr": np.array([0.5, 0.5, 0.1, 0.3]), "cvr": np.array([0.5, 0.2, 0.2, 0.5])}
    predictions["ctcvr"] = predictions["ctr"] * predictions["cvr"]
    out = evaluate(tasks, labels, predictions)
    assert out["ctr"]["count"] == 10.0 and out["ctr"]["positives"] == 2.0
    assert out["ctr"]["calibration"] == pytest.approx((0.5 + 4 * 0.5 + 4 * 0.1 + 0.3) / 2)
    # positive at 0.5 ties one negative of weight 4 and beats the other; at 0.3 beats one
    assert out["ctr"]["auc"] == pytest.approx((2 + 4 + 4) / (2 * 8))
    assert out["ctcvr"]["count"] == 10.0 and out["cvr"]["count"] == 2.0  # clicked rows weigh 1


def test_streaming_metrics_weighted_like_the_day_s():
    rng = np.random.default_rng(7)
    n = 256
    tasks = [dict(ESMM[0], negative_keep_rate=0.2, sample_weight="w"), dict(ESMM[1], sample_weight="w")]
    click = (rng.random(n) < 0.4).astype("float32")
    labels = {"click": click, "conversion": click * (rng.random(n) < 0.5).astype("float32"),
              "w": rng.random(n).astype("float32")}
    outputs = {"ctr": rng.random(n).astype("float32"), "cvr": rng.random(n).astype("float32")}
    outputs["ctcvr"] = outputs["ctr"] * outputs["cvr"]
    streaming = StreamingTaskMetrics(tasks)
    streaming.update_state({k: tf.constant(v) for k, v in labels.items()}, {k: tf.constant(v) for k, v in outputs.items()})
    got = streaming.result()
    want = evaluate(tasks, labels, outputs)
    for output in ("ctr", "cvr", "ctcvr"):
        assert got[output]["auc"] == pytest.approx(want[output]["auc"], abs=1e-6)
        assert got[output]["calibration"] == pytest.approx(want[output]["calibration"], rel=1e-5)


# --------------------------------------------------------------------------- the correction


def test_the_correction_at_hand_computed_points():
    # q = p / (p + (1 - p) / w)
    assert float(corrected_probability(0.5, 0.1)) == pytest.approx(1 / 11)
    assert float(corrected_probability(0.2, 0.25)) == pytest.approx(1 / 17)
    assert float(corrected_probability(0.8, 0.25)) == pytest.approx(0.5)
    # the same as a logit shift by log w, exact where the formula on probabilities is not
    assert float(tf.sigmoid(corrected_logit(0.0, 0.1))) == pytest.approx(1 / 11)
    assert float(tf.sigmoid(corrected_logit(math.log(4.0), 0.25))) == pytest.approx(0.5)
    assert float(corrected_logit(30.0, 0.1)) == pytest.approx(30.0 + math.log(0.1))
    assert float(corrected_probability(0.3, 1.0)) == pytest.approx(0.3)


def test_corrected_outputs_of_a_funnel_and_of_a_keep_rate_column():
    tasks = tasks_of([dict(ESMM[0], negative_keep_rate=0.25), ESMM[1], {"name": "like", "label": "like"}])
    outputs = {
        "ctr": tf.constant([0.8]), "ctr_logit": tf.constant([math.log(4.0)]),
        "cvr": tf.constant([0.5]), "cvr_logit": tf.constant([0.0]),
        "ctcvr": tf.constant([0.4]), "ctcvr_logit": tf.constant([logit(0.4)]),
        "like": tf.constant([0.3]), "like_logit": tf.constant([logit(0.3)]),
    }
    published = corrected_outputs(tasks, outputs, {k: outputs[k] for k in ("ctr", "cvr", "ctcvr", "like")})
    got = {k: float(v[0]) for k, v in published.items()}
    assert got == pytest.approx({"ctr": 0.5, "cvr": 0.5, "ctcvr": 0.25, "like": 0.3}, rel=1e-6)
    # from probabilities only (DUPN's item scorer): the same values
    only = corrected_outputs(tasks, {k: outputs[k] for k in ("ctr", "cvr", "ctcvr")})
    assert {k: float(v[0]) for k, v in only.items()} == pytest.approx({"ctr": 0.5, "cvr": 0.5, "ctcvr": 0.25})
    # a rate column: the model learned the full traffic, nothing to correct
    column = tasks_of([dict(ESMM[0], negative_keep_rate_column="rate"), ESMM[1]])
    assert corrected_outputs(column, outputs, {"ctr": outputs["ctr"]})["ctr"] is outputs["ctr"]
