"""The metrics of `model.compile(metrics=...)` for a multi-task model, keyed by its outputs."""

from __future__ import annotations

import keras
from keras import ops

from mtlrec.models.base.downsampling_correction import corrected_outputs
from mtlrec.row_weights import metric_weights
from mtlrec.tasks import require

#: Strings whose Keras metric depends on the output's kind (Keras picks them by shape).
_BY_KIND = {
    "accuracy": {"binary": "binary_accuracy", "multiclass": "sparse_categorical_accuracy"},
    "acc": {"binary": "binary_accuracy", "multiclass": "sparse_categorical_accuracy"},
    "crossentropy": {"binary": "binary_crossentropy", "multiclass": "sparse_categorical_crossentropy"},
    "ce": {"binary": "binary_crossentropy", "multiclass": "sparse_categorical_crossentropy"},
}


_SHAPES = {
    "binary": "labels and probabilities (B, 1)",
    "multiclass": "class ids (B,) and class probabilities (B, classes)",
    "regression": "labels and values (B, 1)",
}


def _flat(x):
    return ops.reshape(ops.cast(ops.convert_to_tensor(x), "float32"), (-1,))


class OutputMetrics:
    """Keras metrics of a multi-task model's outputs, each measured where its task is
    evaluated.

    `metrics` is what `compile` received: a dict output name -> a metric or a list of
    metrics, or a list (or one metric) for every output of `model.probability_names()`.
    A metric is a `keras.metrics.Metric`, a Keras metric name (`"auc"`, `"mae"`; for
    `"accuracy"` and `"crossentropy"` the binary or sparse categorical form, by the
    task's kind) or a function `fn(y_true, y_pred)`. Each output gets its own copy,
    logged as `<output>_<metric name>` (`ctr_auc`).

    Each output is compared with its task's label on its evaluation space
    (`Task.evaluation_spaces`: the sample-space rows, the clicked rows of a funnel step,
    every row for a joint output), rows weighted by the task's row weights
    (`mtlrec.row_weights.metric_weights`), and read after the correction of a
    downsampled task: what `mtlrec evaluate` measures. A metric gets labels and
    probabilities (values for regression) as `(B, 1)`, or class ids `(B,)` and class
    probabilities `(B, C)` for a multiclass task.
    """

    def __init__(self, metrics, tasks, outputs: list[str], taken: list[str] = ()):
        self.spec = metrics
        self.tasks = list(tasks)
        spaces = {
            space.output: (task, space)
            for task in self.tasks
            for space in task.evaluation_spaces(self.tasks)
        }
        if isinstance(metrics, dict):
            chosen = dict(metrics)
            for name in chosen:
                if name not in outputs:
                    raise ValueError(
                        f"compile(metrics=...): unknown output {name!r}; the model's outputs "
                        f"are {', '.join(outputs)}"
                    )
        else:
            chosen = {name: metrics for name in outputs}
        self.entries = []  # (task, space, metric)
        names = set(taken)
        for output, wanted in chosen.items():
            task, space = spaces[output]
            for identifier in wanted if isinstance(wanted, (list, tuple)) else [wanted]:
                metric = self._metric(identifier, output, task.kind)
                if metric.name in names:
                    raise ValueError(
                        f"compile(metrics=...): two metrics would be logged as {metric.name!r} "
                        "(give one of them another name)"
                    )
                names.add(metric.name)
                self.entries.append((task, space, metric))

    @property
    def metrics(self) -> list:
        return [metric for _, _, metric in self.entries]

    @staticmethod
    def _metric(identifier, output, kind):
        """A fresh metric for `output`, named `<output>_<name>`."""
        if isinstance(identifier, str):
            name = identifier
            found = keras.metrics.get(_BY_KIND.get(identifier, {}).get(kind, identifier))
        elif isinstance(identifier, keras.metrics.Metric):
            name, found = identifier.name, identifier
        elif callable(identifier):
            name, found = getattr(identifier, "__name__", type(identifier).__name__), identifier
        else:
            raise ValueError(
                f"compile(metrics=...): expected a keras.metrics.Metric, a metric name or a "
                f"function for output {output!r}. Received: {identifier!r}"
            )
        if isinstance(found, keras.metrics.Metric):
            config = dict(found.get_config(), name=f"{output}_{name}")
            return type(found).from_config(config)
        return keras.metrics.MeanMetricWrapper(found, name=f"{output}_{name}")

    def update_state(self, labels, outputs) -> None:
        """Accumulate one batch: the labels dict and the model's outputs (graph-compatible)."""
        outputs = corrected_outputs(self.tasks, outputs)
        for task, space, metric in self.entries:
            weight = metric_weights(task, self.tasks, labels, _flat)
            rows = space.rows(labels, _flat)
            if rows is not None:
                rows = ops.cast(rows, "float32")
                weight = rows if weight is None else weight * rows
            y = _flat(require(labels, space.label, "label", task.name))
            prediction = outputs[space.output]
            if task.kind == "multiclass":
                prediction = ops.reshape(prediction, (-1, task.num_classes))
            else:  # Keras' metric functions reduce the last axis
                y, prediction = ops.expand_dims(y, -1), ops.expand_dims(_flat(prediction), -1)
            try:
                metric.update_state(y, prediction, sample_weight=weight)
            except (ValueError, TypeError) as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ValueError(
                    f"compile(metrics=...): metric {metric.name!r} cannot measure output "
                    f"{space.output!r} (a {task.kind} task's: {_SHAPES[task.kind]}): {first}"
                ) from None
