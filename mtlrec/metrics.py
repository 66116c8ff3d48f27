"""Offline metrics per task: AUC, GAUC, logloss, calibration, truth AUCs.

Inputs are whole arrays (numpy or eager tensors) that fit in memory; the
training loop uses ``mtlrec.streaming_metrics.StreamingTaskMetrics`` instead.
A metric that is undefined on the data (AUC with one class only, calibration
with no positive) is NaN, never an exception.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from mtlrec.tasks import Task, funnel_chain

_EPS = 1e-7


def _vector(x, name: str = "values") -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a (N,) or (N, 1) array, got shape {x.shape}")
    return x


def _check_lengths(**arrays):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"expected arrays of the same length, got {lengths}")


def auc(labels, preds, sample_weight=None) -> float:
    """ROC AUC (scikit-learn); NaN when the labels hold fewer than two classes."""
    y, p = _vector(labels, "labels"), _vector(preds, "preds")
    _check_lengths(labels=y, preds=p)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p, sample_weight=sample_weight))


def logloss(labels, preds) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [1e-7, 1 - 1e-7])."""
    y, p = _vector(labels, "labels"), _vector(preds, "preds")
    _check_lengths(labels=y, preds=p)
    if len(y) == 0:
        return float("nan")
    return float(log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1]))


def calibration(labels, preds) -> float:
    """mean(preds) / mean(labels): 1 is calibrated, > 1 over-predicts."""
    y, p = _vector(labels, "labels"), _vector(preds, "preds")
    _check_lengths(labels=y, preds=p)
    if len(y) == 0 or y.mean() == 0:
        return float("nan")
    return float(p.mean() / y.mean())


def gauc(labels, preds, groups) -> float:
    """Group AUC: sum_u n_u AUC_u / sum_u n_u over groups u holding both classes.

    n_u is the group's number of rows (impressions). Per-group AUCs come from
    the Mann-Whitney rank formula, AUC_u = (R_u - P_u (P_u + 1) / 2) / (P_u N_u)
    with R_u the sum of the positives' (tie-averaged) ranks within the group,
    vectorised over groups; this equals scikit-learn's ``roc_auc_score`` per
    group (checked in the tests) without a Python loop over users.
    """
    y, p = _vector(labels, "labels"), _vector(preds, "preds")
    g = np.asarray(groups).reshape(-1)
    _check_lengths(labels=y, preds=p, groups=g)
    if len(y) == 0:
        return float("nan")
    frame = pd.DataFrame({"g": g, "y": (y > 0.5).astype(np.float64), "p": p})
    frame["rank"] = frame.groupby("g", sort=False)["p"].rank(method="average")
    frame["pos_rank"] = frame["rank"] * frame["y"]
    stats = frame.groupby("g", sort=False).agg(
        n=("y", "size"), pos=("y", "sum"), rank_sum=("pos_rank", "sum")
    )
    neg = stats["n"] - stats["pos"]
    valid = (stats["pos"] > 0) & (neg > 0)
    if not valid.any():
        return float("nan")
    stats, neg = stats[valid], neg[valid]
    per_group = (stats["rank_sum"] - stats["pos"] * (stats["pos"] + 1) / 2) / (
        stats["pos"] * neg
    )
    return float(np.average(per_group, weights=stats["n"]))


def truth_auc(preds, truth) -> float:
    """AUC of ``preds`` against labels drawn from the true probabilities ``truth``.

    Computed in expectation over the draw instead of with one random draw:
    every row counts as a positive with weight t and as a negative with weight
    1 - t (a weighted ROC AUC), so the value is deterministic.
    """
    p, t = _vector(preds, "preds"), _vector(truth, "truth")
    _check_lengths(preds=p, truth=t)
    if len(p) == 0 or t.sum() <= 0 or (1 - t).sum() <= 0:
        return float("nan")
    y = np.concatenate([np.ones_like(t), np.zeros_like(t)])
    w = np.concatenate([t, 1.0 - t])
    return float(roc_auc_score(y, np.concatenate([p, p]), sample_weight=w))


def _binary_metrics(y, p, groups, prefix="") -> dict:
    out = {
        f"{prefix}count": float(len(y)),
        f"{prefix}positives": float(np.sum(y > 0.5)),
        f"{prefix}auc": auc(y, p),
        f"{prefix}logloss": logloss(y, p),
        f"{prefix}calibration": calibration(y, p),
    }
    if groups is not None:
        out[f"{prefix}gauc"] = gauc(y, p, groups)
    return out


def _get(mapping: Mapping, key: str, what: str, task: str) -> np.ndarray:
    if key not in mapping:
        raise ValueError(
            f"task {task!r}: {what} {key!r} is missing "
            f"(have: {', '.join(sorted(map(str, mapping)))})"
        )
    return np.asarray(mapping[key])


def _truth(extras: Mapping, task: Task):
    """True probability of ``task`` (``extras["true_<name>"]``) or None."""
    key = f"true_{task.name}"
    if key in extras:
        return _vector(extras[key], key)
    return None


def _joint_truth(extras: Mapping, task: Task, tasks: list[Task]):
    key = f"true_{task.joint_name}"
    if key in extras:
        return _vector(extras[key], key)
    chain = funnel_chain(task, tasks)
    keys = [f"true_{t.name}" for t in chain]
    if all(k in extras for k in keys):
        return np.prod([_vector(extras[k], k) for k in keys], axis=0)
    return None


def _add_truth(out: dict, pred, truth, y, space) -> None:
    if truth is None:
        return
    _check_lengths(preds=pred, truth=truth)
    out["oracle_auc"] = auc(y[space], truth[space])
    out["truth_auc"] = truth_auc(pred, truth)
    out["truth_auc_oracle"] = truth_auc(truth, truth)


def evaluate(
    tasks: Iterable, labels: Mapping, predictions: Mapping, extras: Mapping | None = None
) -> dict:
    """Metrics per task (and per joint output of funnel steps).

    Every task is evaluated on its *evaluation space*: rows where its
    ``sample_space`` label is 1, rows where its parent's label is 1 for a
    funnel step, all rows otherwise.

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

    Args:
        tasks: ``Task`` objects or task dicts.
        labels: label name -> (N,) array.
        predictions: output name -> (N,), (N, 1) or (N, C) array.
        extras: optional columns: ``user_id`` (GAUC groups), ``true_<task>``.

    Returns:
        dict task (or joint output) name -> dict metric name -> float.
    """
    tasks = [Task.from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
    by_name = {t.name: t for t in tasks}
    extras = dict(extras or {})
    groups = np.asarray(extras["user_id"]).reshape(-1) if "user_id" in extras else None
    results = {}
    for task in tasks:
        y = _get(labels, task.label, "label", task.name)
        pred = _get(predictions, task.name, "prediction", task.name)
        if task.kind == "multiclass":
            y = y.reshape(-1)
            pred = pred.reshape(len(pred), -1)
        else:
            y = _vector(y, f"labels[{task.label!r}]")
            pred = _vector(pred, f"predictions[{task.name!r}]")
        _check_lengths(**{f"labels[{task.label!r}]": y, f"predictions[{task.name!r}]": pred})
        if groups is not None:
            _check_lengths(labels=y, user_id=groups)

        condition = task.sample_space
        if task.parent is not None:
            condition = by_name[task.parent].label
        if condition is not None:
            cond = _vector(_get(labels, condition, "label", task.name), condition)
            space = cond == 1
        else:
            space = np.ones(len(y), dtype=bool)

        if task.kind == "multiclass":
            yy, pp = y[space].astype(np.int64), np.clip(pred[space], _EPS, 1.0)
            pp = pp / pp.sum(axis=1, keepdims=True)
            results[task.name] = {
                "count": float(len(yy)),
                "accuracy": float(np.mean(pp.argmax(axis=1) == yy)) if len(yy) else float("nan"),
                "logloss": float(
                    log_loss(yy, pp, labels=list(range(task.num_classes)))
                )
                if len(yy)
                else float("nan"),
            }
            continue
        if task.kind == "regression":
            diff = pred[space] - y[space]
            results[task.name] = {
                "count": float(len(diff)),
                "mse": float(np.mean(diff**2)) if len(diff) else float("nan"),
                "mae": float(np.mean(np.abs(diff))) if len(diff) else float("nan"),
            }
            continue

        g = groups[space] if groups is not None else None
        out = _binary_metrics(y[space], pred[space], g)
        if condition is not None:
            out["auc_clicked"] = out["auc"]
            out["auc_entire"] = auc(y, pred)
        _add_truth(out, pred, _truth(extras, task), y, space)
        results[task.name] = out

        if task.parent is not None:
            joint = _vector(
                _get(predictions, task.joint_name, "joint prediction", task.name),
                f"predictions[{task.joint_name!r}]",
            )
            _check_lengths(labels=y, joint=joint)
            joint_out = _binary_metrics(y, joint, groups)
            everywhere = np.ones(len(y), dtype=bool)
            _add_truth(joint_out, joint, _joint_truth(extras, task, tasks), y, everywhere)
            results[task.joint_name] = joint_out
    return results


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
    "calibration",
    "evaluate",
    "expert_utilization",
    "gauc",
    "logloss",
    "truth_auc",
]
