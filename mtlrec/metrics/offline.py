"""Offline metrics per task of whole arrays: ``evaluate`` and the experts' utilization.

``evaluate`` runs ``mtlrec.metrics.per_day.DayMetrics`` over its arrays as one batch, the same
code that evaluates a day batch by batch.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from mtlrec.metrics.per_day import DayMetrics


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

    Row weights (a task's ``sample_weight`` column in ``labels``, negative
    downsampling: ``mtlrec.row_weights.metric_weights``) weigh every metric of the
    task's outputs; ``count`` and ``positives`` are then sums of weights.

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
