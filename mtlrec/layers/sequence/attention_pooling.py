"""Masked additive attention pooling over a sequence (DUPN, Ni et al., KDD 2018)."""

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.layers.sequence._masks import combine_masks
from mtlrec.conventions.seeding import fresh_initializer


@keras.saving.register_keras_serializable(package="mtlrec")
class AttentionPooling(keras.layers.Layer):
    """Pool a sequence of hidden states with query-driven attention.

        a_t = softmax_t(v^T tanh(W [h_t; q; p_t] + b))   over unpadded steps
        out = sum_t a_t h_t

    W is stored in blocks, `hidden_kernel` (h, units), `query_kernel`
    (q, units) and, with properties, `property_kernel` (p, units), so the
    query is projected once instead of once per step; `bias` (units,) and
    `score_kernel` v (units,) complete the score. Padded steps (`mask`
    False) get weight 0 and their values reach no output; a row with no
    valid step gets all-zero weights and a zero output.

    Args:
        units: positive int, size of the attention's hidden layer.
        return_weights: also return the weights a (B, T).
        kernel_initializer: for every kernel (each its own instance).
        seed: optional int making the initial weights reproducible.

    Call: `layer([hidden (B, T, h), query (B, q)], mask=(B, T))` or
    `layer([hidden, query, properties (B, T, p)], mask=...)` -> (B, h),
    or `((B, h), (B, T))` with `return_weights=True`.
    """

    def __init__(
        self,
        units,
        return_weights=False,
        kernel_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        units = checks.check_positive_int("units", units)
        return_weights = checks.check_bool("return_weights", return_weights)
        seed = checks.check_seed(seed)
        self.units = units
        self.return_weights = return_weights
        self.kernel_initializer = checks.serialize_identifier(checks.check_initializer("kernel_initializer", kernel_initializer))
        self.seed = seed

    @staticmethod
    def _split_shapes(input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) not in (2, 3)
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                "AttentionPooling expects inputs [hidden (B, T, h), query (B, q)] "
                "or [hidden, query, properties (B, T, p)]. "
                f"Received input shapes: {input_shape}"
            )
        shapes = [tuple(s) for s in input_shape]
        hidden_shape, query_shape = shapes[0], shapes[1]
        props_shape = shapes[2] if len(shapes) == 3 else None
        if len(hidden_shape) != 3 or len(query_shape) != 2:
            raise ValueError(
                "AttentionPooling expects hidden of rank 3 (B, T, h) and query of "
                f"rank 2 (B, q). Received: hidden shape={hidden_shape}, "
                f"query shape={query_shape}"
            )
        if props_shape is not None:
            if len(props_shape) != 3:
                raise ValueError(
                    "AttentionPooling expects properties of rank 3 (B, T, p). "
                    f"Received: properties shape={props_shape}"
                )
            if (
                hidden_shape[1] is not None
                and props_shape[1] is not None
                and hidden_shape[1] != props_shape[1]
            ):
                raise ValueError(
                    "hidden and properties must have the same number of steps T. "
                    f"Received: hidden shape={hidden_shape}, "
                    f"properties shape={props_shape}"
                )
        known = [s[-1] for s in shapes]
        if any(d is None for d in known):
            raise ValueError(
                "The last dimension of every AttentionPooling input must be known. "
                f"Received input shapes: {shapes}"
            )
        return hidden_shape, query_shape, props_shape

    def _fresh(self, identifier, weight_name):
        return fresh_initializer(identifier, self.seed, weight_name)

    def build(self, input_shape):
        hidden_shape, query_shape, props_shape = self._split_shapes(input_shape)
        self._has_properties = props_shape is not None
        self.hidden_kernel = self.add_weight(
            name="hidden_kernel",
            shape=(hidden_shape[-1], self.units),
            initializer=self._fresh(self.kernel_initializer, "hidden_kernel"),
        )
        self.query_kernel = self.add_weight(
            name="query_kernel",
            shape=(query_shape[-1], self.units),
            initializer=self._fresh(self.kernel_initializer, "query_kernel"),
        )
        if self._has_properties:
            self.property_kernel = self.add_weight(
                name="property_kernel",
                shape=(props_shape[-1], self.units),
                initializer=self._fresh(self.kernel_initializer, "property_kernel"),
            )
        self.bias = self.add_weight(
            name="bias", shape=(self.units,), initializer="zeros"
        )
        self.score_kernel = self.add_weight(
            name="score_kernel",
            shape=(self.units,),
            initializer=self._fresh(self.kernel_initializer, "score_kernel"),
        )

    def call(self, inputs, mask=None):
        if len(inputs) != (3 if self._has_properties else 2):
            raise ValueError(
                f"AttentionPooling was built for {3 if self._has_properties else 2} "
                f"inputs but was called with {len(inputs)}."
            )
        hidden, query = inputs[0], inputs[1]
        # Only hidden's and properties' masks are time masks (not the query's).
        mask = combine_masks(mask, positions=(0, 2))
        if mask is None:
            mask = ops.ones(ops.shape(hidden)[:2], dtype="bool")

        # Zero the padded steps first: their values (even non-finite ones)
        # then reach neither the output nor any gradient.
        step_mask = ops.expand_dims(mask, -1)
        hidden = ops.where(step_mask, hidden, ops.zeros_like(hidden))
        pre = ops.matmul(hidden, self.hidden_kernel)
        pre = pre + ops.expand_dims(ops.matmul(query, self.query_kernel), 1)
        if self._has_properties:
            props = ops.where(step_mask, inputs[2], ops.zeros_like(inputs[2]))
            pre = pre + ops.matmul(props, self.property_kernel)
        scores = ops.sum(ops.tanh(pre + self.bias) * self.score_kernel, axis=-1)

        # Masked softmax: shift by the max over valid steps, exponentiate only
        # valid steps (padded ones see exp(0)), so nothing overflows and an
        # all-padding row gets 0 / 1 = 0 rather than 0 / 0.
        neg = ops.full_like(scores, -1e9)
        row_max = ops.stop_gradient(
            ops.max(ops.where(mask, scores, neg), axis=-1, keepdims=True)
        )
        shifted = ops.where(mask, scores - row_max, ops.zeros_like(scores))
        exps = ops.where(mask, ops.exp(shifted), ops.zeros_like(scores))
        denom = ops.sum(exps, axis=-1, keepdims=True)
        weights = exps / ops.where(denom > 0, denom, ops.ones_like(denom))

        pooled = ops.sum(ops.expand_dims(weights, -1) * hidden, axis=1)
        if self.return_weights:
            return pooled, weights
        return pooled

    def compute_output_shape(self, input_shape):
        hidden_shape, _, _ = self._split_shapes(input_shape)
        pooled = (hidden_shape[0], hidden_shape[-1])
        if self.return_weights:
            return pooled, (hidden_shape[0], hidden_shape[1])
        return pooled

    def compute_mask(self, inputs, mask=None):
        return (None, None) if self.return_weights else None

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "return_weights": self.return_weights,
                "kernel_initializer": self.kernel_initializer,
                "seed": self.seed,
            }
        )
        return config
