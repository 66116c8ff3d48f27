"""Target attention over a behavior history (DIN, Zhou et al., KDD 2018)."""

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.conventions.seeding import fresh_initializer
from mtlrec.layers.sequence._masks import combine_masks


@keras.saving.register_keras_serializable(package="mtlrec")
class TargetAttention(keras.layers.Layer):
    """Pool a behavior history by each step's relevance to the candidate (DIN's local
    activation unit).

    For history steps h_1..h_T (each a d-vector, e.g. an item's id and category
    embeddings side by side) and the candidate t (d, the candidate's embeddings from the
    same tables):

        a_j = MLP([h_j, t, h_j - t, h_j * t])        (hidden layers, then a linear score)
        out = sum_j m_j a_j h_j

    with m_j = 0 on padded steps. As in the paper the scores are not normalised by a
    softmax: sum_j a_j is free to grow with the number of relevant behaviors, so the
    output keeps how strongly the history speaks for the candidate.

    The first layer's kernel W (4d, u) is stored whole (`kernel_0`) in the blocks
    [W_h; W_t; W_d; W_p] of the formula and computed as
    h_j (W_h + W_d + diag(t) W_p) + t (W_t - W_d): the candidate folds into one kernel
    per row and its own term is computed once per row, not once per step (the same sum,
    a quarter of the multiplications per step). Padded steps (`mask`
    False) get a_j = 0 and their values reach neither the output nor any gradient; a
    row without a real step gives zeros.

    Args:
        units: hidden widths of the activation unit (DIN: one layer of 36).
        activation: activation of the hidden layers (DIN: PReLU or Dice; its released
            code, like the default here, sigmoid).
        return_weights: also return the weights a (B, T) (0 on padded steps).
        kernel_initializer: for every kernel (each its own instance).
        seed: optional int making the initial weights reproducible.

    Call: `layer([history (B, T, d), candidate (B, d)], mask=(B, T))` -> (B, d), or
    `((B, d), (B, T))` with `return_weights=True`.
    """

    def __init__(
        self,
        units=(36,),
        activation="sigmoid",
        return_weights=False,
        kernel_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = checks.check_units("units", units)
        checks.check_activation("activation", activation)
        self.activation = activation
        self.return_weights = checks.check_bool("return_weights", return_weights)
        self.kernel_initializer = checks.serialize_identifier(
            checks.check_initializer("kernel_initializer", kernel_initializer)
        )
        self.seed = checks.check_seed(seed)
        self.supports_masking = True

    @staticmethod
    def _split_shapes(input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                "TargetAttention expects inputs [history (B, T, d), candidate (B, d)]. "
                f"Received input shapes: {input_shape}"
            )
        history, candidate = (tuple(s) for s in input_shape)
        if len(history) != 3 or len(candidate) != 2:
            raise ValueError(
                "TargetAttention expects a history of rank 3 (B, T, d) and a candidate of "
                f"rank 2 (B, d). Received: history shape={history}, candidate shape={candidate}"
            )
        if history[-1] is None or history[-1] != candidate[-1]:
            raise ValueError(
                "TargetAttention compares each history step with the candidate: both need "
                "the same known width d. "
                f"Received: history shape={history}, candidate shape={candidate}"
            )
        return history, candidate

    def build(self, input_shape):
        history, _ = self._split_shapes(input_shape)
        width = history[-1]
        self.kernels, self.biases = [], []
        fan_in = 4 * width
        for i, units in enumerate(self.units + [1]):
            self.kernels.append(
                self.add_weight(
                    name=f"kernel_{i}",
                    shape=(fan_in, units),
                    initializer=fresh_initializer(self.kernel_initializer, self.seed, f"kernel_{i}"),
                )
            )
            self.biases.append(self.add_weight(name=f"bias_{i}", shape=(units,), initializer="zeros"))
            fan_in = units
        self._activation = keras.activations.get(self.activation)

    def call(self, inputs, mask=None):
        history, candidate = inputs
        # Only the history's mask is a time mask (not the candidate's).
        mask = combine_masks(mask, positions=(0,))
        if mask is None:
            mask = ops.ones(ops.shape(history)[:2], dtype="bool")
        # Zero the padded steps first: their values (even non-finite ones) then reach
        # neither the output nor any gradient.
        history = ops.where(ops.expand_dims(mask, -1), history, ops.zeros_like(history))
        d = history.shape[-1]
        first = self.kernels[0]
        w_h, w_t, w_d, w_p = first[:d], first[d : 2 * d], first[2 * d : 3 * d], first[3 * d :]
        # (B, d, u): W_h + W_d + diag(t) W_p, row by row
        row_kernel = ops.expand_dims(w_h + w_d, 0) + ops.expand_dims(candidate, -1) * ops.expand_dims(w_p, 0)
        x = ops.matmul(history, row_kernel) + ops.expand_dims(ops.matmul(candidate, w_t - w_d) + self.biases[0], 1)
        for kernel, bias in zip(self.kernels[1:], self.biases[1:]):
            x = ops.matmul(self._activation(x), kernel) + bias
        scores = ops.squeeze(x, -1)
        weights = ops.where(mask, scores, ops.zeros_like(scores))
        pooled = ops.squeeze(ops.matmul(ops.expand_dims(weights, 1), history), 1)
        if self.return_weights:
            return pooled, weights
        return pooled

    def compute_output_shape(self, input_shape):
        history, _ = self._split_shapes(input_shape)
        pooled = (history[0], history[-1])
        if self.return_weights:
            return pooled, (history[0], history[1])
        return pooled

    def compute_mask(self, inputs, mask=None):
        return (None, None) if self.return_weights else None

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": list(self.units),
                "activation": checks.serialize_identifier(self.activation),
                "return_weights": self.return_weights,
                "kernel_initializer": self.kernel_initializer,
                "seed": self.seed,
            }
        )
        return config
