"""Metrics: binary metrics of whole arrays, per-task evaluation, a day's metrics in bounded
memory, and the in-graph metrics of the training loop."""

from mtlrec.metrics.binary import (
    auc,
    auc_from_counts,
    calibration,
    gauc,
    gauc_parts,
    logloss,
    logloss_sum,
    truth_auc,
)
from mtlrec.metrics.offline import evaluate, expert_utilization

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
