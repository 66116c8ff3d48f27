"""Pairwise inner products of field embeddings (DLRM, Naumov et al. 2019; IPNN, Qu et al. 2016)."""

import keras
import numpy as np
from keras import ops

from mtlrec.layers._core_utils import field_stack_shape


@keras.saving.register_keras_serializable(package="mtlrec")
class DotInteraction(keras.layers.Layer):
    """The inner product of every pair of fields, as separate features.

    For field embeddings v_1..v_F (each of size k) the output is

        [<v_i, v_j> for i < j]      shape (B, F (F - 1) / 2)

    in row-major order of (i, j). Unlike the FM bi-interaction vector, which sums all
    pairs into one k-vector, each pair keeps its own feature, so a tower can weigh the
    user-item product apart from the others: an MLP on concatenated embeddings learns
    a dot product poorly (Rendle et al., RecSys 2020).

    Call: `layer(fields (B, F, k))` with F >= 2.
    """

    def build(self, input_shape):
        num_fields = field_stack_shape("DotInteraction", input_shape, known_fields=True)[1]
        rows, cols = np.triu_indices(num_fields, k=1)
        self._pairs = (rows * num_fields + cols).astype("int32")

    def call(self, inputs):
        gram = ops.matmul(inputs, ops.transpose(inputs, (0, 2, 1)))
        flat = ops.reshape(gram, (-1, gram.shape[1] * gram.shape[2]))
        return ops.take(flat, self._pairs, axis=1)

    def compute_output_shape(self, input_shape):
        shape = field_stack_shape("DotInteraction", input_shape, known_fields=True)
        return (shape[0], shape[1] * (shape[1] - 1) // 2)
