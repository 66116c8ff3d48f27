"""PCGrad: projecting conflicting gradients (Yu et al., NeurIPS 2020)."""

import numbers

import keras
import tensorflow as tf
from keras import ops

from mtlrec.losses.loss_weighting import LossWeighting, add_gradients, dense_gradient
from mtlrec.losses.objective import weighted_objective


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


def _mean_over_replicas(grads):
    """``grads`` (a list, None entries kept) averaged over the replicas of the
    ``tf.distribute`` step this runs in (all-reduced, so every replica holds the same
    values; an ``IndexedSlices`` comes back with every replica's rows); unchanged outside
    one or with a single replica."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads
    present = [i for i, g in enumerate(grads) if g is not None]
    if not present:
        return grads
    reduced = context.all_reduce(tf.distribute.ReduceOp.MEAN, [grads[i] for i in present])
    out = list(grads)
    for i, g in zip(present, reduced):
        out[i] = g
    return out


@keras.saving.register_keras_serializable(package="mtlrec")
class PCGrad(LossWeighting):
    """Projects conflicting task gradients on the parameters tasks share.

    The task gradients g_k = grad_theta(w_k L_k) (w_k = ``task.weight``) are projected
    with ``project_conflicting``, each task visiting the others in a random order, and
    the update of the shared parameters theta is sum_k g_k^PC. theta is every variable
    of ``shared_vars`` and every variable of ``task_vars`` that two or more task losses
    reach: in a funnel the parent's tower (the CTR tower of ESMM, whose pCTR is a factor
    of pCTCVR), which the joint's loss reaches besides the parent's own, so their conflict
    there is projected too (a task's dot products run over all of theta, with zero where
    its loss does not reach). A task variable that one task's loss reaches gets that
    task's gradient (the gradient of sum_k w_k L_k). Terms that are not task losses
    (auxiliary losses, regularisation) add their gradient unprojected. The objective
    reported is sum_k w_k L_k (+ those terms).

    Under ``tf.distribute`` the task gradients on theta are averaged over the replicas
    before the projection, so every replica projects the gradients of the global batch
    and the result does not depend on the number of replicas (the projection is not
    linear: projecting each replica's gradients and averaging would).

    The visiting orders are a function of ``seed`` and ``step`` (the trainer passes its
    global step): row i of step s is the argsort of stateless uniform numbers seeded by
    (seed, s), so a run resumed from a checkpoint repeats the orders of an uninterrupted
    one, and every replica draws the same. Without ``step`` (a loop of your own) they come
    from the layer's ``SeedGenerator``, fresh at every call.

    Every shared variable takes part in the projection, embedding tables
    included: a table's ``IndexedSlices`` gradients are projected on the rows the
    batch touches (``_touched_rows``), never densified, and its update stays
    ``IndexedSlices`` on those rows. So for ESMM and Single-Task, whose only shared
    parameters are the tables, PCGrad differs from fixed weighting.

    Args:
        tasks: ``Task`` objects or task dicts.
        seed: seed of the visiting orders; None: one drawn from Keras' global seed
            (``keras.utils.set_random_seed``) when the layer is made.
    """

    requires_custom_step = True

    def __init__(self, tasks, seed=None, **kwargs):
        super().__init__(tasks, **kwargs)
        if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
            raise ValueError(f"Expected seed to be an integer or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # SeedGenerator(None) drew its seed from the global one: the orders use the same
        self._order_seed = int(seed) if seed is not None else int(ops.convert_to_numpy(self.seed_generator.state)[0])

    def random_orders(self, step=None):
        """(K, K) int32: row i is a random permutation of range(K); with ``step``, a function
        of (seed, step) alone, else a fresh draw of the layer's ``SeedGenerator``."""
        k = self.num_tasks
        if step is None:
            rows = [
                keras.random.shuffle(ops.arange(k, dtype="int32"), seed=self.seed_generator)
                for _ in range(k)
            ]
            return ops.stack(rows)
        seed = tf.stack([tf.constant(self._order_seed, tf.int64), tf.cast(step, tf.int64)])
        noise = tf.random.stateless_uniform((k, k), seed=seed)
        return tf.argsort(noise, axis=1, stable=True, direction="ASCENDING")

    def gradients(self, tape, task_losses, shared_vars, task_vars, balance_vars=None, step=None):
        self._require_persistent(tape, "PCGrad")
        losses, extras = self._split(task_losses)
        weights = ops.stop_gradient(self.task_weights_tensor())
        shared_vars, task_vars = list(shared_vars), list(task_vars)
        variables = shared_vars + task_vars
        raw = [
            list(tape.gradient(loss, variables, output_gradients=weights[k]))
            for k, loss in enumerate(losses)
        ] if variables else []
        reached = [sum(g[v] is not None for g in raw) for v in range(len(variables))]
        theta = [v for v in range(len(variables)) if v < len(shared_vars) or reached[v] > 1]
        own = [v for v in range(len(shared_vars), len(variables)) if reached[v] <= 1]

        grads = [None] * len(variables)
        if theta:
            per_variable = _mean_over_replicas([g[v] for g in raw for v in theta])
            n = len(theta)
            blocks, rows = [], []
            for i, v in enumerate(theta):
                block, touched = _touched_rows(per_variable[i::n], variables[v])
                blocks.append(block)
                rows.append(touched)
            per_task = [[b[k] for b in blocks] for k in range(len(losses))]
            projected = project_conflicting(per_task, self.random_orders(step))
            extra_grads = [None] * n
            if extras:
                extra_grads = self._weighted_gradients(tape, [], extras, weights, [variables[v] for v in theta])
            for i, v in enumerate(theta):
                summed = sum(p[i] for p in projected)
                if rows[i] is not None:
                    shape = tf.constant(list(variables[v].shape), dtype=rows[i].dtype)
                    summed = tf.IndexedSlices(summed, rows[i], shape)
                grads[v] = add_gradients(summed, extra_grads[i])
        if own:
            own_grads = self._weighted_gradients(tape, losses, extras, weights, [variables[v] for v in own])
            for v, g in zip(own, own_grads):
                grads[v] = g
        total = weighted_objective(weights, ops.stop_gradient(ops.stack(losses)), extras)
        return grads, total

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config
