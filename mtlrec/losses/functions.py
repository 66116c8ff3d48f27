"""Per-task losses, masked to each task's sample space.

``task_losses`` is the one place that turns model outputs into per-task
scalars; the trainer's loop and a model's ``compute_loss`` both call it.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from keras import ops

from mtlrec.tasks import Task

EPSILON = 1e-7


def _as_tasks(tasks: Iterable) -> list[Task]:
    return [Task.from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]


def _flat(x, dtype="float32"):
    x = ops.cast(ops.convert_to_tensor(x), dtype)
    return ops.reshape(x, (-1,))


def _lookup(mapping: Mapping, key: str, what: str, task: Task):
    if key not in mapping:
        raise ValueError(
            f"task {task.name!r}: {what} {key!r} is missing "
            f"(have: {', '.join(sorted(map(str, mapping)))})"
        )
    return mapping[key]


def masked_mean(values, mask):
    """sum(mask * values) / max(sum(mask), 1): 0 (not NaN) when the mask is empty."""
    count = ops.sum(mask)
    return ops.sum(values * mask) / ops.maximum(count, 1.0)


def binary_crossentropy(labels, probabilities):
    """Row-wise -[y log p + (1 - y) log(1 - p)] with p clipped to [eps, 1 - eps]."""
    p = ops.clip(probabilities, EPSILON, 1.0 - EPSILON)
    return -(labels * ops.log(p) + (1.0 - labels) * ops.log(1.0 - p))


def categorical_crossentropy(labels, probabilities, num_classes: int):
    """Row-wise -log p[y] for integer class labels and softmax probabilities (B, C)."""
    probabilities = ops.cast(probabilities, "float32")
    probabilities = ops.reshape(probabilities, (-1, num_classes))
    classes = ops.cast(ops.reshape(labels, (-1,)), "int32")
    one_hot = ops.one_hot(classes, num_classes, dtype="float32")
    p = ops.clip(probabilities, EPSILON, 1.0)
    return -ops.sum(one_hot * ops.log(p), axis=-1)


def task_loss(task: Task, labels: Mapping, outputs: Mapping):
    """The scalar loss of one task (see ``task_losses``)."""
    if task.parent is not None:
        # ESMM: the joint probability is learned over the entire space.
        y = _flat(_lookup(labels, task.label, "label", task))
        p = _flat(_lookup(outputs, task.joint_name, "joint output", task))
        return ops.mean(binary_crossentropy(y, p))

    y_raw = _lookup(labels, task.label, "label", task)
    out = _lookup(outputs, task.name, "output", task)
    if task.kind == "binary":
        per_row = binary_crossentropy(_flat(y_raw), _flat(out))
    elif task.kind == "multiclass":
        per_row = categorical_crossentropy(y_raw, out, task.num_classes)
    else:
        diff = _flat(out) - _flat(y_raw)
        per_row = diff * diff
    if task.sample_space is None:
        return ops.mean(per_row)
    space = _flat(_lookup(labels, task.sample_space, "sample_space label", task))
    mask = ops.cast(ops.equal(space, 1.0), "float32")
    return masked_mean(per_row, mask)


def task_losses(tasks: Iterable, labels: Mapping, outputs: Mapping) -> dict:
    """Per-task scalar losses.

    - binary: BCE on probabilities; multiclass: cross-entropy on softmax
      probabilities (labels are class ids); regression: MSE on raw values.
    - with ``sample_space``: averaged over rows where ``labels[sample_space] == 1``
      only, sum(mask * l) / max(sum(mask), 1), so a batch without such rows
      gives 0, not NaN (PLE section 4.3).
    - with ``parent`` (ESMM funnel step): BCE(outputs[joint_name], labels[label])
      over all rows; the conditional output ``outputs[name]`` gets no direct loss.

    Args:
        tasks: ``Task`` objects or task dicts.
        labels: label name -> (B,) tensor.
        outputs: output name -> (B,), (B, 1) or (B, C) tensor.

    Returns:
        dict task name -> float32 scalar tensor, in task order.
    """
    return {task.name: task_loss(task, labels, outputs) for task in _as_tasks(tasks)}


__all__ = [
    "binary_crossentropy",
    "categorical_crossentropy",
    "masked_mean",
    "task_loss",
    "task_losses",
]
