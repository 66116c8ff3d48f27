"""The multi-task objective: its terms and their weighted sum, written once for a model's
`compute_loss` (through `LossWeighting.combine`) and the trainer's step (through
`LossWeighting.gradients`)."""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from mtlrec.losses.functions import task_losses

#: The objective term of the model's `losses` (layer regularisers, gate penalties).
REGULARIZATION = "regularization"


def objective_terms(model, labels, outputs) -> dict:
    """name -> scalar: each task's loss under its name (`task_losses`), the model's
    `auxiliary_losses`, and the sum of `model.losses` under `"regularization"` when there
    are any. A weighting weighs the task losses and adds the other terms with weight 1."""
    terms = {
        **task_losses(model.task_specs, labels, outputs),
        **model.auxiliary_losses(labels, outputs),
    }
    regularization = model.losses
    if regularization:
        # tf.add_n: keras.ops has no n-ary sum; the trainer's objective has always used it
        terms[REGULARIZATION] = tf.add_n([tf.cast(r, "float32") for r in regularization])
    return terms


def weighted_objective(weights, losses, extras=(), offsets=None):
    """sum_k (w_k L_k + offsets_k) + sum of `extras`.

    Args:
        weights: (K,) task weights.
        losses: the K task losses, a (K,) tensor or a list of scalars.
        extras: scalars added with weight 1 (auxiliary losses, regularisation).
        offsets: optional (K,) terms beside the weighted losses (the 0.5 s_k of
            uncertainty weighting).
    """
    stacked = ops.stack(losses) if isinstance(losses, (list, tuple)) else losses
    terms = weights * stacked
    if offsets is not None:
        terms = terms + offsets
    total = ops.sum(terms)
    for extra in extras:
        total = total + extra
    return total
