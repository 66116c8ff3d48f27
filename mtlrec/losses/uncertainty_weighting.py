"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

import numbers

import keras
from keras import ops

from mtlrec.losses.loss_weighting import LossWeighting
from mtlrec.losses.objective import weighted_objective


@keras.saving.register_keras_serializable(package="mtlrec")
class UncertaintyWeighting(LossWeighting):
    """Learned task weights from log-variances s_k = log sigma_k^2.

    L = sum_k c_k exp(-s_k) L_k + 0.5 s_k, with c_k = 0.5 for a regression
    task (Gaussian likelihood, 1/(2 sigma^2) L + log sigma) and c_k = 1 for a
    classification task (1/sigma^2 L + log sigma). At the optimum
    exp(-s_k) = 1 / (2 c_k L_k): a noisier task gets a lower weight.

    ``s`` is trainable and must be optimised together with the model: a model
    holding this layer as an attribute does so under ``fit``; a custom loop
    passes ``trainable_variables`` in ``task_vars`` of ``gradients``.
    ``task.weight`` is not used.

    Args:
        tasks: ``Task`` objects or task dicts.
        init_log_var: initial s_k for every task.
    """

    def __init__(self, tasks, init_log_var=0.0, **kwargs):
        super().__init__(tasks, **kwargs)
        if not isinstance(init_log_var, numbers.Real) or isinstance(init_log_var, bool):
            raise ValueError(
                f"Expected init_log_var to be a number. Received: init_log_var={init_log_var!r}"
            )
        self.init_log_var = float(init_log_var)
        self.log_vars = self.add_weight(
            shape=(self.num_tasks,),
            initializer=keras.initializers.Constant(self.init_log_var),
            trainable=True,
            name="log_vars",
        )
        self._scales = [0.5 if t.kind == "regression" else 1.0 for t in self.tasks]

    def task_weights_tensor(self):
        """c_k exp(-s_k)."""
        scales = ops.convert_to_tensor(self._scales, dtype="float32")
        return scales * ops.exp(-ops.convert_to_tensor(self.log_vars))

    def combine(self, task_losses):
        losses, extras = self._split(task_losses)
        s = ops.convert_to_tensor(self.log_vars)
        return weighted_objective(self.task_weights_tensor(), losses, extras, offsets=0.5 * s)

    def gradients(self, tape, task_losses, shared_vars, task_vars, balance_vars=None, step=None):
        # The tape need not have recorded s: its gradient is analytic,
        # dL/ds_k = -c_k exp(-s_k) L_k + 1/2.
        losses, extras = self._split(task_losses)
        stacked = ops.stop_gradient(ops.stack(losses))
        weights = ops.stop_gradient(self.task_weights_tensor())
        variables = list(shared_vars) + list(task_vars)
        own = [self._is_own(v) for v in variables]
        others = [v for v, mine in zip(variables, own) if not mine]
        other_grads = iter(self._weighted_gradients(tape, losses, extras, weights, others))
        s_grad = -weights * stacked + 0.5
        grads = [s_grad if mine else next(other_grads) for mine in own]
        s = ops.stop_gradient(ops.convert_to_tensor(self.log_vars))
        return grads, weighted_objective(weights, stacked, extras, offsets=0.5 * s)

    def _is_own(self, variable):
        return variable is self.log_vars or variable is getattr(self.log_vars, "value", None)

    def get_config(self):
        config = super().get_config()
        config["init_log_var"] = self.init_log_var
        return config
