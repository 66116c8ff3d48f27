"""Multi-layer perceptron."""

import keras

from mtlrec.conventions import arg_checks as checks
from mtlrec.conventions.seeding import derive_seed, fresh_initializer

#: Momentum of the moving statistics of `batch_norm` (see `MLP.build`).
BATCH_NORM_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="mtlrec")
class MLP(keras.layers.Layer):
    """A stack of dense layers: h_{l+1} = dropout(act(BN(W_l h_l + b_l))).

    Every layer is Dense -> [BatchNormalization] -> activation -> [Dropout]. When
    `output_activation` is None the last layer is built like the others (the MLP is a
    representation, as in an expert). When it is given, the last layer is an output
    layer: Dense with that activation and no batch norm or dropout, so
    `output_activation="linear"` gives a logits tower.

    Each Dense layer gets its own initializer instance: with `seed`, layer i's kernel is
    seeded with `mtlrec.conventions.seeding.derive_seed(seed, "dense_<i>")` (its dropout with
    "dropout_<i>"); without, each draws a fresh default seed.

    Args:
        units: list of positive ints, the width of each layer.
        activation: activation of the hidden layers (name or Keras activation).
        dropout: dropout rate in [0, 1) after each hidden layer.
        batch_norm: add BatchNormalization before each hidden activation (the Dense
            layers then have no bias; BN's beta takes its place); its moving
            statistics use momentum ``BATCH_NORM_MOMENTUM`` (0.9).
        l2: L2 penalty factor on every kernel.
        output_activation: activation of the last layer (None: same as `activation`).
        kernel_initializer: initializer name, config or instance (copied per layer).
        seed: optional non-negative int for initializers and dropout.

    Input `(B, d)`, output `(B, units[-1])`.
    """

    def __init__(
        self,
        units,
        activation="relu",
        dropout=0.0,
        batch_norm=False,
        l2=0.0,
        output_activation=None,
        kernel_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = checks.check_units("units", units)
        checks.check_activation("activation", activation)
        if output_activation is not None:
            checks.check_activation("output_activation", output_activation)
        self.activation = activation
        self.output_activation = output_activation
        self.dropout = checks.check_rate("dropout", dropout)
        self.batch_norm = checks.check_bool("batch_norm", batch_norm)
        self.l2 = checks.check_non_negative("l2", l2)
        self.kernel_initializer = checks.check_initializer("kernel_initializer", kernel_initializer)
        self.seed = checks.check_seed(seed)

    def _is_output_layer(self, i):
        return i == len(self.units) - 1 and self.output_activation is not None

    def build(self, input_shape):
        shape = tuple(input_shape)
        regularizer = keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        self.dense_layers = []
        self.norm_layers = []
        self.dropout_layers = []
        self._activations = []
        for i, width in enumerate(self.units):
            output = self._is_output_layer(i)
            use_norm = self.batch_norm and not output
            dense = keras.layers.Dense(
                width,
                use_bias=not use_norm,
                kernel_initializer=fresh_initializer(self.kernel_initializer, self.seed, f"dense_{i}"),
                kernel_regularizer=regularizer,
                dtype=self.dtype_policy,
                name=f"dense_{i}",
            )
            dense.build(shape)
            shape = shape[:-1] + (width,)
            self.dense_layers.append(dense)
            if use_norm:
                # momentum 0.9 (PyTorch's 0.1), not Keras' 0.99: after one day of a few
                # hundred steps 0.99 still leaves 5% of the initial (0, 1) statistics in
                # the moving ones, and served predictions came out 2x too high.
                norm = keras.layers.BatchNormalization(
                    momentum=BATCH_NORM_MOMENTUM, dtype=self.dtype_policy, name=f"batch_norm_{i}"
                )
                norm.build(shape)
                self.norm_layers.append(norm)
            else:
                self.norm_layers.append(None)
            if self.dropout > 0 and not output:
                drop_seed = derive_seed(self.seed, f"dropout_{i}")
                self.dropout_layers.append(
                    keras.layers.Dropout(
                        self.dropout, seed=drop_seed, dtype=self.dtype_policy,
                        name=f"dropout_{i}",
                    )
                )
            else:
                self.dropout_layers.append(None)
            self._activations.append(
                keras.activations.get(self.output_activation if output else self.activation)
            )

    def call(self, inputs, training=None):
        x = inputs
        for dense, norm, act, drop in zip(
            self.dense_layers, self.norm_layers, self._activations, self.dropout_layers
        ):
            x = dense(x)
            if norm is not None:
                x = norm(x, training=training)
            x = act(x)
            if drop is not None:
                x = drop(x, training=training)
        return x

    def last_layer_variables(self):
        """The trainable variables of the last layer (its Dense and batch norm): the
        layer whose output the MLP returns (GradNorm's W when the MLP is shared)."""
        layers = [self.dense_layers[-1], self.norm_layers[-1]]
        return [v for layer in layers if layer is not None for v in layer.trainable_variables]

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
                "output_activation": checks.serialize_identifier(self.output_activation),
                "kernel_initializer": checks.serialize_identifier(self.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config
