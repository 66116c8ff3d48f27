"""The ``metrics.csv`` rows of a followed partition.

Besides a day's rows (``train_loss``, the tables' figures), a partition has:

- ``progressive_<metric>`` per task: the evaluation of the partition by the model before
  it trained on it (``progressive_auc``, ``progressive_logloss``, ...);
- ``rows`` (task ``all``): the rows trained;
- ``lag_seconds`` (task ``all``): from the partition's done marker to the export that
  first holds it (written once that export exists).
"""

from __future__ import annotations

from mtlrec.training.run.metrics_log import metric_rows

PREFIX = "progressive_"


def lag_rows(key: str, step: int, lag: float | None) -> list[dict]:
    if lag is None:
        return []
    return [{"day": key, "task": "all", "metric": "lag_seconds", "value": float(lag), "step": step}]


def partition_rows(key, step, progressive, losses, tables, rows, lag) -> list[dict]:
    """The rows of partition ``key`` after training it (global step ``step``)."""
    out = metric_rows(key, step, None, losses, tables)
    for task, values in (progressive or {}).items():
        for metric, value in values.items():
            out.append({"day": key, "task": task, "metric": PREFIX + metric,
                        "value": float("nan") if value is None else value, "step": step})
    out.append({"day": key, "task": "all", "metric": "rows", "value": float(rows), "step": step})
    return out + lag_rows(key, step, lag)
