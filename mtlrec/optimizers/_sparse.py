"""Helpers shared by the lazy (row-sparse) optimizers."""

import keras
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


def tf_variable(variable):
    """The `tf.Variable` (possibly a distributed one) behind a Keras variable."""
    if isinstance(variable, keras.Variable):
        return variable.value
    return variable


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


def decay_dense(optimizer, variable):
    """Keras' decoupled weight decay, `w <- w - w * wd * lr`, on a whole variable."""
    if optimizer.weight_decay is not None and optimizer._use_weight_decay(variable):
        lr = tf.cast(optimizer.learning_rate, variable.dtype)
        wd = tf.cast(optimizer.weight_decay, variable.dtype)
        variable.assign_sub(variable * wd * lr)


def decay_rows(optimizer, variable, ids, lr):
    """The decay term `w_r * wd * lr` for rows `ids`, or None without decay."""
    if optimizer.weight_decay is None or not optimizer._use_weight_decay(variable):
        return None
    wd = tf.cast(optimizer.weight_decay, variable.dtype)
    return tf.gather(variable, ids) * wd * lr


def check_range(name, value, low, high=None, low_inclusive=True):
    """Raises `ValueError` unless `value` is a real number in the range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = value >= low if low_inclusive else value > low
        if ok and high is not None:
            ok = value < high
    if not ok:
        bound = f"{'[' if low_inclusive else '('}{low}, {high if high is not None else 'inf'})"
        raise ValueError(
            f"Expected {name} to be a number in {bound}. Received: {name}={value!r}"
        )
