"""Private helper layer: mean of a sequence over its unpadded steps."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mtlrec")
class MaskedMean(keras.layers.Layer):
    """sum_t m_t x_t / max(sum_t m_t, 1): `(B, T, d)`, mask `(B, T)` -> `(B, d)`.

    Unlike `GlobalAveragePooling1D` it gives zeros, not NaN, for a row whose
    steps are all padding (a user with no history).
    """

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.mean(inputs, axis=1)
        m = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        return ops.sum(inputs * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1.0)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])
