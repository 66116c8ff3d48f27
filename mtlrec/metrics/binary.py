"""Binary metrics of whole arrays: AUC, GAUC, logloss, calibration, truth AUC.

The functions take whole arrays (numpy or eager tensors). Every AUC in mtlrec is computed with
``auc_from_counts`` and every GAUC with ``gauc_parts``: the per-day accumulator
(``mtlrec.metrics.per_day``) and the in-graph streaming metrics (``mtlrec.metrics.streaming``)
included. A metric that is undefined on the data (AUC with one class only, calibration with no
positive) is NaN, never an exception.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

EPS = 1e-7


def as_vector(x, name: str = "values") -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a (N,) or (N, 1) array, got shape {x.shape}")
    return x


def check_lengths(**arrays):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"expected arrays of the same length, got {lengths}")


def auc_from_counts(pos, neg) -> float:
    """ROC AUC from positive and negative weights per score value, in increasing score order.

    AUC = sum_b pos_b (N_<b + neg_b / 2) / (P N): a positive beats every
    negative with a lower score and ties with the negatives of its own score
    (scikit-learn's ``roc_auc_score``). NaN when P or N is 0.
    """
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float(np.dot(pos, below + 0.5 * neg) / (total_pos * total_neg))


def _weighted_auc(scores, pos_weight, neg_weight) -> float:
    values, index = np.unique(scores, return_inverse=True)
    return auc_from_counts(
        np.bincount(index, weights=pos_weight, minlength=len(values)),
        np.bincount(index, weights=neg_weight, minlength=len(values)),
    )


def auc(labels, preds, sample_weight=None) -> float:
    """Exact ROC AUC (labels > 0.5 are positives); NaN when fewer than two classes. With
    ``sample_weight`` each row counts w_i times (scikit-learn's ``roc_auc_score``)."""
    y, p = as_vector(labels, "labels"), as_vector(preds, "preds")
    check_lengths(labels=y, preds=p)
    w = np.ones(len(y)) if sample_weight is None else _weights(sample_weight, len(y))
    positive = (y > 0.5).astype(np.float64)
    return _weighted_auc(p, positive * w, (1.0 - positive) * w)


def logloss_sum(labels, preds, sample_weight=None) -> float:
    """Sum of binary cross-entropies of probabilities clipped to [EPS, 1 - EPS] (each
    times its row's weight, when given)."""
    p = np.clip(np.asarray(preds, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, dtype=np.float64)
    per_row = y * np.log(p) + (1.0 - y) * np.log1p(-p)
    if sample_weight is not None:
        return float(-np.dot(np.asarray(sample_weight, dtype=np.float64), per_row))
    return float(-np.sum(per_row))


def _weights(sample_weight, n: int):
    if sample_weight is None:
        return None
    w = as_vector(sample_weight, "sample_weight")
    if len(w) != n:
        raise ValueError(f"expected arrays of the same length, got {{'labels': {n}, 'sample_weight': {len(w)}}}")
    return w


def logloss(labels, preds, sample_weight=None) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [1e-7, 1 - 1e-7]); with
    ``sample_weight``, sum_i w_i l_i / sum_i w_i. NaN without rows (or weight)."""
    y, p = as_vector(labels, "labels"), as_vector(preds, "preds")
    check_lengths(labels=y, preds=p)
    w = _weights(sample_weight, len(y))
    if w is not None:
        total = w.sum()
        return logloss_sum(y, p, w) / total if total > 0 else float("nan")
    if len(y) == 0:
        return float("nan")
    return logloss_sum(y, p) / len(y)


def calibration(labels, preds, sample_weight=None) -> float:
    """mean(preds) / mean(labels): 1 is calibrated, > 1 over-predicts; with
    ``sample_weight``, sum_i w_i p_i / sum_i w_i y_i."""
    y, p = as_vector(labels, "labels"), as_vector(preds, "preds")
    check_lengths(labels=y, preds=p)
    w = _weights(sample_weight, len(y))
    if w is not None:
        label_sum = float(np.dot(w, y))
        return float(np.dot(w, p) / label_sum) if label_sum > 0 else float("nan")
    if len(y) == 0 or y.mean() == 0:
        return float("nan")
    return float(p.mean() / y.mean())


def _weighted_gauc_parts(y, p, g, w) -> tuple[float, float]:
    """``gauc_parts`` with row weights: n_u the group's weight, AUC_u its weighted AUC
    (``auc_from_counts`` per group, on the weights of each distinct score)."""
    frame = pd.DataFrame({"g": g, "p": p, "pos": w * (y > 0.5), "neg": w * (y <= 0.5)})
    cells = frame.groupby(["g", "p"], sort=True)[["pos", "neg"]].sum().reset_index()
    below = cells.groupby("g", sort=False)["neg"].cumsum() - cells["neg"]
    cells["num"] = cells["pos"] * (below + 0.5 * cells["neg"])
    stats = cells.groupby("g", sort=False)[["pos", "neg", "num"]].sum()
    valid = (stats["pos"] > 0) & (stats["neg"] > 0)
    stats = stats[valid]
    per_group = stats["num"] / (stats["pos"] * stats["neg"])
    weight = stats["pos"] + stats["neg"]
    return float(np.dot(per_group, weight)), float(weight.sum())


def gauc_parts(labels, preds, groups, sample_weight=None) -> tuple[float, float]:
    """(sum_u n_u AUC_u, sum_u n_u) over the groups u holding both classes.

    n_u is the group's number of rows (impressions). Per-group AUCs come from
    the Mann-Whitney rank formula, AUC_u = (R_u - P_u (P_u + 1) / 2) / (P_u N_u)
    with R_u the sum of the positives' (tie-averaged) ranks within the group,
    vectorised over groups; this equals scikit-learn's ``roc_auc_score`` per
    group (checked in the tests) without a Python loop over users. Sums over
    disjoint sets of groups add up, which lets ``DayMetrics`` work per bucket.

    With ``sample_weight``, n_u is the group's total weight and AUC_u its weighted AUC
    (scikit-learn's ``roc_auc_score`` with ``sample_weight``, per group).
    """
    y, p = as_vector(labels, "labels"), as_vector(preds, "preds")
    g = np.asarray(groups).reshape(-1)
    check_lengths(labels=y, preds=p, groups=g)
    if len(y) == 0:
        return 0.0, 0.0
    w = _weights(sample_weight, len(y))
    if w is not None:
        return _weighted_gauc_parts(y, p, g, w)
    frame = pd.DataFrame({"g": g, "y": (y > 0.5).astype(np.float64), "p": p})
    frame["rank"] = frame.groupby("g", sort=False)["p"].rank(method="average")
    frame["pos_rank"] = frame["rank"] * frame["y"]
    stats = frame.groupby("g", sort=False).agg(
        n=("y", "size"), pos=("y", "sum"), rank_sum=("pos_rank", "sum")
    )
    neg = stats["n"] - stats["pos"]
    valid = (stats["pos"] > 0) & (neg > 0)
    stats, neg = stats[valid], neg[valid]
    per_group = (stats["rank_sum"] - stats["pos"] * (stats["pos"] + 1) / 2) / (
        stats["pos"] * neg
    )
    return float(np.dot(per_group, stats["n"])), float(stats["n"].sum())


def gauc(labels, preds, groups, sample_weight=None) -> float:
    """Group AUC: sum_u n_u AUC_u / sum_u n_u over groups u holding both classes
    (see ``gauc_parts``, also for ``sample_weight``); NaN when no group holds both."""
    num, den = gauc_parts(labels, preds, groups, sample_weight)
    return num / den if den > 0 else float("nan")


def truth_auc(preds, truth) -> float:
    """AUC of ``preds`` against labels drawn from the true probabilities ``truth``.

    Computed in expectation over the draw instead of with one random draw:
    every row counts as a positive with weight t and as a negative with weight
    1 - t (a weighted ROC AUC), so the value is deterministic.
    """
    p, t = as_vector(preds, "preds"), as_vector(truth, "truth")
    check_lengths(preds=p, truth=t)
    return _weighted_auc(p, t, 1.0 - t)
