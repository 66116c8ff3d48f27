"""Softmax gate over a set of experts."""

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.layers import _core_utils as cu
from mtlrec.conventions.seeding import fresh_initializer

#: the default gate kernel: logits of std ~0.1 for any input width (fan-in scaled), so
#: every gate starts close to uniform over its experts (see the class docstring)
NEAR_UNIFORM = {
    "class_name": "VarianceScaling",
    "config": {"scale": 0.01, "mode": "fan_in", "distribution": "truncated_normal"},
}


@keras.saving.register_keras_serializable(package="mtlrec")
class Gate(keras.layers.Layer):
    """Mixes expert outputs with input-dependent weights.

    g(x) = softmax(W x + b) over the E experts;  output = sum_i g_i(x) f_i(x).

    W starts small (`NEAR_UNIFORM`: Var(W x) ~ 0.01 Var(x)), so at the first step every
    expert gets about 1/E of every example and the gates learn where to route from the
    task gradients. A Glorot kernel on a 100-wide input gives logits of std ~1.4: each
    region of the input space is routed to one or two experts by the random draw, those
    experts see only that region, and on the MMoE paper's synthetic task some seeds
    stall for many epochs (see docs/results/papers.md, MMoE synthetic data).

    Args:
        num_experts: E, the number of experts mixed.
        return_weights: also return g(x) (B, E), e.g. to inspect expert utilization.
        use_bias: add the bias b.
        kernel_initializer: initializer of W (name, config or instance; copied);
            default `NEAR_UNIFORM`.
        seed: optional non-negative int for the kernel initializer.

    Inputs `[gate_input (B, d), experts (B, E, h)]`; output `(B, h)`, or
    `((B, h), weights (B, E))` with `return_weights=True`.
    """

    def __init__(
        self,
        num_experts,
        return_weights=False,
        use_bias=True,
        kernel_initializer=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = checks.check_positive_int("num_experts", num_experts)
        self.return_weights = checks.check_bool("return_weights", return_weights)
        self.use_bias = checks.check_bool("use_bias", use_bias)
        if kernel_initializer is None:
            kernel_initializer = dict(NEAR_UNIFORM, config=dict(NEAR_UNIFORM["config"]))
        self.kernel_initializer = checks.check_initializer("kernel_initializer", kernel_initializer)
        self.seed = checks.check_seed(seed)

    def _split_shapes(self, input_shape):
        return cu.gate_shapes(type(self).__name__, self.num_experts, input_shape)

    def build(self, input_shape):
        gate_shape, _ = self._split_shapes(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(gate_shape[-1], self.num_experts),
            initializer=fresh_initializer(self.kernel_initializer, self.seed, "kernel"),
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.num_experts,), initializer="zeros"
            )
        else:
            self.bias = None

    def call(self, inputs):
        gate_input, experts = inputs
        logits = ops.matmul(gate_input, self.kernel)
        if self.bias is not None:
            logits = logits + self.bias
        weights = ops.softmax(logits, axis=-1)
        return cu.mix_experts(weights, experts, self.return_weights)

    def compute_output_shape(self, input_shape):
        return cu.gate_output_shape(
            type(self).__name__, self.num_experts, input_shape, self.return_weights
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "return_weights": self.return_weights,
                "use_bias": self.use_bias,
                "kernel_initializer": checks.serialize_identifier(self.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config
