"""PCGrad: projecting conflicting gradients (Yu et al., NeurIPS 2020)."""

import numbers

import keras
from keras import ops

from mtlrec.losses.loss_weighting import LossWeighting, add_gradients, dense_gradient


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


@keras.saving.register_keras_serializable(package="mtlrec")
class PCGrad(LossWeighting):
    """Projects conflicting task gradients on the shared parameters.

    The task gradients g_k = grad_shared(w_k L_k) (w_k = ``task.weight``) are
    projected with ``project_conflicting``, each task visiting the others in a
    fresh random order every step, and the shared update is sum_k g_k^PC.
    Task-specific variables get their own task's gradient (the gradient of
    sum_k w_k L_k, since no other task's loss depends on them). The objective
    reported is sum_k w_k L_k.

    Shared variables are densified for the projection (an embedding table's
    ``IndexedSlices`` gradient becomes a full tensor per task), so list the
    big shared tables in ``task_vars`` if their PCGrad treatment is not wanted.

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

    def gradients(self, tape, task_losses, shared_vars, task_vars):
        self._require_persistent(tape, "PCGrad")
        losses, extras = self._split(task_losses)
        weights = ops.stop_gradient(self.task_weights_tensor())
        shared_vars, task_vars = list(shared_vars), list(task_vars)

        shared_grads = []
        if shared_vars:
            per_task = []
            for k, loss in enumerate(losses):
                g = tape.gradient(loss, shared_vars, output_gradients=weights[k])
                per_task.append([dense_gradient(gi, v) for gi, v in zip(g, shared_vars)])
            projected = project_conflicting(per_task, self.random_orders())
            shared_grads = [sum(p[v] for p in projected) for v in range(len(shared_vars))]
            if extras:
                extra_grads = self._weighted_gradients(tape, [], extras, weights, shared_vars)
                shared_grads = [add_gradients(a, b) for a, b in zip(shared_grads, extra_grads)]
        own_grads = self._weighted_gradients(tape, losses, extras, weights, task_vars)

        total = ops.sum(weights * ops.stop_gradient(ops.stack(losses)))
        for extra in extras:
            total = total + extra
        return shared_grads + own_grads, total

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config
