"""Per-task losses, masked to each task's sample space.

``task_losses`` is the one place that turns model outputs into per-task
scalars; the trainer's loop and a model's ``compute_loss`` both call it.
Classification losses read the logits a model outputs beside its probabilities
(``<name>_logit``, see ``mtlrec.tasks.logit_name``) and use the numerically stable
from-logits forms, so extreme logits keep finite losses and non-zero gradients.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from keras import ops

from mtlrec.row_weights import loss_weights
from mtlrec.tasks import Task, funnel_chain, logit_name, require


def _as_tasks(tasks: Iterable) -> list[Task]:
    return [Task.from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]


def _flat(x, dtype="float32"):
    x = ops.cast(ops.convert_to_tensor(x), dtype)
    return ops.reshape(x, (-1,))


def _lookup(mapping: Mapping, key: str, what: str, task: Task):
    return require(mapping, key, what, task.name)


def masked_mean(values, mask):
    """sum(mask * values) / max(sum(mask), 1): 0 (not NaN) when the mask is empty."""
    count = ops.sum(mask)
    return ops.sum(values * mask) / ops.maximum(count, 1.0)


def weighted_mean(values, weights, total):
    """sum(weights * values) / total, 0 (not NaN) where ``total`` is 0 (every weight 0)."""
    return ops.sum(weights * values) / ops.where(ops.greater(total, 0.0), total, 1.0)


def _reduce(per_row, weights):
    """A whole-batch loss: the mean, or the weighted mean sum(w l) / sum(w)."""
    if weights is None:
        return ops.mean(per_row)
    return weighted_mean(per_row, weights, ops.sum(weights))


def binary_crossentropy_from_logits(labels, logits):
    """Row-wise -[y log sigmoid(z) + (1 - y) log sigmoid(-z)], p = sigmoid(z), computed
    without forming p (no clipping: the gradient sigmoid(z) - y survives any z)."""
    return -(labels * ops.log_sigmoid(logits) + (1.0 - labels) * ops.log_sigmoid(-logits))


def categorical_crossentropy_from_logits(labels, logits, num_classes: int):
    """Row-wise -log softmax(z)[y] for integer class labels and logits (B, C)."""
    logits = ops.reshape(ops.cast(logits, "float32"), (-1, num_classes))
    classes = ops.cast(ops.reshape(labels, (-1,)), "int32")
    one_hot = ops.one_hot(classes, num_classes, dtype="float32")
    return -ops.sum(one_hot * ops.log_softmax(logits, axis=-1), axis=-1)


def joint_label(task: Task, tasks: Iterable, labels: Mapping):
    """The (B,) label of a funnel step's joint output: the AND (product) of the 0/1 labels
    along its chain, e.g. click AND conversion for ESMM's CTCVR. A row with conversion 1
    and click 0 (data a funnel check would refuse) is a negative of the joint."""
    tasks = _as_tasks(tasks)
    try:
        chain = funnel_chain(task, tasks)
    except KeyError as err:
        raise ValueError(
            f"task {task.name!r}: its funnel's parent task {err.args[0]!r} is missing "
            f"(tasks: {', '.join(t.name for t in tasks)})"
        ) from None
    y = _flat(_lookup(labels, chain[0].label, "label", task))
    for step in chain[1:]:
        y = y * _flat(_lookup(labels, step.label, "label", task))
    return y


def task_loss(task: Task, labels: Mapping, outputs: Mapping, tasks: Iterable | None = None, *, weights=None):
    """The scalar loss of one task (see ``task_losses``); ``tasks`` (all the model's tasks)
    is required for a funnel step, whose joint label ANDs its parents' labels; ``weights``:
    its rows' (B,) weights (``mtlrec.row_weights.loss_weights``), None for 1 each."""
    if task.parent is not None:
        # ESMM: the joint probability is learned over the entire space, from the joint's
        # logit (built from log-sigmoids by the model, not from a product of probabilities).
        if tasks is None:
            raise ValueError(
                f"task {task.name!r}: a funnel step (parent {task.parent!r}) needs tasks= "
                f"to find its parents' labels (its joint label is their AND)"
            )
        y = joint_label(task, tasks, labels)
        z = _flat(_lookup(outputs, logit_name(task.joint_name), "joint logit output", task))
        return _reduce(binary_crossentropy_from_logits(y, z), weights)

    y_raw = _lookup(labels, task.label, "label", task)
    if task.kind == "binary":
        z = _lookup(outputs, logit_name(task.name), "logit output", task)
        per_row = binary_crossentropy_from_logits(_flat(y_raw), _flat(z))
    elif task.kind == "multiclass":
        z = _lookup(outputs, logit_name(task.name), "logit output", task)
        per_row = categorical_crossentropy_from_logits(y_raw, z, task.num_classes)
    else:
        out = _lookup(outputs, task.name, "output", task)
        diff = _flat(out) - _flat(y_raw)
        per_row = diff * diff
    if task.sample_space is None:
        return _reduce(per_row, weights)
    space = _flat(_lookup(labels, task.sample_space, "sample_space label", task))
    mask = ops.cast(ops.equal(space, 1.0), "float32")
    if weights is not None:
        total = ops.sum(weights) if task.loss_normalization == "batch" else ops.sum(weights * mask)
        return weighted_mean(per_row, weights * mask, total)
    if task.loss_normalization == "batch":
        return ops.mean(per_row * mask)
    return masked_mean(per_row, mask)


def task_losses(tasks: Iterable, labels: Mapping, outputs: Mapping) -> dict:
    """Per-task scalar losses.

    - binary: BCE from the logits ``outputs[name + "_logit"]``; multiclass:
      cross-entropy from the logits ``(B, C)`` (labels are class ids); regression:
      MSE on the raw values ``outputs[name]``.
    - with ``sample_space``: only rows where ``labels[sample_space] == 1`` count,
      sum(mask * l) / B (``loss_normalization: batch``, the default: Keras'
      sample-weight convention) or sum(mask * l) / max(sum(mask), 1)
      (``sample_space``: a mean over the space, PLE section 4.3); a batch without
      such rows gives 0, not NaN.
    - with row weights w (a ``sample_weight`` column, negative downsampling: see
      ``mtlrec.row_weights``): sum(w l) / sum(w) over the batch, sum(mask w l) /
      sum(w) (``batch``) or sum(mask w l) / sum(mask w) (``sample_space``); the
      same as above when every w is 1, and 0 when the weights sum to 0.
    - with ``parent`` (ESMM funnel step): BCE from the joint's logit
      ``outputs[joint_name + "_logit"]`` over all rows against the joint label
      y = prod of the labels along the chain (click AND conversion for CTCVR, see
      ``joint_label``), i.e. -[y log p + (1 - y) log(1 - p)] with log p = sum of
      log sigmoid(z) along the chain; the conditional output ``outputs[name]`` gets no
      direct loss.

    Args:
        tasks: ``Task`` objects or task dicts.
        labels: label name -> (B,) tensor.
        outputs: output name -> (B,), (B, 1) or (B, C) tensor (a model's outputs
            dict: the ``_logit`` entries for classification, the values for regression).

    Returns:
        dict task name -> float32 scalar tensor, in task order.
    """
    tasks = _as_tasks(tasks)
    return {
        task.name: task_loss(task, labels, outputs, tasks, weights=loss_weights(task, tasks, labels, _flat))
        for task in tasks
    }


__all__ = [
    "binary_crossentropy_from_logits",
    "categorical_crossentropy_from_logits",
    "joint_label",
    "masked_mean",
    "task_loss",
    "task_losses",
    "weighted_mean",
]
