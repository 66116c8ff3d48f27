"""DSelect-k: a differentiable sparse top-k gate over a set of experts."""

import math

import keras
import numpy as np
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.layers import _core_utils as cu
from mtlrec.conventions.seeding import fresh_initializer


def _smooth_step(t, gamma):
    """S(t) = 0 for t <= -gamma/2, 1 for t >= gamma/2, else -2/gamma^3 t^3 + 3/(2 gamma) t + 1/2."""
    cubic = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return ops.where(t <= -gamma / 2, 0.0, ops.where(t >= gamma / 2, 1.0, cubic))


@keras.saving.register_keras_serializable(package="mtlrec")
class DSelectKGate(keras.layers.Layer):
    """DSelect-k gate (Hazimeh et al., NeurIPS 2021), per-example version: mixes at most
    k of the E experts, with weights that become exactly sparse during training.

    With m = ceil(log2 E) and the binary code b(l) in {0, 1}^m of expert l, each of the
    k selectors i has z^(i) = W_i x + c_i in R^m and picks one expert through the
    smooth step S:

        r(z)_l = prod_{j=1..m} S(z_j)^{b(l)_j} (1 - S(z_j))^{1 - b(l)_j}
        S(t)   = 0 (t <= -gamma/2),  1 (t >= gamma/2),
                 -2/gamma^3 t^3 + 3/(2 gamma) t + 1/2 otherwise
        g(x)   = sum_{i=1..k} softmax(A x + a)_i r(z^(i));   output = sum_l g_l(x) f_l(x)

    Once every S(z_j) reaches 0 or 1, r(z^(i)) is one-hot and g has at most k non-zero
    entries. Two terms go to `self.losses`: `entropy_reg` x mean over the batch of
    sum_i H(r(z^(i))) (the paper's entropy regulariser, pushing each selector to a single
    expert), and, when E is not a power of two, the mean weight the selectors put on the
    2^m - E codes that name no expert. The selector and mixture kernels start uniform in
    [-gamma/100, gamma/100] (every S(z_j) near 1/2, all experts reachable).

    Args:
        num_experts: E >= 2.
        k: the number of selectors (experts mixed per example), 1 <= k.
        gamma: width of the smooth step's transition, > 0.
        entropy_reg: weight of the entropy regulariser, >= 0.
        return_weights: also return g(x) (B, E), e.g. for the utilization report.
        seed: optional non-negative int for the kernels.

    Inputs `[gate_input (B, d), experts (B, E, h)]`; output `(B, h)`, or
    `((B, h), weights (B, E))` with `return_weights=True`.
    """

    def __init__(
        self,
        num_experts,
        k=2,
        gamma=1.0,
        entropy_reg=0.1,
        return_weights=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = checks.check_positive_int("num_experts", num_experts, minimum=2)
        self.k = checks.check_positive_int("k", k)
        self.gamma = checks.check_positive("gamma", gamma)
        self.entropy_reg = checks.check_non_negative("entropy_reg", entropy_reg)
        self.return_weights = checks.check_bool("return_weights", return_weights)
        self.seed = checks.check_seed(seed)
        self.num_bits = math.ceil(math.log2(self.num_experts))
        codes = np.arange(2**self.num_bits)[:, None] >> np.arange(self.num_bits)[None, :]
        self._codes = (codes & 1).astype("float32")  # (2^m, m): b(l)_j

    def _split_shapes(self, input_shape):
        return cu.gate_shapes(type(self).__name__, self.num_experts, input_shape)

    def build(self, input_shape):
        gate_shape, _ = self._split_shapes(input_shape)
        d = gate_shape[-1]
        limit = self.gamma / 100.0
        uniform = keras.initializers.RandomUniform(-limit, limit)
        self.selector_kernel = self.add_weight(
            name="selector_kernel",
            shape=(d, self.k * self.num_bits),
            initializer=fresh_initializer(uniform, self.seed, "selector_kernel"),
        )
        self.selector_bias = self.add_weight(
            name="selector_bias", shape=(self.k * self.num_bits,), initializer="zeros"
        )
        self.mixture_kernel = self.add_weight(
            name="mixture_kernel",
            shape=(d, self.k),
            initializer=fresh_initializer(uniform, self.seed, "mixture_kernel"),
        )
        self.mixture_bias = self.add_weight(name="mixture_bias", shape=(self.k,), initializer="zeros")

    def selector_outputs(self, gate_input):
        """r(z^(i)) for every selector, over all 2^m codes: (B, k, 2^m)."""
        z = ops.matmul(gate_input, self.selector_kernel) + self.selector_bias
        s = _smooth_step(ops.reshape(z, (-1, self.k, 1, self.num_bits)), self.gamma)
        codes = ops.convert_to_tensor(self._codes, dtype=s.dtype)
        return ops.prod(s * codes + (1.0 - s) * (1.0 - codes), axis=-1)

    def call(self, inputs):
        gate_input, experts = inputs
        selected = self.selector_outputs(gate_input)  # (B, k, 2^m)
        alpha = ops.softmax(ops.matmul(gate_input, self.mixture_kernel) + self.mixture_bias, axis=-1)
        full = ops.sum(ops.expand_dims(alpha, -1) * selected, axis=1)  # (B, 2^m)
        weights = full[:, : self.num_experts]
        if self.entropy_reg > 0:
            entropy = -ops.sum(selected * ops.log(selected + 1e-6), axis=-1)  # (B, k)
            self.add_loss(self.entropy_reg * ops.mean(ops.sum(entropy, axis=-1)))
        if selected.shape[-1] > self.num_experts:
            unused = ops.sum(selected[:, :, self.num_experts :], axis=(1, 2))
            self.add_loss(ops.mean(unused))
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
                "k": self.k,
                "gamma": self.gamma,
                "entropy_reg": self.entropy_reg,
                "return_weights": self.return_weights,
                "seed": self.seed,
            }
        )
        return config
