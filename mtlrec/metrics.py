"""Offline metrics per task: AUC, GAUC, logloss, calibration, truth AUCs.

The functions take whole arrays (numpy or eager tensors). ``evaluate`` runs
``mtlrec.day_metrics.DayMetrics`` over its arrays as one batch, the same code
that evaluates a day batch by batch, and the in-graph
``mtlrec.streaming_metrics.StreamingTaskMetrics`` uses the same score bins: all
compute AUC with ``auc_from_counts`` and GAUC with ``gauc_parts``. A metric that is undefined on the data (AUC with
one class only, calibration with no positive) is NaN, never an exception.
"""

from __future__ import annotations

from typing import Iterable, Mapping

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
    """Exact ROC AUC (labels > 0.5 are positives); NaN when fewer than two classes."""
    y, p = as_vector(labels, "labels"), as_vector(preds, "preds")
    check_lengths(labels=y, preds=p)
    w = np.ones(len(y)) if sample_weight is None else as_vector(sample_weight, "sample_weight")
    positive = (y > 0.5).astype(np.float64)
    return _weighted_auc(p, positive * w, (1.0 - positive) * w)


def logloss_sum(labels, preds) -> float:
    """Sum of binary cross-entropies of probabilities clipped to [EPS, 1 - EPS]."""
    p = np.clip(np.asarray(preds, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.sum(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def logloss(labels, preds) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [1e-7, 1 - 1e-7])."""
    y, p = as_vector(labels, "labels"), as_vector(preds, "preds")
    check_lengths(labels=y, preds=p)
    if len(y) == 0:
        return float("nan")
    return logloss_sum(y, p) / len(y)


def calibration(labels, preds) -> float:
    """mean(preds) / mean(labels): 1 is calibrated, > 1 over-predicts."""
    y, p = as_vector(labels, "labels"), as_vector(preds, "preds")
    check_lengths(labels=y, preds=p)
    if len(y) == 0 or y.mean() == 0:
        return float("nan")
    return float(p.mean() / y.mean())


def gauc_parts(labels, preds, groups) -> tuple[float, float]:
    """(sum_u n_u AUC_u, sum_u n_u) over the groups u holding both classes.

    n_u is the group's number of rows (impressions). Per-group AUCs come from
    the Mann-Whitney rank formula, AUC_u = (R_u - P_u (P_u + 1) / 2) / (P_u N_u)
    with R_u the sum of the positives' (tie-averaged) ranks within the group,
    vectorised over groups; this equals scikit-learn's ``roc_auc_score`` per
    group (checked in the tests) without a Python loop over users. Sums over
    disjoint sets of groups add up, which lets ``DayMetrics`` work per bucket.
    """
    y, p = as_vector(labels, "labels"), as_vector(preds, "preds")
    g = np.asarray(groups).reshape(-1)
    check_lengths(labels=y, preds=p, groups=g)
    if len(y) == 0:
        return 0.0, 0.0
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


def gauc(labels, preds, groups) -> float:
    """Group AUC: sum_u n_u AUC_u / sum_u n_u over groups u holding both classes
    (see ``gauc_parts``); NaN when no group holds both."""
    num, den = gauc_parts(labels, preds, groups)
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


def evaluate(
    tasks: Iterable, labels: Mapping, predictions: Mapping, extras: Mapping | None = None
) -> dict:
    """Metrics per task (and per joint output of funnel steps).

    Every task is evaluated on its *evaluation space* (``Task.evaluation_spaces``):
    rows where its ``sample_space`` label is 1, rows where its parent's label is 1
    for a funnel step, all rows otherwise.

    binary: ``count``, ``positives``, ``auc``, ``logloss``, ``calibration`` and,
    with ``extras["user_id"]``, ``gauc``, all on the evaluation space. A task
    with a sample space or a parent also gets ``auc_clicked`` (= ``auc``, the
    AUC on the clicked rows in a CTR -> CVR funnel) and ``auc_entire`` (its
    output over all rows against its label).

    Funnel steps also get an entry under ``joint_name`` (e.g. ``ctcvr``): the
    binary metrics of the joint output over all rows against the task's label.

    With the true probability in ``extras["true_<task name>"]`` (``true_ctr``,
    ``true_cvr``; a joint's truth is ``true_<joint>`` or the product along the
    chain):
      - ``oracle_auc``: AUC of the true probability used as the score against
        the observed label on the evaluation space (the best AUC any model
        could expect there);
      - ``truth_auc``: AUC of the prediction against labels drawn from the
        true probability for *all* rows (for CVR: conversions drawn for every
        impression, as if all were clicked), see ``truth_auc``;
      - ``truth_auc_oracle``: the same with the truth as the score (its ceiling).

    multiclass: ``count``, ``accuracy``, ``logloss``. regression: ``count``,
    ``mse``, ``mae``.

    AUCs are read from 65,536 logit-spaced score bins (``DayMetrics``): equal to
    ``auc`` unless two different scores share a bin, and never further from it
    than ``DayMetrics.max_auc_error()``. GAUC, logloss and calibration are exact.

    Args:
        tasks: ``Task`` objects or task dicts.
        labels: label name -> (N,) array.
        predictions: output name -> (N,), (N, 1) or (N, C) array.
        extras: optional columns: ``user_id`` (GAUC groups), ``true_<task>``.

    Returns:
        dict task (or joint output) name -> dict metric name -> float.
    """
    from mtlrec.day_metrics import DayMetrics

    day = DayMetrics(tasks)
    try:
        day.update(labels, predictions, extras)
        return day.result()
    finally:
        day.close()


def expert_utilization(weights: Mapping) -> dict:
    """Mean gate weight per expert for each task.

    Args:
        weights: task name -> (N, E) gate weights (e.g. from ``gate_model()``).

    Returns:
        dict task -> list of E floats (sum 1 for softmax gates).
    """
    out = {}
    for task, w in weights.items():
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 2:
            raise ValueError(
                f"weights[{task!r}]: expected a (N, num_experts) array, got shape {w.shape}"
            )
        if w.shape[0] == 0:
            raise ValueError(f"weights[{task!r}]: expected at least one row, got 0")
        out[task] = [float(v) for v in w.mean(axis=0)]
    return out


__all__ = [
    "auc",
    "auc_from_counts",
    "calibration",
    "evaluate",
    "expert_utilization",
    "gauc",
    "gauc_parts",
    "logloss",
    "logloss_sum",
    "truth_auc",
]
