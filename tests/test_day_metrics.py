import math
import os

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from mtlrec.metrics import per_day as day_metrics
from mtlrec.metrics.per_day import DayMetrics, GroupAucSpill, ScoreHistogram, score_bins
from mtlrec.metrics import auc, evaluate, gauc

ESMM = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
]


def funnel_day(n, seed=0, users=5000):
    rng = np.random.default_rng(seed)
    ctr_logit = rng.normal(-2.0, 1.0, n)
    cvr_logit = rng.normal(-1.0, 1.0, n)
    true_ctr, true_cvr = 1 / (1 + np.exp(-ctr_logit)), 1 / (1 + np.exp(-cvr_logit))
    click = (rng.random(n) < true_ctr).astype(np.float64)
    conversion = click * (rng.random(n) < true_cvr)
    ctr = 1 / (1 + np.exp(-(ctr_logit + rng.normal(0, 0.5, n))))
    cvr = 1 / (1 + np.exp(-(cvr_logit + rng.normal(0, 0.5, n))))
    labels = {"click": click, "conversion": conversion}
    preds = {"ctr": ctr, "cvr": cvr, "ctcvr": ctr * cvr}
    extras = {"user_id": rng.integers(0, users, n), "true_ctr": true_ctr, "true_cvr": true_cvr}
    return labels, preds, extras


def batches(n, size):
    return [slice(s, s + size) for s in range(0, n, size)]


def test_score_bins_are_monotone_and_clipped():
    p = np.array([0.0, 1e-12, 0.01, 0.5, 0.99, 1.0])
    idx = np.asarray(score_bins(p, 1000))
    assert list(idx) == sorted(idx)
    assert idx[0] == 0 and idx[-1] == 999
    assert idx[3] == 500  # logit 0 is the middle


def test_histogram_auc_by_hand_and_error_bound():
    h = ScoreHistogram(bins=4)  # logit bins [-16,-8) [-8,0) [0,8) [8,16]
    # positives at 0.6 and 0.7 share bin 2 with the negative 0.65: two ties instead of 1 win + 1 loss
    h.add(np.array([0.6, 0.7, 0.65, 0.1]), np.array([1.0, 1, 0, 0]), np.array([0.0, 0, 1, 1]))
    assert h.auc() == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)
    assert auc([1, 1, 0, 0], [0.6, 0.7, 0.65, 0.1]) == pytest.approx(3 / 4)
    assert h.max_auc_error() == pytest.approx(0.5 * 2 * 1 / 4)


def test_day_auc_within_1e3_of_sklearn_and_the_bound():
    labels, preds, _ = funnel_day(300_000, seed=1)
    day = DayMetrics(ESMM)
    for sl in batches(300_000, 65_536):
        day.update({k: v[sl] for k, v in labels.items()}, {k: v[sl] for k, v in preds.items()})
    got = day.result()
    bound = day.max_auc_error()
    clicked = labels["click"] == 1
    exact = {
        "ctr": roc_auc_score(labels["click"], preds["ctr"]),
        "cvr": roc_auc_score(labels["conversion"][clicked], preds["cvr"][clicked]),
        "ctcvr": roc_auc_score(labels["conversion"], preds["ctcvr"]),
    }
    for name, value in exact.items():
        assert abs(got[name]["auc"] - value) <= bound[name] + 1e-12
        assert abs(got[name]["auc"] - value) < 1e-3
        assert bound[name] < 1e-3
    assert got["cvr"]["auc_entire"] == pytest.approx(
        roc_auc_score(labels["conversion"], preds["cvr"]), abs=1e-3
    )
    assert got["ctr"]["logloss"] == pytest.approx(log_loss(labels["click"], preds["ctr"]), rel=1e-9)
    assert got["ctr"]["calibration"] == pytest.approx(preds["ctr"].mean() / labels["click"].mean())
    assert got["cvr"]["count"] == clicked.sum()


def test_known_auc_of_a_constructed_day():
    # a 2000-point grid: negatives at grid points 0..999, positives at 500..1499.
    # Positive 500+j (j < 500) beats the 500+j negatives below it and ties the one at
    # its own point; positives 1000..1499 beat all 1000 negatives.
    grid = np.arange(1, 2001) / 2001
    neg, pos = grid[:1000], grid[500:1500]
    wins = sum(500 + j + 0.5 for j in range(500)) + 500 * 1000
    assert wins / 1e6 == 0.875
    day = DayMetrics([{"name": "ctr", "label": "click"}])
    day.update({"click": np.r_[np.zeros(1000), np.ones(1000)]}, {"ctr": np.r_[neg, pos]})
    assert day.result()["ctr"]["auc"] == pytest.approx(wins / 1e6, abs=1e-12)


def test_streamed_metrics_equal_the_whole_arrays(tmp_path, monkeypatch):
    monkeypatch.setattr(day_metrics, "SPILL_MEMORY_ROWS", 3_000)
    n = 40_000
    labels, preds, extras = funnel_day(n, seed=2, users=3000)
    day = DayMetrics(ESMM, spill_dir=tmp_path)
    for sl in batches(n, 1000):
        day.update(
            {k: v[sl] for k, v in labels.items()},
            {k: v[sl] for k, v in preds.items()},
            {k: v[sl] for k, v in extras.items()},
        )
    assert len(os.listdir(tmp_path)) == 3  # ctr, cvr and ctcvr spilled
    got = day.result()
    assert os.listdir(tmp_path) == []  # and cleaned
    whole = evaluate(ESMM, labels, preds, extras)
    assert got.keys() == whole.keys()
    for name in got:
        assert got[name] == pytest.approx(whole[name], rel=1e-9, nan_ok=True)
    # GAUC is exact: per-user AUCs by scikit-learn
    clicked = labels["click"] == 1
    for name, y, p, g in [
        ("ctr", labels["click"], preds["ctr"], extras["user_id"]),
        ("cvr", labels["conversion"][clicked], preds["cvr"][clicked], extras["user_id"][clicked]),
    ]:
        num = den = 0.0
        for u in np.unique(g):
            m = g == u
            if 0 < y[m].sum() < m.sum():
                num += m.sum() * roc_auc_score(y[m], p[m])
                den += m.sum()
        assert got[name]["gauc"] == pytest.approx(num / den, rel=1e-12)
    assert got["ctr"]["truth_auc"] == pytest.approx(whole["ctr"]["truth_auc"])


def test_spill_splits_buckets_larger_than_memory(tmp_path):
    rng = np.random.default_rng(4)
    n = 20_000
    g = rng.integers(0, 400, n).astype(str)
    y = (rng.random(n) < 0.3).astype(np.float64)
    p = np.round(rng.random(n) + 0.2 * y, 2)
    spill = GroupAucSpill(spill_dir=tmp_path, memory_rows=100)  # 64 buckets of ~300 rows: split again
    for sl in batches(n, 150):
        spill.add(g[sl], y[sl], p[sl])
    num, den = spill.parts()
    assert num / den == pytest.approx(gauc(y, p, g), rel=1e-12)
    assert os.listdir(tmp_path) == []


def test_reliability_groups_match_sorted_quantiles():
    rng = np.random.default_rng(5)
    p = rng.random(100_000)
    y = (rng.random(100_000) < p).astype(np.float64)
    day = DayMetrics([{"name": "ctr", "label": "click"}])
    day.update({"click": y}, {"ctr": p})
    curve = day.calibration()["ctr"]
    assert len(curve["pred"]) == 10 and sum(curve["count"]) == 100_000
    order = np.argsort(p)
    for k, part in enumerate(np.array_split(order, 10)):
        assert curve["count"][k] == pytest.approx(len(part), rel=0.01)
        assert curve["pred"][k] == pytest.approx(p[part].mean(), abs=0.005)
        assert curve["label"][k] == pytest.approx(y[part].mean(), abs=0.01)


def test_result_before_any_row_and_missing_keys():
    day = DayMetrics(ESMM)
    with pytest.raises(ValueError, match=r"no rows were given to the metrics"):
        day.result()
    with pytest.raises(ValueError, match=r"task 'cvr': joint prediction 'ctcvr' is missing"):
        day.update({"click": np.ones(2), "conversion": np.zeros(2)}, {"ctr": np.ones(2), "cvr": np.ones(2)})
    one_class = DayMetrics([{"name": "ctr", "label": "click"}])
    one_class.update({"click": np.ones(3)}, {"ctr": np.array([0.1, 0.2, 0.3])})
    assert math.isnan(one_class.result()["ctr"]["auc"])
