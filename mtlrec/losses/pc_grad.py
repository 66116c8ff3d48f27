"""PCGrad: projecting conflicting gradients (Yu et al., NeurIPS 2020)."""

import numbers

import keras
import tensorflow as tf
from keras import ops

from mtlrec.losses.loss_weighting import LossWeighting, dense_gradient


def project_conflicting(task_grads, orders):
    """Gradient surgery on per-task gradients.

    For each task i, walking the other tasks j in ``orders[i]``:
    if g_i . g_j < 0 then g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j, where g_j
    is always task j's *original* gradient and g_i the partly projected one.

    Args:
        task_grads: K lists (one per task) of dense tensors, one per variable;
            the dot products run over all variables together.
        orders: (K, K) int tensor, row i a permutation of range(K) (i itself
            is skipped).

    Returns:
        K lists of projected tensors, same structure as ``task_grads``.
    """
    k = len(task_grads)
    n_vars = len(task_grads[0]) if k else 0
    originals = [ops.stack([task_grads[t][v] for t in range(k)]) for v in range(n_vars)]
    sq_norms = sum(
        ops.sum(ops.reshape(ops.square(o), (k, -1)), axis=1) for o in originals
    )  # (K,)
    orders = ops.convert_to_tensor(orders, dtype="int32")
    projected = []
    for i in range(k):
        g_i = list(task_grads[i])
        for p in range(k):
            j = orders[i, p]
            g_j = [ops.take(o, j, axis=0) for o in originals]
            dot = sum(ops.sum(a * b) for a, b in zip(g_i, g_j))
            norm_j = ops.take(sq_norms, j)
            conflict = ops.logical_and(ops.not_equal(j, i), ops.less(dot, 0.0))
            coef = ops.where(conflict, dot / ops.maximum(norm_j, 1e-30), 0.0)
            g_i = [a - coef * b for a, b in zip(g_i, g_j)]
        projected.append(g_i)
    return projected


def _touched_rows(grads, variable):
    """The task gradients of one variable as tensors the projection can dot.

    When the tasks' gradients are ``IndexedSlices`` (embedding rows), each becomes a
    dense ``(U, ...)`` block over the U rows any task touched (repeated ids summed),
    returned with those row ids; dot products over these blocks equal those over the
    whole table, whose other rows have zero gradient. Otherwise the dense gradients
    and None.
    """
    present = [g for g in grads if g is not None]
    if not present or not all(isinstance(g, tf.IndexedSlices) for g in present):
        return [dense_gradient(g, variable) for g in grads], None
    rows, position = tf.unique(tf.concat([g.indices for g in present], 0))
    count = tf.shape(rows)[0]
    blocks, start = [], 0
    for g in grads:
        if g is None:
            blocks.append(tf.zeros(tf.concat([[count], list(variable.shape[1:])], 0), "float32"))
            continue
        end = start + tf.shape(g.indices)[0]
        values = tf.cast(g.values, "float32")
        blocks.append(tf.math.unsorted_segment_sum(values, position[start:end], count))
        start = end
    return blocks, rows


@keras.saving.register_keras_serializable(package="mtlrec")
class PCGrad(LossWeighting):
    """Projects conflicting task gradients on the shared parameters.

    The task gradients g_k = grad_shared(w_k L_k) (w_k = ``task.weight``) are
    projected with ``project_conflicting``, each task visiting the others in a
    fresh random order every step, and the shared update is sum_k g_k^PC.
    Task-specific variables get their own task's gradient (the gradient of
    sum_k w_k L_k, since no other task's loss depends on them). The objective
    reported is sum_k w_k L_k.

    Every shared variable takes part in the projection, embedding tables
    included: a table's ``IndexedSlices`` gradients are projected on the rows the
    batch touches (``_touched_rows``), never densified, and its update stays
    ``IndexedSlices`` on those rows. So for ESMM and Single-Task, whose only shared
    parameters are the tables, PCGrad differs from fixed weighting.

    Args:
        tasks: ``Task`` objects or task dicts.
        seed: seed of the random visiting orders.
    """

    requires_custom_step = True

    def __init__(self, tasks, seed=None, **kwargs):
        super().__init__(tasks, **kwargs)
        if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
            raise ValueError(f"Expected seed to be an integer or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def random_orders(self):
        """(K, K) int32: row i is a random permutation of range(K)."""
        k = self.num_tasks
        rows = [
            keras.random.shuffle(ops.arange(k, dtype="int32"), seed=self.seed_generator)
            for _ in range(k)
        ]
        return ops.stack(rows)

    def gradients(self, tape, task_losses, shared_vars, task_vars, balance_vars=None):
        self._require_persistent(tape, "PCGrad")
        losses, extras = self._split(task_losses)
        weights = ops.stop_gradient(self.task_weights_tensor())
        shared_vars, task_vars = list(shared_vars), list(task_vars)

        shared_grads = []
        if shared_vars:
            raw = [
                tape.gradient(loss, shared_vars, output_gradients=weights[k])
                for k, loss in enumerate(losses)
            ]
            blocks, rows = [], []
            for v, variable in enumerate(shared_vars):
                per_variable, touched = _touched_rows([g[v] for g in raw], variable)
                blocks.append(per_variable)
                rows.append(touched)
            per_task = [[b[k] for b in blocks] for k in range(len(losses))]
            projected = project_conflicting(per_task, self.random_orders())
            shared_grads = []
            for v, variable in enumerate(shared_vars):
                summed = sum(p[v] for p in projected)
                if rows[v] is not None:
                    shape = tf.constant(list(variable.shape), dtype=rows[v].dtype)
                    summed = tf.IndexedSlices(summed, rows[v], shape)
                shared_grads.append(summed)
        return self._finish(tape, losses, extras, weights, shared_vars, shared_grads, task_vars)

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config
