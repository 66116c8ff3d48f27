"""One expert network of a mixture-of-experts layer."""

import keras

from mtlrec.conventions import arg_checks as checks
from mtlrec.layers.mlp import MLP


@keras.saving.register_keras_serializable(package="mtlrec")
class Expert(keras.layers.Layer):
    """An expert f_i(x): an MLP whose layers all use `activation` (a representation).

    Every expert owns its initializer instances, so no two experts start identical:
    with `seed` the per-layer seeds are derived from it (give each expert its own seed,
    as `MixtureOfExperts` and `CGC` do with `mtlrec.conventions.seeding.derive_seed(seed, name)`);
    with `seed=None` each layer gets a fresh unseeded initializer.

    Args:
        units: list of positive ints, the expert's layer widths.
        activation, dropout, batch_norm, l2, kernel_initializer: as in `MLP`.
        seed: optional non-negative int.

    Input `(B, d)`, output `(B, units[-1])`.
    """

    def __init__(
        self,
        units,
        activation="relu",
        dropout=0.0,
        batch_norm=False,
        l2=0.0,
        kernel_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = checks.check_units("units", units)
        checks.check_activation("activation", activation)
        self.activation = activation
        self.dropout = checks.check_rate("dropout", dropout)
        self.batch_norm = checks.check_bool("batch_norm", batch_norm)
        self.l2 = checks.check_non_negative("l2", l2)
        self.kernel_initializer = checks.check_initializer("kernel_initializer", kernel_initializer)
        self.seed = checks.check_seed(seed)

    def build(self, input_shape):
        self.mlp = MLP(
            self.units,
            activation=self.activation,
            dropout=self.dropout,
            batch_norm=self.batch_norm,
            l2=self.l2,
            kernel_initializer=self.kernel_initializer,
            seed=self.seed,
            dtype=self.dtype_policy,
            name="mlp",
        )
        self.mlp.build(tuple(input_shape))

    def call(self, inputs, training=None):
        return self.mlp(inputs, training=training)

    def last_layer_variables(self):
        """The trainable variables of the expert's output layer."""
        return self.mlp.last_layer_variables()

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": list(self.units),
                "activation": checks.serialize_identifier(self.activation),
                "dropout": self.dropout,
                "batch_norm": self.batch_norm,
                "l2": self.l2,
                "kernel_initializer": checks.serialize_identifier(self.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config
