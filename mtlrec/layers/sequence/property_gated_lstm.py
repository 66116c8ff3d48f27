"""Property-gated LSTM (DUPN, Ni et al., KDD 2018)."""

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.layers.sequence._masks import combine_masks
from mtlrec.conventions.seeding import fresh_initializer


@keras.saving.register_keras_serializable(package="mtlrec")
class PropertyGatedLSTM(keras.layers.Layer):
    """LSTM whose gates also read the behavior's properties.

    For step t with item embedding e_t and property embedding p_t:

        i_t  = sigma(W_i e_t + U_i h_{t-1} + P_i p_t + b_i)
        f_t  = sigma(W_f e_t + U_f h_{t-1} + P_f p_t + b_f)
        o_t  = sigma(W_o e_t + U_o h_{t-1} + P_o p_t + b_o)
        c~_t = tanh(W_c e_t + U_c h_{t-1} + b_c)          (item only)
        c_t  = f_t * c_{t-1} + i_t * c~_t
        h_t  = o_t * tanh(c_t)

    `b_f` starts at 1 (the usual unit forget bias, so early in training the
    cell keeps its state instead of forgetting it); the other biases start
    at 0. Weights: `kernel` (de, 4u) and `recurrent_kernel` (u, 4u) with the
    gate blocks in the order [i, f, c, o], `property_kernel` (dp, 3u) in the
    order [i, f, o], `bias` (4u,).

    Padded steps (`mask` False) carry the state over unchanged and output
    zeros, so their values never reach any output; an all-padding row
    returns zeros. `return_sequences=False` returns the state after the last
    valid step.

    Args:
        units: positive int, size of h_t and c_t.
        return_sequences: return (B, T, units) instead of (B, units).
        kernel_initializer: for `kernel` and `property_kernel`.
        recurrent_initializer: for `recurrent_kernel`.
        seed: optional int making the initial weights reproducible.

    Call: `layer([items (B, T, de), properties (B, T, dp)], mask=(B, T))`.
    """

    # Sequences of a static length up to this are unrolled; longer or unknown use a scan.
    MAX_UNROLL = 64

    def __init__(
        self,
        units,
        return_sequences=False,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        units = checks.check_positive_int("units", units)
        return_sequences = checks.check_bool("return_sequences", return_sequences)
        seed = checks.check_seed(seed)
        self.units = units
        self.return_sequences = return_sequences
        self.kernel_initializer = checks.serialize_identifier(checks.check_initializer("kernel_initializer", kernel_initializer))
        self.recurrent_initializer = checks.serialize_identifier(checks.check_initializer("recurrent_initializer", recurrent_initializer))
        self.seed = seed

    @staticmethod
    def _split_shapes(input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                "PropertyGatedLSTM expects inputs [items (B, T, de), "
                f"properties (B, T, dp)]. Received input shapes: {input_shape}"
            )
        items_shape, props_shape = (tuple(s) for s in input_shape)
        if len(items_shape) != 3 or len(props_shape) != 3:
            raise ValueError(
                "PropertyGatedLSTM expects rank-3 items and properties "
                f"(B, T, d). Received: items shape={items_shape}, "
                f"properties shape={props_shape}"
            )
        t_items, t_props = items_shape[1], props_shape[1]
        if t_items is not None and t_props is not None and t_items != t_props:
            raise ValueError(
                "items and properties must have the same number of steps T. "
                f"Received: items shape={items_shape}, "
                f"properties shape={props_shape}"
            )
        if items_shape[-1] is None or props_shape[-1] is None:
            raise ValueError(
                "The last dimension of items and properties must be known. "
                f"Received: items shape={items_shape}, "
                f"properties shape={props_shape}"
            )
        return items_shape, props_shape

    def _fresh(self, identifier, weight_name):
        return fresh_initializer(identifier, self.seed, weight_name)

    def build(self, input_shape):
        items_shape, props_shape = self._split_shapes(input_shape)
        u = self.units
        self.kernel = self.add_weight(
            name="kernel",
            shape=(items_shape[-1], 4 * u),
            initializer=self._fresh(self.kernel_initializer, "kernel"),
        )
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel",
            shape=(u, 4 * u),
            initializer=self._fresh(self.recurrent_initializer, "recurrent_kernel"),
        )
        self.property_kernel = self.add_weight(
            name="property_kernel",
            shape=(props_shape[-1], 3 * u),
            initializer=self._fresh(self.kernel_initializer, "property_kernel"),
        )

        def bias_initializer(shape, dtype=None):
            # [i, f, c, o]: unit forget bias.
            return ops.concatenate(
                [
                    ops.zeros((u,), dtype=dtype),
                    ops.ones((u,), dtype=dtype),
                    ops.zeros((2 * u,), dtype=dtype),
                ]
            )

        self.bias = self.add_weight(
            name="bias", shape=(4 * u,), initializer=bias_initializer
        )

    def call(self, inputs, mask=None):
        items, props = inputs
        u = self.units
        mask = combine_masks(mask)
        if mask is None:
            mask = ops.ones(ops.shape(items)[:2], dtype="bool")

        # Zero the padded steps first: their values (even non-finite ones)
        # then reach neither the output nor any gradient.
        step_mask = ops.expand_dims(mask, -1)
        items = ops.where(step_mask, items, ops.zeros_like(items))
        props = ops.where(step_mask, props, ops.zeros_like(props))
        # All input projections at once; only U h_{t-1} stays in the loop. The
        # property term has no candidate block: zeros there give one (B, T, 4u)
        # pre-activation, so a step is one add, one sigmoid over all four blocks
        # (the candidate block's sigmoid is unused) and a tanh of that block.
        p_proj = ops.matmul(props, self.property_kernel)  # (B, T, 3u) [i, f, o]
        p_full = ops.concatenate(
            [p_proj[..., : 2 * u], ops.zeros_like(p_proj[..., :u]), p_proj[..., 2 * u :]], -1
        )
        x_proj = ops.matmul(items, self.kernel) + self.bias + p_full  # (B, T, 4u)
        batch = ops.shape(items)[0]
        zeros = ops.zeros((batch, u), dtype=x_proj.dtype)

        def step(carry, x_t, m=None):
            h, c = carry
            if m is None:
                m = x_t[:, 4 * u :] > 0.5
            z = x_t[:, : 4 * u] + ops.matmul(h, self.recurrent_kernel)
            gates = ops.sigmoid(z)
            i, f, o = gates[:, :u], gates[:, u : 2 * u], gates[:, 3 * u :]
            c_new = f * c + i * ops.tanh(z[:, 2 * u : 3 * u])
            h_new = o * ops.tanh(c_new)
            h_next = ops.where(m, h_new, h)
            c_next = ops.where(m, c_new, c)
            y = ops.where(m, h_new, 0.0)
            # keras.ops.scan's TF backend stacks outputs shaped like the carry.
            return (h_next, c_next), (y, c_next)

        steps = items.shape[1]
        if isinstance(steps, int) and steps <= self.MAX_UNROLL:
            # A known, short length: unrolled steps avoid the while loop's
            # per-step overhead, which dominates at small (serving) batches.
            x_steps = ops.unstack(x_proj, steps, axis=1)
            m_steps = ops.unstack(ops.expand_dims(mask, -1), steps, axis=1)
            carry, ys = (zeros, zeros), []
            for x_t, m_t in zip(x_steps, m_steps):
                carry, (y, _) = step(carry, x_t, m_t)
                ys.append(y)
            return ops.stack(ys, axis=1) if self.return_sequences else carry[0]

        # One time-major tensor [x_proj | mask]: keras.ops.scan on the TF
        # backend fails for several `xs` when T is unknown.
        mask_f = ops.expand_dims(ops.cast(mask, x_proj.dtype), -1)
        xs = ops.transpose(ops.concatenate([x_proj, mask_f], -1), (1, 0, 2))
        (h_last, _), (ys, _) = ops.scan(step, (zeros, zeros), xs)
        if self.return_sequences:
            # The scan loses the static shape when T is unknown; restore it.
            steps = ops.shape(items)[1]
            return ops.reshape(ops.transpose(ys, (1, 0, 2)), (batch, steps, u))
        return h_last

    def compute_output_shape(self, input_shape):
        items_shape, _ = self._split_shapes(input_shape)
        if self.return_sequences:
            return (items_shape[0], items_shape[1], self.units)
        return (items_shape[0], self.units)

    def compute_mask(self, inputs, mask=None):
        if not self.return_sequences:
            return None
        return combine_masks(mask)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "return_sequences": self.return_sequences,
                "kernel_initializer": self.kernel_initializer,
                "recurrent_initializer": self.recurrent_initializer,
                "seed": self.seed,
            }
        )
        return config
