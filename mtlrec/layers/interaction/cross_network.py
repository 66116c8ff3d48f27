"""Cross network of DCN-v2 (Wang et al., WWW 2021)."""

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.conventions.seeding import fresh_initializer


@keras.saving.register_keras_serializable(package="mtlrec")
class CrossNetwork(keras.layers.Layer):
    """Stack of explicit feature-crossing layers.

        x_{l+1} = x_0 * (W_l x_l + b_l) + x_l,   l = 0 .. num_layers - 1

    (`*` element-wise). With `low_rank=r` each W_l is factorised as
    U_l V_l^T (U_l, V_l of shape (D, r)):

        x_{l+1} = x_0 * (U_l (V_l^T x_l) + b_l) + x_l

    Weights per layer l: `kernel_l` (D, D) applied as x_l @ kernel_l (i.e.
    kernel_l = W_l^T), or `v_kernel_l` = V_l and `u_kernel_l` = U_l; and
    `bias_l` (D,), initialised to zeros.

    Args:
        num_layers: positive int, number of cross layers.
        low_rank: None (full W_l) or positive int r.
        kernel_initializer: for every kernel (each its own instance).
        seed: optional int making the initial weights reproducible.

    Call: `layer(x (B, D))` -> (B, D).
    """

    def __init__(
        self,
        num_layers=2,
        low_rank=None,
        kernel_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_layers = checks.check_positive_int("num_layers", num_layers)
        if low_rank is not None:
            low_rank = checks.check_positive_int("low_rank", low_rank)
        seed = checks.check_seed(seed)
        self.num_layers = num_layers
        self.low_rank = low_rank
        self.kernel_initializer = checks.serialize_identifier(checks.check_initializer("kernel_initializer", kernel_initializer))
        self.seed = seed

    @staticmethod
    def _check_shape(input_shape):
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[-1] is None:
            raise ValueError(
                "CrossNetwork expects a rank-2 input (B, D) with D known. "
                f"Received input shape: {shape}"
            )
        return shape

    def _fresh(self, identifier, weight_name):
        return fresh_initializer(identifier, self.seed, weight_name)

    def build(self, input_shape):
        dim = self._check_shape(input_shape)[-1]
        self.kernels, self.u_kernels, self.v_kernels, self.biases = [], [], [], []
        for layer in range(self.num_layers):
            if self.low_rank is None:
                self.kernels.append(
                    self.add_weight(
                        name=f"kernel_{layer}",
                        shape=(dim, dim),
                        initializer=self._fresh(self.kernel_initializer, f"kernel_{layer}"),
                    )
                )
            else:
                self.v_kernels.append(
                    self.add_weight(
                        name=f"v_kernel_{layer}",
                        shape=(dim, self.low_rank),
                        initializer=self._fresh(self.kernel_initializer, f"v_kernel_{layer}"),
                    )
                )
                self.u_kernels.append(
                    self.add_weight(
                        name=f"u_kernel_{layer}",
                        shape=(dim, self.low_rank),
                        initializer=self._fresh(self.kernel_initializer, f"u_kernel_{layer}"),
                    )
                )
            self.biases.append(
                self.add_weight(name=f"bias_{layer}", shape=(dim,), initializer="zeros")
            )

    def call(self, inputs):
        x0 = inputs
        x = inputs
        for layer in range(self.num_layers):
            if self.low_rank is None:
                wx = ops.matmul(x, self.kernels[layer])
            else:
                # U (V^T x) for row vectors: (x @ V) @ U^T
                wx = ops.matmul(
                    ops.matmul(x, self.v_kernels[layer]),
                    ops.transpose(self.u_kernels[layer]),
                )
            x = x0 * (wx + self.biases[layer]) + x
        return x

    def compute_output_shape(self, input_shape):
        return self._check_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "low_rank": self.low_rank,
                "kernel_initializer": self.kernel_initializer,
                "seed": self.seed,
            }
        )
        return config
