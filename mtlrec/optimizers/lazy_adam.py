"""Adam that updates only the embedding rows present in the batch."""

import keras
import tensorflow as tf

from mtlrec.optimizers._sparse import LazyRowUpdates
from mtlrec.optimizers._sparse import check_range
from mtlrec.optimizers._sparse import refuse_gradient_accumulation
from mtlrec.layers.embedding.sparse_reads import gather_rows

#: How a table row's first moment advances: over the global steps, applied ahead
#: at the lookup (dense Adam's pace), or only on the row's own lookups.
ROW_MOMENTUM = ("per_step", "per_lookup")


@keras.saving.register_keras_serializable(package="mtlrec")
class LazyAdam(LazyRowUpdates, keras.optimizers.Adam):
    """Adam with lazy (row-sparse) updates for `tf.IndexedSlices` gradients.

    An embedding lookup yields a gradient for the looked-up rows only
    (`tf.IndexedSlices`). Keras' `Adam` densifies it and rewrites the whole
    table and both moment slots every step; `LazyAdam` sums duplicate ids,
    then reads, updates and writes back only those rows. `t` is the global
    step (`optimizer.iterations + 1`) and `g` the summed gradient of a row.

    `row_momentum="per_step"` (the default) keeps dense Adam's pace on rows
    that few batches touch. In dense Adam a gradient `g` that reaches a row at
    step `t` enters its first moment as `(1 - beta_1) g` and keeps moving the row
    on the following steps while the moment decays; when nothing touches the
    row again, those moves sum to `(1 - beta_1) / (1 - beta_1 / sqrt(beta_2))`
    (1.0045 with the defaults) times the first step over `(1 - beta_1)`. Since
    nothing else can touch the row before its next lookup, that whole decaying
    future is applied at once:

        v_r <- v_r + (1 - beta_2) (g^2 - v_r)
        w_r <- w_r - lr sqrt(1 - beta_2^t) k g / (sqrt(v_r) + eps),
                     k = (1 - beta_1) / (1 - beta_1 / sqrt(beta_2))

    No first moment is kept for the rows (the `momentum` slot stays zero). The
    approximations against dense Adam: `v_r` does not decay while the row is
    absent (`beta_2^n` for `n` absent steps: within a day's few hundred steps
    it changes `sqrt(v_r)` by less than 25%), and the bias correction and `v_r`
    of the step of the lookup are used for the whole future of that gradient.

    `row_momentum="per_lookup"` is the usual lazy Adam (TF Addons' `LazyAdam`,
    PyTorch's `SparseAdam`): a row's moments advance only when it is looked up,

        m_r <- m_r + (1 - beta_1) (g - m_r)
        v_r <- v_r + (1 - beta_2) (g^2 - v_r)
        w_r <- w_r - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m_r / (sqrt(v_r) + eps)

    so a gradient is spread over the row's next ~1 / (1 - beta_1) lookups
    instead of its next ~10 steps: a row looked up 6 times in 600 steps moves
    about a third as far as under dense Adam, a row looked up twice a sixth
    (`benchmarks/sparse_row_displacement.py`; docs/results/optimizers.md). When every
    row is in every batch, `per_lookup` is exactly dense Adam.

    Dense gradients (every non-embedding variable) take the stock `Adam`
    update, bit for bit, in both modes. `weight_decay` is decoupled as in
    Keras, applied to the touched rows only for sparse gradients. Slots are
    named as in `Adam` (`momentum`, `velocity`), so checkpoints hold the same
    variables in both modes.

    The gain needs a lookup that reads only the looked-up rows
    (`tf.gather` on the table's `tf.Variable`). `keras.ops.take` on the table,
    as in `keras.layers.Embedding`, reads it whole: after a sparse update
    TensorFlow then copies the whole table on every such read.

    Args: those of `keras.optimizers.Adam`, and `row_momentum` ("per_step" or
    "per_lookup", above); `gradient_accumulation_steps` is not supported (its
    accumulators would be dense tables).
    """

    #: The arguments with a fixed set of values (checked by `optimizer_arguments`
    #: without building the optimizer).
    ARGUMENT_CHOICES = {"row_momentum": ROW_MOMENTUM}

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        row_momentum="per_step",
        **kwargs,
    ):
        if row_momentum not in ROW_MOMENTUM:
            raise ValueError(
                f"Expected row_momentum to be one of {list(ROW_MOMENTUM)}. "
                f"Received: row_momentum={row_momentum!r}"
            )
        check_range("beta_1", beta_1, 0.0, 1.0)
        check_range("beta_2", beta_2, 0.0, 1.0)
        check_range("epsilon", epsilon, 0.0)
        refuse_gradient_accumulation("LazyAdam", gradient_accumulation_steps)
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
            **kwargs,
        )
        self.row_momentum = row_momentum

    def get_config(self):
        return {**super().get_config(), "row_momentum": self.row_momentum}

    SLOTS = {"momentum": "_momentums", "velocity": "_velocities", "velocity_hat": "_velocity_hats"}

    def _keeps_slot(self, name):
        return name != "velocity_hat" or self.amsgrad

    def _row_step(self, values, ids, lr, slots):
        dtype = values.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        if self.row_momentum == "per_step":
            momentum_sum = (1 - beta_1) / (1 - beta_1 / tf.sqrt(beta_2))
            alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) * momentum_sum
            first = values
        else:
            alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
            m = slots["momentum"]
            # Same operation order as keras' Adam, so a row updated every step
            # gets exactly the dense result.
            first = gather_rows(m, ids)
            first = first + (values - first) * (1 - self.beta_1)
            self.assign(m, tf.IndexedSlices(first, ids))
        v = slots["velocity"]
        v_rows = gather_rows(v, ids)
        v_rows = v_rows + (tf.square(values) - v_rows) * (1 - self.beta_2)
        self.assign(v, tf.IndexedSlices(v_rows, ids))
        if self.amsgrad:
            v_hat = slots["velocity_hat"]
            v_rows = tf.maximum(gather_rows(v_hat, ids), v_rows)
            self.assign(v_hat, tf.IndexedSlices(v_rows, ids))
        return (first * alpha) / (tf.sqrt(v_rows) + self.epsilon)
