"""Evaluating a model on one day: predictions, per-task metrics, calibration bins, gates."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from mtlrec import metrics
from mtlrec.tasks import Task
from mtlrec.training.progress import row_progress

CALIBRATION_BINS = 10


@dataclasses.dataclass
class EvaluationResult:
    """What ``evaluate_model`` found on a day.

    Attributes:
        metrics: task (or joint output) -> metric -> value (``mtlrec.metrics.evaluate``).
        calibration: output -> ``{"pred": [...], "label": [...], "count": [...]}``,
            mean prediction and mean label in ``CALIBRATION_BINS`` prediction quantiles.
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


def _concat(chunks: dict) -> dict:
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in chunks.items()}


def calibration_bins(labels, preds, bins: int = CALIBRATION_BINS) -> dict:
    """Mean prediction and mean label per prediction-quantile bin (a reliability curve)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    if len(preds) == 0:
        return {"pred": [], "label": [], "count": []}
    order = np.argsort(preds, kind="stable")
    out = {"pred": [], "label": [], "count": []}
    for part in np.array_split(order, min(bins, len(order))):
        out["pred"].append(float(preds[part].mean()))
        out["label"].append(float(labels[part].mean()))
        out["count"].append(int(len(part)))
    return out


def _calibration(tasks: list[Task], labels: dict, predictions: dict) -> dict:
    by_name = {t.name: t for t in tasks}
    out = {}
    for task in tasks:
        if task.kind != "binary" or task.name not in predictions:
            continue
        y = np.asarray(labels[task.label]).reshape(-1)
        condition = task.sample_space or (
            by_name[task.parent].label if task.parent is not None else None
        )
        space = (
            np.asarray(labels[condition]).reshape(-1) == 1
            if condition is not None
            else np.ones(len(y), dtype=bool)
        )
        out[task.name] = calibration_bins(y[space], predictions[task.name][space])
        if task.joint_name and task.joint_name in predictions:
            out[task.joint_name] = calibration_bins(y, predictions[task.joint_name])
    return out


def forward_function(model, gate_model=None):
    """A ``tf.function`` features -> (outputs, gate weights), traced once for any batch size."""
    from mtlrec.training.export import input_signature, probability_outputs

    signature = input_signature(model)

    @tf.function(input_signature=[signature])
    def forward(features):
        outputs = dict(probability_outputs(model, model(features, training=False)))
        gates = dict(gate_model(features, training=False)) if gate_model is not None else {}
        return outputs, gates

    return forward


def evaluate_model(model, tasks, dataset: tf.data.Dataset, extras=(), gate_model=None, total_rows=None):
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

    Returns:
        An ``EvaluationResult``.
    """
    tasks = [Task.from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
    extras = tuple(extras)

    forward = forward_function(model, gate_model)
    signature_names = list(forward.input_signature[0])

    label_chunks, pred_chunks, extra_chunks, gate_chunks = {}, {}, {}, {}
    rows = 0
    bar = row_progress(total_rows, "evaluate")
    for features, labels in dataset:
        outputs, gates = forward({name: features[name] for name in signature_names})
        for name, value in labels.items():
            target = extra_chunks if name in extras else label_chunks
            target.setdefault(name, []).append(_numpy(value))
        for name, value in outputs.items():
            pred_chunks.setdefault(name, []).append(_numpy(value))
        for name, value in gates.items():
            gate_chunks.setdefault(name, []).append(np.asarray(value))
        batch = int(tf.shape(next(iter(labels.values())))[0])
        rows += batch
        bar.update(batch)
    bar.close()
    if rows == 0:
        raise ValueError("evaluation data is empty")
    labels, predictions = _concat(label_chunks), _concat(pred_chunks)
    extra_values = _concat(extra_chunks)
    for name in extras:  # an extra that is also a label (or a feature) stays a label too
        if any(t.label == name or t.sample_space == name for t in tasks):
            labels.setdefault(name, extra_values[name])
    result = metrics.evaluate(tasks, labels, predictions, extra_values)
    utilization = {}
    if gate_chunks:
        utilization = metrics.expert_utilization(
            {k: np.concatenate(v) for k, v in gate_chunks.items()}
        )
    return EvaluationResult(
        metrics=result,
        calibration=_calibration(tasks, labels, predictions),
        utilization=utilization,
        rows=rows,
    )
