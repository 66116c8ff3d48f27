"""Keras' `Adagrad` whose clipping acts on the gradient the update uses."""

import keras

from mtlrec.optimizers.summed_gradients import SummedGradientClipping


@keras.saving.register_keras_serializable(package="mtlrec")
class Adagrad(SummedGradientClipping, keras.optimizers.Adagrad):
    """`keras.optimizers.Adagrad` (same arguments, slots and update) whose `clipnorm`,
    `global_clipnorm` and `clipvalue` clip the gradient summed over the replicas of a
    `tf.distribute` strategy and, for an `IndexedSlices`, over its duplicate ids
    (`SummedGradientClipping`), not each replica's share or each lookup's row. Without
    clipping, or with dense gradients on one device, its updates are Keras' bit for bit.
    """
