"""Cross-stitch unit."""

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.layers import _core_utils as cu


@keras.saving.register_keras_serializable(package="mtlrec")
class CrossStitch(keras.layers.Layer):
    """Cross-stitch unit (Misra et al., CVPR 2016) linking K task columns at one layer.

    [x~_1..x~_K] = A [x_1..x_K], i.e. x~_k = sum_l a_kl x_l, with A a learnable K x K
    matrix, or with `per_channel=True` one K x K matrix per channel (A of shape
    (d, K, K)). A starts at a_kk = self_weight and a_kl = (1 - self_weight) / (K - 1), so
    each output starts as a convex combination leaning on its own column. K is taken from
    the input list when the layer is built.

    Args:
        self_weight: initial a_kk, in [0, 1].
        per_channel: one mixing matrix per channel instead of one for all.

    Inputs: a list of K >= 2 tensors `(B, d)` of equal width; outputs: a list of K
    tensors `(B, d)`.
    """

    def __init__(self, self_weight=0.9, per_channel=False, **kwargs):
        super().__init__(**kwargs)
        if (
            isinstance(self_weight, bool)
            or not isinstance(self_weight, (int, float))
            or not 0 <= self_weight <= 1
        ):
            raise ValueError(
                "Expected self_weight to be a float in [0, 1]. "
                f"Received: self_weight={self_weight!r}"
            )
        self.self_weight = float(self_weight)
        self.per_channel = checks.check_bool("per_channel", per_channel)

    def _check_shapes(self, input_shape):
        shapes = cu.as_shape_list(input_shape)
        if shapes is None:
            raise ValueError(
                "CrossStitch expects a list of K >= 2 tensors (B, d). "
                f"Received input shape: {input_shape}"
            )
        if len(shapes) < 2:
            raise ValueError(
                f"CrossStitch expects at least 2 tensors. Received {len(shapes)}: {shapes}"
            )
        widths = {s[-1] for s in shapes}
        if any(len(s) != 2 for s in shapes) or len(widths) != 1 or None in widths:
            raise ValueError(
                "CrossStitch expects K tensors (B, d) of the same known width d. "
                f"Received shapes: {shapes}"
            )
        return shapes

    def build(self, input_shape):
        shapes = self._check_shapes(input_shape)
        self.num_columns = len(shapes)
        width = shapes[0][-1]
        shape = (width, self.num_columns, self.num_columns) if self.per_channel else (
            self.num_columns, self.num_columns
        )
        self.stitch = self.add_weight(name="stitch", shape=shape, initializer=self._init_stitch)

    def _init_stitch(self, shape, dtype=None):
        k = shape[-1]
        eye = ops.eye(k, dtype=dtype)
        off = (1.0 - self.self_weight) / (k - 1)
        matrix = eye * self.self_weight + (1.0 - eye) * off
        if len(shape) == 2:
            return matrix
        # One copy per channel: PyTorch's broadcast is a view whose channels share memory, and a
        # variable holding it refuses every later assign (a .keras load, a hand-set value).
        return ops.tile(ops.expand_dims(matrix, 0), (shape[0], 1, 1))

    def call(self, inputs):
        x = ops.stack(list(inputs), axis=1)  # (B, K, d)
        if self.per_channel:
            mixed = ops.einsum("dkl,bld->bkd", self.stitch, x)
        else:
            mixed = ops.einsum("kl,bld->bkd", self.stitch, x)
        return [mixed[:, k, :] for k in range(self.num_columns)]

    def compute_output_shape(self, input_shape):
        return [tuple(s) for s in self._check_shapes(input_shape)]

    def get_config(self):
        config = super().get_config()
        config.update({"self_weight": self.self_weight, "per_channel": self.per_channel})
        return config
