"""Pairwise inner products of field embeddings (DLRM, Naumov et al. 2019; IPNN, Qu et al. 2016)."""

import keras
import numpy as np
from keras import ops


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

    @staticmethod
    def _check_shape(input_shape):
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(
                "DotInteraction expects stacked field embeddings of rank 3 "
                f"(B, F, k). Received input shape: {shape}"
            )
        if shape[1] is None or shape[1] < 2:
            raise ValueError(
                "DotInteraction needs a known number of fields, at least 2 (F >= 2). "
                f"Received input shape: {shape}"
            )
        return shape

    def build(self, input_shape):
        num_fields = self._check_shape(input_shape)[1]
        rows, cols = np.triu_indices(num_fields, k=1)
        self._pairs = (rows * num_fields + cols).astype("int32")

    def call(self, inputs):
        gram = ops.matmul(inputs, ops.transpose(inputs, (0, 2, 1)))
        flat = ops.reshape(gram, (-1, gram.shape[1] * gram.shape[2]))
        return ops.take(flat, self._pairs, axis=1)

    def compute_output_shape(self, input_shape):
        shape = self._check_shape(input_shape)
        return (shape[0], shape[1] * (shape[1] - 1) // 2)
