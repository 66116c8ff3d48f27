"""Private helper layer: a funnel step's joint probability and logit from the logits
along its parent chain (ESMM's pCTCVR = pCTR x pCVR, in log space)."""

import keras
import numpy as np
from keras import ops

# log p is kept below -TINY so that log(1 - p) stays finite when every logit is huge.
_TINY = float(np.finfo(np.float32).tiny)


@keras.saving.register_keras_serializable(package="mtlrec")
class FunnelJoint(keras.layers.Layer):
    """Logits `[z_1 .. z_n]` (each `(B,)`) of the steps of a funnel chain ->
    `[p, logit]`, the joint probability p = prod_i sigmoid(z_i) and its log-odds:

        log p       = sum_i log_sigmoid(z_i)
        log (1 - p) = log(-expm1(log p))
        logit       = log p - log(1 - p)

    Unlike the product of two clipped probabilities, this keeps its gradient at
    extreme logits (pCTR of 1e-9 or logits of +-40), and BCE from `logit` equals
    -[y log p + (1 - y) log(1 - p)].
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, logits):
        log_p = ops.log_sigmoid(ops.cast(logits[0], "float32"))
        for z in logits[1:]:
            log_p = log_p + ops.log_sigmoid(ops.cast(z, "float32"))
        log_p = ops.minimum(log_p, -_TINY)
        log_not_p = ops.log(-ops.expm1(log_p))
        return [ops.exp(log_p), log_p - log_not_p]

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape[0]), tuple(input_shape[0])]
