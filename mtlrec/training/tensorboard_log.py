"""TensorBoard scalars without the ``tensorboard`` package.

``tf.summary.scalar`` needs ``tensorboard`` installed; ``tf.summary.write`` is part
of TensorFlow itself. A scalar is a float32 tensor with the ``scalars`` plugin's
metadata (its plugin content, ``ScalarPluginData`` version 0, serialises to empty
bytes), which is exactly what TensorBoard reads back.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_METADATA = summary_pb2.SummaryMetadata()
_METADATA.plugin_data.plugin_name = "scalars"
_METADATA.plugin_data.content = b""


def scalar(name: str, value, step: int) -> None:
    """Write one scalar under the default writer (``with writer.as_default(): ...``)."""
    tf.summary.write(
        name, tf.constant(float(value), dtype=tf.float32), step=int(step), metadata=_METADATA
    )
