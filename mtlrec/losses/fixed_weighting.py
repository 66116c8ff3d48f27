"""Fixed task weights."""

import keras

from mtlrec.losses.loss_weighting import LossWeighting


@keras.saving.register_keras_serializable(package="mtlrec")
class FixedWeighting(LossWeighting):
    """L = sum_k w_k L_k with w_k = ``task.weight``.

    Args:
        tasks: ``Task`` objects or task dicts.
    """
