"""Per-task metrics accumulated batch by batch in a training loop."""

from __future__ import annotations

from typing import Iterable, Mapping

import keras
from keras import ops

from mtlrec.metrics.per_day import SCORE_BINS, score_bins
from mtlrec.metrics.binary import auc_from_counts
from mtlrec.row_weights import metric_weights
from mtlrec.tasks import Task, require


def _flat(x):
    return ops.reshape(ops.cast(ops.convert_to_tensor(x), "float32"), (-1,))


class _BinnedAUC(keras.metrics.Metric):
    """AUC from positive/negative weight per score bin: ``DayMetrics``' bins and formula."""

    def __init__(self, bins, name):
        super().__init__(name=name)
        self.bins = bins
        self.pos = self.add_variable(shape=(bins,), initializer="zeros", name="pos")
        self.neg = self.add_variable(shape=(bins,), initializer="zeros", name="neg")

    def update_state(self, y_true, y_pred, sample_weight=None):
        idx = score_bins(y_pred, self.bins)
        w = ops.ones_like(y_true) if sample_weight is None else sample_weight
        positive = ops.cast(ops.greater(y_true, 0.5), "float32") * w
        self.pos.assign_add(ops.segment_sum(positive, idx, num_segments=self.bins))
        self.neg.assign_add(ops.segment_sum(w - positive, idx, num_segments=self.bins))

    def result(self):  # eager only, like StreamingTaskMetrics.result
        return auc_from_counts(ops.convert_to_numpy(self.pos), ops.convert_to_numpy(self.neg))


class StreamingTaskMetrics:
    """Streaming per-task metrics built on ``keras.metrics``.

    Each output is measured on its task's evaluation space (``Task.evaluation_spaces``,
    as in ``mtlrec.metrics.evaluate``): rows where its ``sample_space`` label is 1,
    rows where its parent's label is 1 for a funnel step, all rows otherwise;
    rows outside get sample weight 0, rows inside their task's row weight
    (``mtlrec.row_weights.metric_weights``: its ``sample_weight`` column, negative
    downsampling), 1 without one.

    - binary: ``auc`` (from counts in ``bins`` logit-spaced score bins, the
      bins and formula of ``mtlrec.metrics.per_day.DayMetrics``, so both agree;
      NaN with one class) and ``calibration`` (sum of predictions / sum of
      labels); a funnel step also reports its joint output under
      ``joint_name`` over all rows.
    - multiclass: ``accuracy``; regression: ``mse``.

    ``update_state`` is graph-compatible (call it inside the ``tf.function``
    step); ``result`` returns Python floats and is called eagerly.

    Args:
        tasks: ``Task`` objects or task dicts.
        bins: score bins of the AUC (default ``day_metrics.SCORE_BINS``).
    """

    def __init__(self, tasks: Iterable, bins: int = SCORE_BINS):
        self.tasks = [Task.from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
            raise ValueError(f"Expected bins to be an integer > 1. Received: bins={bins!r}")
        self._metrics: dict[str, dict[str, keras.metrics.Metric]] = {}
        for task in self.tasks:
            if task.kind == "binary":
                self._metrics[task.name] = self._binary(task.name, bins)
                if task.parent is not None:
                    self._metrics[task.joint_name] = self._binary(
                        task.joint_name, bins
                    )
            elif task.kind == "multiclass":
                self._metrics[task.name] = {
                    "accuracy": keras.metrics.SparseCategoricalAccuracy(
                        name=f"{task.name}_accuracy"
                    )
                }
            else:
                self._metrics[task.name] = {
                    "mse": keras.metrics.MeanSquaredError(name=f"{task.name}_mse")
                }

    @staticmethod
    def _binary(name, bins):
        return {
            "auc": _BinnedAUC(bins, name=f"{name}_auc"),
            "pred_sum": keras.metrics.Sum(name=f"{name}_pred_sum"),
            "label_sum": keras.metrics.Sum(name=f"{name}_label_sum"),
        }

    @property
    def metrics(self) -> list:
        """All underlying ``keras.metrics.Metric`` objects."""
        return [m for group in self._metrics.values() for m in group.values()]

    def update_state(self, labels: Mapping, outputs: Mapping) -> None:
        """Accumulate one batch (labels and model outputs as in ``task_losses``)."""
        for task in self.tasks:
            row_weights = metric_weights(task, self.tasks, labels, _flat)
            for space in task.evaluation_spaces(self.tasks):
                rows = space.rows(labels, _flat)
                weight = None if rows is None else ops.cast(rows, "float32")
                if row_weights is not None:
                    weight = row_weights if weight is None else weight * row_weights
                y = _flat(require(labels, space.label, "label", task.name))
                what = "joint output" if space.joint else "output"
                out = require(outputs, space.output, what, task.name)
                group = self._metrics[space.output]
                if task.kind == "binary":
                    self._update_binary(group, y, _flat(out), weight)
                elif task.kind == "multiclass":
                    pred = ops.reshape(out, (-1, task.num_classes))
                    group["accuracy"].update_state(y, pred, sample_weight=weight)
                else:
                    group["mse"].update_state(
                        ops.expand_dims(y, -1),
                        ops.expand_dims(_flat(out), -1),
                        sample_weight=weight,
                    )

    @staticmethod
    def _update_binary(group, y, p, weight):
        group["auc"].update_state(y, p, sample_weight=weight)
        w = ops.ones_like(y) if weight is None else weight
        group["pred_sum"].update_state(ops.sum(p * w))
        group["label_sum"].update_state(ops.sum(y * w))

    def result(self) -> dict:
        """dict task (or joint output) -> dict metric -> float."""
        out = {}
        for name, group in self._metrics.items():
            if "auc" in group:
                labels = float(group["label_sum"].result())
                preds = float(group["pred_sum"].result())
                out[name] = {
                    "auc": float(group["auc"].result()),
                    "calibration": preds / labels if labels > 0 else float("nan"),
                }
            else:
                out[name] = {k: float(m.result()) for k, m in group.items()}
        return out

    def reset_state(self) -> None:
        for metric in self.metrics:
            metric.reset_state()
