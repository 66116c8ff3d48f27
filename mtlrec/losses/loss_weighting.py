"""Base class of the loss-weighting strategies."""

from __future__ import annotations

from typing import Iterable, Mapping

import keras
import tensorflow as tf
from keras import ops

from mtlrec.losses.objective import weighted_objective
from mtlrec.tasks import Task


def dense_gradient(grad, variable):
    """A dense tensor for a gradient that may be None or ``tf.IndexedSlices``."""
    if grad is None:
        return ops.zeros(variable.shape, dtype="float32")
    if isinstance(grad, tf.IndexedSlices):
        grad = tf.convert_to_tensor(grad)
    return ops.cast(grad, "float32")


def squared_norm(grad):
    """||grad||^2; an embedding's ``IndexedSlices`` stays sparse (rows summed per index)."""
    if grad is None:
        return ops.zeros((), dtype="float32")
    if isinstance(grad, tf.IndexedSlices):
        unique, position = tf.unique(grad.indices)
        rows = tf.math.unsorted_segment_sum(grad.values, position, tf.shape(unique)[0])
        return ops.sum(ops.square(ops.cast(rows, "float32")))
    return ops.sum(ops.square(ops.cast(grad, "float32")))


def scale_gradient(grad, scale):
    """grad * scale, keeping an ``IndexedSlices`` sparse (None stays None)."""
    if grad is None:
        return None
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(grad.values * ops.cast(scale, grad.values.dtype), grad.indices, grad.dense_shape)
    return grad * ops.cast(scale, grad.dtype)


def add_gradients(a, b):
    """a + b where either may be None (None + None stays None)."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(
            tf.concat([a.values, b.values], 0),
            tf.concat([a.indices, b.indices], 0),
            a.dense_shape,
        )
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)


@keras.saving.register_keras_serializable(package="mtlrec")
class LossWeighting(keras.layers.Layer):
    """Combines per-task losses into one objective and its gradients.

    A Keras layer so that a model holding it as an attribute tracks, trains and
    saves its variables (the log-variances of ``UncertaintyWeighting``).

    Subclasses implement ``task_weights_tensor()`` (the (K,) multipliers of the
    task losses) and, when the objective has more terms, ``combine``.

    Entries of ``task_losses`` whose key is not a task name (e.g. a
    regularisation term) are added to the total with weight 1.

    Args:
        tasks: ``Task`` objects or task dicts, in output order.
    """

    #: True when ``combine`` alone cannot train with it (GradNorm, PCGrad):
    #: use ``gradients`` in a custom training step.
    requires_custom_step = False

    def __init__(self, tasks: Iterable, **kwargs):
        super().__init__(**kwargs)
        parsed = [Task.from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
        if not parsed:
            raise ValueError(f"Expected at least one task. Received: tasks={tasks!r}")
        self._task_specs = tuple(parsed)
        self.built = True

    @property
    def tasks(self) -> list[Task]:
        return list(self._task_specs)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self._task_specs]

    @property
    def num_tasks(self) -> int:
        return len(self._task_specs)

    def _split(self, task_losses: Mapping):
        """(list of K task losses in task order, list of extra terms)."""
        missing = [n for n in self.task_names if n not in task_losses]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: no loss for task(s) {missing} "
                f"(got: {sorted(task_losses)})"
            )
        losses = [ops.cast(task_losses[n], "float32") for n in self.task_names]
        extras = [
            ops.cast(v, "float32") for k, v in task_losses.items() if k not in self.task_names
        ]
        return losses, extras

    def task_weights_tensor(self):
        """The (K,) current multipliers of the task losses."""
        return ops.convert_to_tensor(
            [float(t.weight) for t in self._task_specs], dtype="float32"
        )

    def task_weights(self) -> dict:
        """Current effective weight of each task, as Python floats (for logs)."""
        values = ops.convert_to_numpy(self.task_weights_tensor())
        return {n: float(v) for n, v in zip(self.task_names, values)}

    def combine(self, task_losses: Mapping):
        """Total loss sum_k w_k L_k (+ extra terms)."""
        losses, extras = self._split(task_losses)
        return weighted_objective(self.task_weights_tensor(), losses, extras)

    def call(self, task_losses):
        return self.combine(task_losses)

    def prepare(self, shared_vars):
        """Create any state that depends on the shared variables (MetaBalance keeps one
        moving average per task and shared variable). The trainer calls it once, before
        its checkpoint is made; the base strategies need nothing."""

    def gradients(self, tape, task_losses: Mapping, shared_vars, task_vars, balance_vars=None, step=None):
        """Gradients of the weighted objective.

        Args:
            tape: the ``tf.GradientTape`` that recorded the forward pass
                (``persistent=True`` for GradNorm and PCGrad).
            task_losses: dict task name -> scalar, computed under ``tape``.
            shared_vars: variables shared by the tasks (backbone, embeddings).
            task_vars: task-specific variables (towers); include this
                strategy's ``trainable_variables`` here (or in ``shared_vars``)
                to get their gradients too.
            balance_vars: the variables of the last shared layer
                (``model.variable_groups().balance_layer``): GradNorm's W; the other
                strategies ignore it.
            step: the number of steps trained before this one (the trainer's global step,
                a scalar tensor or variable): PCGrad draws its visiting orders from its seed
                and this step, so a resumed run repeats them; the other strategies ignore it.

        Returns:
            (list of gradients aligned with ``shared_vars + task_vars``, with
            None for a variable no loss depends on; total loss scalar).
        """
        losses, extras = self._split(task_losses)
        weights = ops.stop_gradient(self.task_weights_tensor())
        variables = list(shared_vars) + list(task_vars)
        grads = self._weighted_gradients(tape, losses, extras, weights, variables)
        return grads, weighted_objective(weights, losses, extras)

    @staticmethod
    def _weighted_gradients(tape, losses, extras, weights, variables):
        """d(sum_k weights[k] L_k + sum extras) / d variables, in one backward pass."""
        if not variables:
            return []
        targets = list(losses) + list(extras)
        output_grads = [weights[k] for k in range(len(losses))]
        output_grads += [ops.ones((), dtype="float32") for _ in extras]
        return list(tape.gradient(targets, variables, output_gradients=output_grads))

    def _finish(self, tape, losses, extras, weights, shared_vars, shared_grads, task_vars):
        """(gradients, total) of a strategy that made `shared_grads` from the per-task
        gradients (PCGrad, MetaBalance): the extra terms' gradients (weight 1) are added to
        the shared ones, the task variables get the plain weighted gradients, and the total
        is sum_k w_k L_k + extras."""
        if shared_vars and extras:
            extra_grads = self._weighted_gradients(tape, [], extras, weights, shared_vars)
            shared_grads = [add_gradients(a, b) for a, b in zip(shared_grads, extra_grads)]
        own_grads = self._weighted_gradients(tape, losses, extras, weights, task_vars)
        total = weighted_objective(weights, ops.stop_gradient(ops.stack(losses)), extras)
        return list(shared_grads) + own_grads, total

    @staticmethod
    def _require_persistent(tape, name):
        if not getattr(tape, "_persistent", True):
            raise ValueError(
                f"{name} takes one gradient per task: record the step with "
                f"tf.GradientTape(persistent=True)."
            )

    def get_config(self):
        config = super().get_config()
        config["tasks"] = [t.to_dict() for t in self._task_specs]
        return config
