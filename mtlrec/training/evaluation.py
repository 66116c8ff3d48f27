"""Evaluating a model on one day: predictions, per-task metrics, calibration bins, gates."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from mtlrec.metrics.per_day import CALIBRATION_BINS, DayMetrics
from mtlrec.tasks import Task, evaluation_labels
from mtlrec.training.progress import row_progress


@dataclasses.dataclass
class EvaluationResult:
    """What ``evaluate_model`` found on a day.

    Attributes:
        metrics: task (or joint output) -> metric -> value (``mtlrec.metrics.evaluate``).
        calibration: output -> ``{"pred": [...], "label": [...], "count": [...]}``,
            mean prediction and mean label in ``CALIBRATION_BINS`` prediction quantiles
            (groups of whole score bins, so their counts are nearly equal).
        utilization: task -> mean gate weight per expert (MMoE/PLE), else empty.
        rows: number of rows evaluated.
    """

    metrics: dict
    calibration: dict
    utilization: dict
    rows: int


def _numpy(value) -> np.ndarray:
    value = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]
    return value


def _split_extras(batch_labels, extras, shared):
    """(labels, extras) numpy dicts of one batch's labels dict; a name in ``shared`` is both."""
    labels, extra_values = {}, {}
    for name, value in batch_labels.items():
        value = _numpy(value)
        if name in extras:
            extra_values[name] = value
        if name not in extras or name in shared:
            labels[name] = value
    return labels, extra_values


def forward_function(model, gate_model=None):
    """A ``tf.function`` features -> (outputs, gate weights), traced once for any batch size."""
    from mtlrec.training.serving.export import input_signature, probability_outputs

    signature = input_signature(model)

    @tf.function(input_signature=[signature], autograph=False)  # as the training step
    def forward(features):
        outputs = dict(probability_outputs(model, model(features, training=False)))
        gates = dict(gate_model(features, training=False)) if gate_model is not None else {}
        return outputs, gates

    return forward


def evaluate_model(
    model, tasks, dataset: tf.data.Dataset, extras=(), gate_model=None, total_rows=None,
    spill_dir=None,
):
    """Run ``model`` over ``dataset`` and compute the metrics of every task.

    Args:
        model: a trained mtlrec model (dict outputs).
        tasks: ``Task`` objects or dicts.
        dataset: ``(features, labels)`` batches (``make_dataset`` with
            ``extra_columns=extras``), read once in order.
        extras: names in the labels dict that are extras for the metrics
            (``user_id``, ``true_ctr``, ``true_cvr``), not labels.
        gate_model: optional model from the same inputs to ``{task: (B, E)}``.
        total_rows: rows of ``dataset`` when known, for the progress bar.
        spill_dir: where GAUC rows beyond ``day_metrics.SPILL_MEMORY_ROWS`` per
            output go while the day is read (default: the system's temp dir).

    Memory does not grow with the day: every batch goes into a
    ``mtlrec.metrics.per_day.DayMetrics`` and is dropped. A model with an
    ``evaluation_counts(labels, predictions)`` method (ESCM²'s clipped propensities)
    adds its figures to the metrics: ``{(output, metric): (count, rows)}`` of each batch,
    summed over the day, reported as count / rows.

    Returns:
        An ``EvaluationResult``.
    """
    tasks = [Task.from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
    extras = tuple(extras)
    # an extra that the evaluation also reads as a label is given as both
    shared = set(extras) & evaluation_labels(tasks)

    forward = forward_function(model, gate_model)
    signature_names = list(forward.input_signature[0])

    day = DayMetrics(tasks, spill_dir=spill_dir)
    counts_of = getattr(model, "evaluation_counts", None)
    gate_sums, counts, rows = {}, {}, 0
    bar = row_progress(total_rows, "evaluate")
    try:
        for features, batch_labels in dataset:
            outputs, gates = forward({name: features[name] for name in signature_names})
            labels, extra_values = _split_extras(batch_labels, extras, shared)
            predictions = {k: _numpy(v) for k, v in outputs.items()}
            day.update(labels, predictions, extra_values)
            if callable(counts_of):
                for key, (count, of) in counts_of(labels, predictions).items():
                    total = counts.get(key, (0, 0))
                    counts[key] = (total[0] + count, total[1] + of)
            for name, value in gates.items():
                value = np.asarray(value, dtype=np.float64)
                gate_sums[name] = gate_sums.get(name, 0.0) + value.sum(axis=0)
            batch = len(next(iter(labels.values())))
            rows += batch
            bar.update(batch)
        if rows == 0:
            raise ValueError("evaluation data is empty")
        result = day.result()
        for (output, metric), (count, of) in counts.items():
            result.setdefault(output, {})[metric] = count / of if of else float("nan")
    finally:
        bar.close()
        day.close()
    return EvaluationResult(
        metrics=result,
        calibration=day.calibration(CALIBRATION_BINS),
        utilization={name: [float(v) for v in total / rows] for name, total in gate_sums.items()},
        rows=rows,
    )
