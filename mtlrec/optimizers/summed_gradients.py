"""The gradient an update uses: an embedding gradient's duplicate ids summed, and
clipping applied to that sum after the replicas' gradients are summed."""

import tensorflow as tf


def dedupe_slices(gradient, dtype):
    """Sums the rows of an `IndexedSlices` gradient that share an index.

    A batch that looks the same id up twice (or replicas whose gradients were
    concatenated by an all-reduce) yields repeated indices; a scatter with
    repeated indices would apply only one of them.

    Returns:
        `(values, indices)`: the summed rows `(U, ...)` cast to `dtype` and the
        unique indices `(U,)`, in order of first appearance.
    """
    indices, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(
        tf.cast(gradient.values, dtype), positions, tf.shape(indices)[0]
    )
    return values, indices


def clip_gradients(optimizer, grads, clip_dense):
    """Gradient clipping that keeps `IndexedSlices` sparse.

    `clipnorm` is already sparse-safe in the TF backend (`tf.clip_by_norm`);
    `clipvalue` and `global_clipnorm` go through `keras.ops`, which would
    densify a sparse gradient, so those two are done with TF ops here.
    """
    if not any(isinstance(g, tf.IndexedSlices) for g in grads):
        return clip_dense(grads)
    if optimizer.global_clipnorm and optimizer.global_clipnorm > 0:
        present = [g for g in grads if g is not None]
        clipped, _ = tf.clip_by_global_norm(present, optimizer.global_clipnorm)
        clipped = iter(clipped)
        return [None if g is None else next(clipped) for g in grads]
    if optimizer.clipvalue and optimizer.clipvalue > 0:
        v = optimizer.clipvalue
        out = []
        for g in grads:
            if isinstance(g, tf.IndexedSlices):
                g = tf.IndexedSlices(
                    tf.clip_by_value(g.values, -v, v), g.indices, g.dense_shape
                )
            elif g is not None:
                g = tf.clip_by_value(g, -v, v)
            out.append(g)
        return out
    return clip_dense(grads)


def clips(optimizer) -> bool:
    """Whether `optimizer` has `clipnorm`, `global_clipnorm` or `clipvalue` set."""
    return any((value or 0) > 0 for value in (optimizer.clipnorm, optimizer.global_clipnorm, optimizer.clipvalue))


def summed_slices(gradient):
    """`gradient` (`IndexedSlices`) with the rows of each id summed into one: the rows
    of the dense gradient it stands for."""
    values, ids = dedupe_slices(gradient, gradient.values.dtype)
    return tf.IndexedSlices(values, ids, gradient.dense_shape)


def clip_summed(optimizer, grads, clip_dense):
    """`grads` clipped by `optimizer`'s `clipnorm` (each gradient), `global_clipnorm` (all
    together) or `clipvalue` (each element), an `IndexedSlices` after summing its
    duplicate ids: the norm and the values are those of the dense gradient. None entries
    stay None; without clipping `grads` is returned as it is.

    `clip_dense`: the Keras optimizer's own clipping, used when no gradient is sparse.
    """
    if not clips(optimizer):
        return grads
    present = [i for i, g in enumerate(grads) if g is not None]
    summed = [summed_slices(grads[i]) if isinstance(grads[i], tf.IndexedSlices) else grads[i] for i in present]
    clipped = dict(zip(present, clip_gradients(optimizer, summed, clip_dense)))
    return [clipped.get(i) for i in range(len(grads))]


class SummedGradientClipping:
    """Mixin placed before a Keras optimizer class: `clipnorm`, `global_clipnorm` and
    `clipvalue` act on the gradient the update uses.

    Keras clips the gradients it is given, before anything is summed: under a
    `tf.distribute` mirroring strategy each replica clips its local share (which the
    trainer has divided by the number of replicas) and the clipped shares are summed
    afterwards, so the threshold meets a gradient 1 / replicas of the true one; and the
    norm of an `IndexedSlices` is taken over its rows as given, one per lookup, so an id
    looked up by n rows of a batch counts with sqrt(n) times its gradient's norm instead
    of the norm of the summed row (1,000 lookups, each with a row of norm 0.02: 0.63 where
    the update sees 20). Here nothing is clipped before the replicas' gradients are
    summed (`_all_reduce_sum_gradients`, Keras' TensorFlow backend); then each
    `IndexedSlices` has its duplicate ids summed and the sum is clipped, on every replica
    alike. The result does not depend on how the batch is laid out or split.
    """

    def _clip_gradients(self, grads):
        # Keras clips here, before the sum over the replicas; see the class docstring.
        return grads

    def _all_reduce_sum_gradients(self, grads_and_vars):
        reduced = list(super()._all_reduce_sum_gradients(grads_and_vars))
        clipped = self.clip_summed_gradients([g for g, _ in reduced])
        return [(g, v) for g, (_, v) in zip(clipped, reduced)]

    def clip_summed_gradients(self, grads):
        """`clip_summed` with this optimizer's settings: `grads` (already summed over the
        replicas) with duplicate ids summed, then clipped."""
        return clip_summed(self, grads, super()._clip_gradients)
