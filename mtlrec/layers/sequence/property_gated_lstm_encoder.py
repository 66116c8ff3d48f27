"""DUPN's history encoder as one layer: a property-gated LSTM read out by attention."""

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.conventions.seeding import derive_seed
from mtlrec.layers.sequence._masks import combine_masks
from mtlrec.layers.sequence.attention_pooling import AttentionPooling
from mtlrec.layers.sequence.property_gated_lstm import PropertyGatedLSTM


@keras.saving.register_keras_serializable(package="mtlrec")
class PropertyGatedLSTMEncoder(keras.layers.Layer):
    """The behavior encoder of DUPN (Ni et al., KDD 2018) for any model: a
    `PropertyGatedLSTM` over the history, pooled by `AttentionPooling` against a query.

    For steps with item embeddings e_t and property embeddings p_t (behavior type,
    time, scene) and a query q (DUPN: the user and context; a ranking model: the
    candidate):

        h_t = PG-LSTM(e_t, p_t, h_{t-1})                       (gates read p_t)
        a_t = softmax_t(v^T tanh(W [h_t; q; p_t] + b))         over real steps
        out = sum_t a_t h_t                                    (B, units)

    Without properties the LSTM's property kernel has no rows (a plain LSTM) and the
    attention reads [h_t; q]. Padded steps (`mask` False) keep the LSTM state, get no
    weight and reach no output; a row without a real step gives zeros.

    The sublayers are `property_gated_lstm` and `attention_pooling`, seeded with
    `derive_seed(seed, <their name>)`.

    Args:
        units: size of the LSTM state (and of the output).
        attention_units: hidden size of the attention.
        seed: optional int making the initial weights reproducible.

    Call: `layer([items (B, T, de), query (B, q)], mask=(B, T))` or
    `layer([items, query, properties (B, T, dp)], mask=...)` -> (B, units).
    """

    def __init__(self, units=32, attention_units=32, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.units = checks.check_positive_int("units", units)
        self.attention_units = checks.check_positive_int("attention_units", attention_units)
        self.seed = checks.check_seed(seed)
        self.supports_masking = True
        self.lstm = PropertyGatedLSTM(
            self.units, return_sequences=True, seed=derive_seed(self.seed, "property_gated_lstm"),
            name="property_gated_lstm",
        )
        self.attention = AttentionPooling(
            self.attention_units, seed=derive_seed(self.seed, "attention_pooling"), name="attention_pooling",
        )

    @staticmethod
    def _split_shapes(input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) not in (2, 3)
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                "PropertyGatedLSTMEncoder expects inputs [items (B, T, de), query (B, q)] or "
                f"[items, query, properties (B, T, dp)]. Received input shapes: {input_shape}"
            )
        shapes = [tuple(s) for s in input_shape]
        items, query = shapes[0], shapes[1]
        properties = shapes[2] if len(shapes) == 3 else items[:2] + (0,)
        return items, query, properties

    def build(self, input_shape):
        items, query, properties = self._split_shapes(input_shape)
        self.lstm.build([items, properties])
        hidden = items[:2] + (self.units,)
        self.attention.build([hidden, query, properties])

    def call(self, inputs, mask=None):
        items, query = inputs[0], inputs[1]
        if len(inputs) == 3:
            properties = inputs[2]
        else:
            properties = ops.zeros(ops.shape(items)[:2] + (0,), dtype=items.dtype)
        mask = combine_masks(mask, positions=(0, 2))
        hidden = self.lstm([items, properties], mask=mask)
        return self.attention([hidden, query, properties], mask=mask)

    def compute_output_shape(self, input_shape):
        items, _, _ = self._split_shapes(input_shape)
        return (items[0], self.units)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "attention_units": self.attention_units, "seed": self.seed})
        return config
