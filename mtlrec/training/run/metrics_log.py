"""``metrics.csv`` of a run: one row per (day, task, metric), rewritten atomically.

Columns: ``day`` (the trained day), ``task`` (a task, a joint output such as
``ctcvr``, ``all``, or ``table:<name>`` for an identity/dynamic lookup), ``metric`` (``auc``, ``logloss``, ``calibration``, ...,
``train_loss``, ``expert_<i>``, ESCM²'s ``propensity_clipped_share`` and
``propensity_clipped_share_clicked``), ``value``, ``step`` (global step after the day).
Writing a day again (a resumed or forced day) replaces its rows, so a crash
between writing the metrics and recording the day never duplicates them.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from mtlrec.conventions import atomic

METRICS_FILE = "metrics.csv"
COLUMNS = ("day", "task", "metric", "value", "step")


def read_metrics(run_dir) -> list[dict]:
    """The rows of ``run_dir/metrics.csv`` (``value`` as float, ``step`` as int)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["value"] = float(row["value"]) if row["value"] not in ("", "nan") else math.nan
        row["step"] = int(row["step"])
    return rows


#: Figures of an identity/dynamic table's day written to ``metrics.csv`` (task ``table:<name>``).
TABLE_METRICS = (
    "rows_in_use", "capacity", "admitted", "evicted", "lookups", "oov_share", "overflow_lookups",
    "ids_tracked", "ids_waiting", "ids_dropped",
)


def metric_series(rows, metric: str) -> dict:
    """task -> sorted [(day, value)] of ``metric`` in ``read_metrics`` rows (NaNs dropped)."""
    out = {}
    for row in rows:
        if row["metric"] == metric and not math.isnan(row["value"]):
            out.setdefault(row["task"], []).append((row["day"], row["value"]))
    return {task: sorted(points) for task, points in out.items()}


def metric_rows(day: str, step: int, evaluation=None, train_losses=None, tables=None) -> list[dict]:
    """Rows for one trained day from an ``EvaluationResult``, the day's mean losses and the
    day's figures of the identity/dynamic lookups (``Trainer.lookup_report``)."""
    rows = []
    for name, figures in (tables or {}).items():
        for metric in TABLE_METRICS:
            if metric in figures:
                rows.append({"day": day, "task": f"table:{name}", "metric": metric, "value": figures[metric], "step": step})
    for name, value in (train_losses or {}).items():
        task = "all" if name == "loss" else name
        rows.append({"day": day, "task": task, "metric": "train_loss", "value": value, "step": step})
    if evaluation is not None:
        for task, values in evaluation.metrics.items():
            for metric, value in values.items():
                rows.append(
                    {"day": day, "task": task, "metric": metric, "value": value, "step": step}
                )
        for task, weights in evaluation.utilization.items():
            for i, value in enumerate(weights):
                rows.append(
                    {"day": day, "task": task, "metric": f"expert_{i}", "value": value, "step": step}
                )
    return rows


def write_day_metrics(run_dir, day: str, rows: list[dict]) -> None:
    """Replace the rows of ``day`` in ``metrics.csv`` with ``rows``."""
    kept = [r for r in read_metrics(run_dir) if r["day"] != day]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(kept + rows, key=lambda r: (r["day"], r["step"])):
        value = row["value"]
        writer.writerow({**row, "value": "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))})
    atomic.write_text(Path(run_dir) / METRICS_FILE, out.getvalue())
