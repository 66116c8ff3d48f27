"""AITM's Adaptive Information Transfer module."""

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.layers import _core_utils as cu
from mtlrec.conventions.seeding import fresh_initializer


@keras.saving.register_keras_serializable(package="mtlrec")
class InformationTransfer(keras.layers.Layer):
    """Adaptive Information Transfer (AIT, Xi et al., KDD 2021): what step t of a
    conversion funnel learns from step t - 1.

    With z_{t-1} the previous step's AIT output and q_t step t's own representation
    (both (B, d)):

        p_{t-1} = relu(W_g z_{t-1} + b_g)                (the transferred information)
        w_u     = softmax_u( <h_1(u), h_2(u)> / sqrt(d) ),  u in {p_{t-1}, q_t}
        z_t     = sum_u w_u h_3(u)

    where h_1, h_2, h_3 are linear maps d -> d shared by both candidates: the attention
    decides, per example, how much of the previous step to carry over.

    Args:
        return_weights: also return the attention weights (B, 2) over
            [transferred, own].
        kernel_initializer: initializer of W_g and of h_1..h_3 (each its own copy).
        seed: optional non-negative int for the kernels.

    Inputs `[previous (B, d'), own (B, d)]`; output z_t `(B, d)`, or
    `(z_t, weights (B, 2))` with `return_weights=True`.
    """

    def __init__(self, return_weights=False, kernel_initializer="glorot_uniform", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.return_weights = checks.check_bool("return_weights", return_weights)
        self.kernel_initializer = checks.check_initializer("kernel_initializer", kernel_initializer)
        self.seed = checks.check_seed(seed)

    def _split_shapes(self, input_shape):
        shapes = cu.as_shape_list(input_shape)
        if shapes is None or len(shapes) != 2 or any(len(s) != 2 or s[-1] is None for s in shapes):
            raise ValueError(
                "InformationTransfer expects inputs [previous (B, d'), own (B, d)] with known "
                f"d' and d. Received input shape: {input_shape}"
            )
        return shapes

    def _dense(self, name, fan_in, units):
        kernel = self.add_weight(
            name=f"{name}_kernel",
            shape=(fan_in, units),
            initializer=fresh_initializer(self.kernel_initializer, self.seed, f"{name}_kernel"),
        )
        bias = self.add_weight(name=f"{name}_bias", shape=(units,), initializer="zeros")
        return kernel, bias

    def build(self, input_shape):
        previous_shape, own_shape = self._split_shapes(input_shape)
        d = own_shape[-1]
        self.transfer = self._dense("transfer", previous_shape[-1], d)
        self.query = self._dense("query", d, d)
        self.key = self._dense("key", d, d)
        self.value = self._dense("value", d, d)

    @staticmethod
    def _apply(dense, x):
        kernel, bias = dense
        return ops.matmul(x, kernel) + bias

    def call(self, inputs):
        previous, own = inputs
        transferred = ops.relu(self._apply(self.transfer, previous))
        candidates = ops.stack([transferred, own], axis=1)  # (B, 2, d)
        d = ops.cast(ops.shape(own)[-1], candidates.dtype)
        scores = ops.sum(
            self._apply(self.query, candidates) * self._apply(self.key, candidates), axis=-1
        ) / ops.sqrt(d)
        weights = ops.softmax(scores, axis=-1)  # (B, 2)
        z = ops.sum(ops.expand_dims(weights, -1) * self._apply(self.value, candidates), axis=1)
        if self.return_weights:
            return z, weights
        return z

    def compute_output_shape(self, input_shape):
        _, own_shape = self._split_shapes(input_shape)
        if self.return_weights:
            return tuple(own_shape), (own_shape[0], 2)
        return tuple(own_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "return_weights": self.return_weights,
                "kernel_initializer": checks.serialize_identifier(self.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config
