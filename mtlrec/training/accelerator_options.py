"""`training.jit_compile` and `training.mixed_precision`: the dense part of the step compiled
with XLA, the network computed in bfloat16 (the config refuses what cannot apply)."""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from mtlrec.conventions.key_paths import KeyPathError
from mtlrec.losses.objective import objective_terms

#: training.mixed_precision -> the Keras dtype policy the network is built with
POLICIES = {"bfloat16": "mixed_bfloat16"}


@contextlib.contextmanager
def dtype_policy_scope(training):
    """While open, new layers take the dtype policy of `training.mixed_precision` (none
    set: float32). The model's `FeatureEmbedding` keeps float32 itself (its tables are
    read row by row; a 16-bit policy would cast whole tables), so only the network
    after the embedding computes in 16 bits; variables stay float32."""
    precision = getattr(training, "mixed_precision", None)
    if precision is None:
        yield
        return
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


class DenseObjective:
    """The objective terms of a step, `(features, labels) -> {name: scalar}`, with the
    network after the `FeatureEmbedding` compiled by XLA.

    The embedding (id hashing, `tf.lookup` id maps, row gathers on tables of millions of
    rows) runs as TensorFlow ops; its outputs feed `tail`, a functional model of the same
    layers from the embedding's outputs to the model's outputs, called together with the
    losses in one `tf.function(jit_compile=True)`. Gradients flow back through the
    compiled function (its gradient is compiled too) into the embedding's rows.

    KeyPathError on `training.jit_compile` for a model whose network reads more than the
    embedding's outputs (DUPN).
    """

    def __init__(self, model):
        embedding = model.feature_embedding
        self.model = model
        self.embedding = embedding
        try:
            self.tail = keras.Model(keras.tree.flatten(embedding.output), model.output)
        except ValueError:  # a layer reads the features, or the embedding twice
            raise KeyPathError(
                "training.jit_compile", f"{type(model).__name__}'s network does not start from "
                "the embedding's outputs alone, so it cannot be compiled apart from the embedding; "
                "set it to false for this model"
            ) from None
        self._dense = tf.function(self._dense_terms, jit_compile=True)

    def _dense_terms(self, embedded, labels):
        outputs = self.tail(embedded, training=True)
        return objective_terms(self.model, labels, outputs)

    def __call__(self, features, labels):
        embedded = keras.tree.flatten(self.embedding(features, training=True))
        return self._dense(embedded, labels)
