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


class DaySummaries:
    """The TensorBoard scalars of a run (``run_dir/tensorboard``), written by the chief only.

    ``writer`` (None off-chief) goes to ``Trainer.train_day`` for the per-step scalars;
    ``day`` writes the figures of a finished day.
    """

    def __init__(self, directory, enabled: bool):
        self._directory, self._enabled, self._writer = str(directory), enabled, None

    @property
    def writer(self):
        """The file writer, made on first use (a command that trains nothing makes none)."""
        if self._writer is None and self._enabled:
            self._writer = tf.summary.create_file_writer(self._directory)
        return self._writer

    def day(self, step: int, evaluation, train_losses: dict) -> None:
        """The day's mean training losses and, after an evaluation, its metrics and the
        experts' utilization."""
        if self.writer is None:
            return
        with self.writer.as_default():
            for name, value in train_losses.items():
                scalar(f"day/train_{name}", value, step)
            if evaluation is not None:
                for task, values in evaluation.metrics.items():
                    for metric, value in values.items():
                        scalar(f"eval/{task}/{metric}", value, step)
                for task, weights in evaluation.utilization.items():
                    for i, value in enumerate(weights):
                        scalar(f"experts/{task}/expert_{i}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
