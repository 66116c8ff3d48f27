"""MetaBalance (He, Feng, Lv, Zhou, Xiao, Shen, Gao & Chen, WWW 2022)."""

import numbers

import keras
from keras import ops

from mtlrec.losses.loss_weighting import (
    LossWeighting,
    add_gradients,
    scale_gradient,
    squared_norm,
)


def _fraction(name, value, low_open):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and (0 < value <= 1 if low_open else 0 <= value < 1)
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1)"
        raise ValueError(f"Expected {name} to be a number in {interval}. Received: {name}={value!r}")
    return float(value)


@keras.saving.register_keras_serializable(package="mtlrec")
class MetaBalance(LossWeighting):
    """Scales the auxiliary tasks' gradients of the shared parameters to the target
    task's gradient magnitude.

    For every shared variable theta, with g_k = grad_theta(w_k L_k) (w_k = `task.weight`)
    and t the target task, MetaBalance (Algorithm 1 of the paper) keeps moving averages
    of the gradient norms and relaxes the auxiliary gradients towards the target's:

        m_k     <- beta m_k + (1 - beta) ||g_k||                       (every task k)
        g_k     <- g_k (r m_t / m_k + (1 - r))                         (k != t)
        update  =  g_t + sum_{k != t} g_k

    r = `relax_factor` (1: the auxiliary norms match the target's; 0: plain sum). Task-
    specific variables get their own task's gradient. The reported objective is
    sum_k w_k L_k. An embedding table's `IndexedSlices` gradient stays sparse.

    Args:
        tasks: `Task` objects or task dicts.
        target: the name of the target task.
        relax_factor: r in (0, 1] (the paper tunes it; 0.7 is this default).
        beta: the moving averages' decay in [0, 1).
    """

    requires_custom_step = True

    def __init__(self, tasks, target=None, relax_factor=0.7, beta=0.9, **kwargs):
        super().__init__(tasks, **kwargs)
        if target not in self.task_names:
            raise ValueError(
                f"Expected target to be one of the task names {self.task_names}. "
                f"Received: target={target!r}"
            )
        self.target = target
        self.relax_factor = _fraction("relax_factor", relax_factor, low_open=True)
        self.beta = _fraction("beta", beta, low_open=False)
        self.norms = None

    def prepare(self, shared_vars):
        """One moving-average norm per (task, shared variable), updated by this step
        only (averaged over replicas under tf.distribute)."""
        if self.norms is None:
            self.norms = self.add_weight(
                shape=(self.num_tasks, max(len(list(shared_vars)), 1)),
                initializer="zeros",
                trainable=False,
                aggregation="mean",
                name="norm_averages",
            )

    def gradients(self, tape, task_losses, shared_vars, task_vars, balance_vars=None, step=None):
        self._require_persistent(tape, "MetaBalance")
        losses, extras = self._split(task_losses)
        weights = ops.stop_gradient(self.task_weights_tensor())
        shared_vars, task_vars = list(shared_vars), list(task_vars)
        self.prepare(shared_vars)
        target = self.task_names.index(self.target)

        shared_grads = []
        if shared_vars:
            per_task = [
                tape.gradient(loss, shared_vars, output_gradients=weights[k])
                for k, loss in enumerate(losses)
            ]
            norms = ops.stack(
                [ops.stack([ops.sqrt(squared_norm(g)) for g in grads]) for grads in per_task]
            )  # (K, V)
            averages = self.beta * ops.convert_to_tensor(self.norms) + (1 - self.beta) * norms
            self.norms.assign(averages)
            ratio = averages[target] / ops.maximum(averages, 1e-12)
            scales = self.relax_factor * ratio + (1 - self.relax_factor)  # (K, V)
            for v in range(len(shared_vars)):
                summed = per_task[target][v]
                for k in range(self.num_tasks):
                    if k != target:
                        summed = add_gradients(summed, scale_gradient(per_task[k][v], scales[k, v]))
                shared_grads.append(summed)
        return self._finish(tape, losses, extras, weights, shared_vars, shared_grads, task_vars)

    def get_config(self):
        config = super().get_config()
        config.update(target=self.target, relax_factor=self.relax_factor, beta=self.beta)
        return config
