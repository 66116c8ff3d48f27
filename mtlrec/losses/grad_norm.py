"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018)."""

import numbers

import keras
from keras import ops

from mtlrec.losses.loss_weighting import LossWeighting, squared_norm
from mtlrec.losses.objective import weighted_objective

_OPTIMIZERS = ("adam", "sgd")


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@keras.saving.register_keras_serializable(package="mtlrec")
class GradNorm(LossWeighting):
    """Task weights w_k that balance the tasks' training rates.

    With W the last shared layer's weights, G_k = ||grad_W (w_k L_k)||,
    G_mean = mean_k G_k, L~_k = L_k / L_k(0) and r_k = L~_k / mean_j L~_j,
    the weights minimise

        L_grad = sum_k | G_k - G_mean * r_k^alpha |

    with the target G_mean * r_k^alpha held constant. Each ``gradients`` call
    returns the gradients of sum_k w_k L_k for the model, then moves w by one
    step of its own optimiser on dL_grad/dw_k = sign(G_k - target_k) *
    ||grad_W L_k|| and renormalises so that sum_k w_k = K. A task whose loss
    falls more slowly (larger r_k) gets a larger weight.

    W is ``balance_vars``, the whole last shared layer as the model names it
    (``variable_groups().balance_layer``: every expert's output layer for MMoE/PLE,
    the bottom's last layer for Shared-Bottom); without it, all of ``shared_vars``.
    L_k(0) is the loss of the first step (with rows in the task's sample space). The initial weights are
    ``task.weight`` rescaled to sum to K.

    Args:
        tasks: ``Task`` objects or task dicts.
        alpha: restoring-force strength (the paper uses 0.12 to 3.0).
        learning_rate: step size of the weight update.
        optimizer: ``"adam"`` (scale-free steps, default) or ``"sgd"``.
    """

    requires_custom_step = True

    def __init__(self, tasks, alpha=1.5, learning_rate=0.025, optimizer="adam", **kwargs):
        super().__init__(tasks, **kwargs)
        if not _is_number(alpha) or alpha < 0:
            raise ValueError(
                f"Expected alpha to be a non-negative number. Received: alpha={alpha!r}"
            )
        if not _is_number(learning_rate) or learning_rate <= 0:
            raise ValueError(
                "Expected learning_rate to be a positive number. "
                f"Received: learning_rate={learning_rate!r}"
            )
        if optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"Expected optimizer to be one of {_OPTIMIZERS}. Received: optimizer={optimizer!r}"
            )
        self.alpha = float(alpha)
        self.learning_rate = float(learning_rate)
        self.optimizer = optimizer
        k = self.num_tasks
        raw = [float(t.weight) for t in self.tasks]
        total = sum(raw)
        initial = [k * w / total for w in raw] if total > 0 else [1.0] * k

        def state(name, init, shape=(k,)):
            # Updated by this layer's own step, never by the model's optimizer;
            # under tf.distribute the replicas' updates are averaged.
            return self.add_weight(
                shape=shape,
                initializer=keras.initializers.Constant(init),
                trainable=False,
                aggregation="mean",
                name=name,
            )

        self.weights_var = state("task_weights", initial)
        self.initial_losses = state("initial_losses", 0.0)
        self.first_moment = state("first_moment", 0.0)
        self.second_moment = state("second_moment", 0.0)
        self.steps = state("steps", 0.0, shape=())

    def task_weights_tensor(self):
        return ops.convert_to_tensor(self.weights_var)

    def gradients(self, tape, task_losses, shared_vars, task_vars, balance_vars=None, step=None):
        self._require_persistent(tape, "GradNorm")
        losses, extras = self._split(task_losses)
        k = self.num_tasks
        weights = ops.stop_gradient(self.task_weights_tensor())
        stacked = ops.stop_gradient(ops.stack(losses))
        variables = list(shared_vars) + list(task_vars)
        grads = self._weighted_gradients(tape, losses, extras, weights, variables)

        balance = list(shared_vars if balance_vars is None else balance_vars)
        norms = []
        for loss in losses:
            if not balance:
                norms.append(ops.zeros((), dtype="float32"))
                continue
            g = tape.gradient(loss, balance)
            norms.append(ops.sqrt(sum(squared_norm(gi) for gi in g)))
        norms = ops.stop_gradient(ops.stack(norms))  # ||grad_W L_k||
        g_norms = weights * norms  # G_k

        # L_k(0) is taken at the first step where L_k > 0 (a batch may hold
        # no row of a task's sample space); until then r_k uses ratio 1.
        recorded = ops.convert_to_tensor(self.initial_losses)
        initial = ops.where(recorded > 0, recorded, stacked)
        ratio = ops.where(initial > 0, stacked / ops.maximum(initial, 1e-12), 1.0)
        rate = ratio / ops.maximum(ops.mean(ratio), 1e-12)
        target = ops.mean(g_norms) * ops.power(rate, self.alpha)
        w_grad = ops.sign(g_norms - target) * norms

        step = ops.convert_to_tensor(self.steps) + 1.0
        if self.optimizer == "adam":
            b1, b2, eps = 0.9, 0.999, 1e-7
            m = b1 * ops.convert_to_tensor(self.first_moment) + (1 - b1) * w_grad
            v = b2 * ops.convert_to_tensor(self.second_moment) + (1 - b2) * ops.square(w_grad)
            m_hat = m / (1.0 - ops.power(b1, step))
            v_hat = v / (1.0 - ops.power(b2, step))
            new_w = weights - self.learning_rate * m_hat / (ops.sqrt(v_hat) + eps)
            self.first_moment.assign(m)
            self.second_moment.assign(v)
        else:
            new_w = weights - self.learning_rate * w_grad
        new_w = ops.maximum(new_w, 1e-4)
        new_w = new_w * (k / ops.sum(new_w))
        self.weights_var.assign(new_w)
        self.initial_losses.assign(initial)
        self.steps.assign(step)

        return grads, weighted_objective(weights, stacked, extras)

    def get_config(self):
        config = super().get_config()
        config.update(
            alpha=self.alpha, learning_rate=self.learning_rate, optimizer=self.optimizer
        )
        return config
