"""Second-order factorization-machine interaction (Rendle, ICDM 2010)."""

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.layers._core_utils import field_stack_shape


@keras.saving.register_keras_serializable(package="mtlrec")
class FMInteraction(keras.layers.Layer):
    """Pairwise interactions of field embeddings in O(F k).

    For field embeddings v_1..v_F (each of size k), the bi-interaction
    vector is

        sum_{i<j} v_i * v_j = 0.5 * ((sum_f v_f)^2 - sum_f v_f^2)

    (element-wise), shape (B, k). With `reduce_sum=True` it is summed over k
    to the FM second-order term sum_{i<j} <v_i, v_j>, shape (B, 1).

    Args:
        reduce_sum: sum the bi-interaction vector to one value per row.

    Call: `layer(fields (B, F, k))` with F >= 2.
    """

    def __init__(self, reduce_sum=False, **kwargs):
        super().__init__(**kwargs)
        reduce_sum = checks.check_bool("reduce_sum", reduce_sum)
        self.reduce_sum = reduce_sum

    def build(self, input_shape):
        field_stack_shape("FMInteraction", input_shape)

    def call(self, inputs):
        square_of_sum = ops.square(ops.sum(inputs, axis=1))
        sum_of_square = ops.sum(ops.square(inputs), axis=1)
        interaction = 0.5 * (square_of_sum - sum_of_square)
        if self.reduce_sum:
            return ops.sum(interaction, axis=-1, keepdims=True)
        return interaction

    def compute_output_shape(self, input_shape):
        shape = field_stack_shape("FMInteraction", input_shape)
        return (shape[0], 1) if self.reduce_sum else (shape[0], shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({"reduce_sum": self.reduce_sum})
        return config
