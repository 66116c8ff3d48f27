"""Adam that updates only the embedding rows present in the batch."""

import keras
import tensorflow as tf

from mtlrec.optimizers._sparse import LazyRowUpdates
from mtlrec.optimizers._sparse import check_range
from mtlrec.optimizers._sparse import refuse_gradient_accumulation
from mtlrec.optimizers.row_steps import last_steps
from mtlrec.optimizers.row_steps import stamped
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
    on the following steps while the moment decays by `beta_1` and, on the steps
    the row is absent, its second moment by `beta_2`; when nothing touches the
    row again, those moves sum to `k = (1 - beta_1) / (1 - beta_1 / sqrt(beta_2))`
    (1.0045 with the defaults) times the first step over `(1 - beta_1)`. Since
    nothing else can touch the row before its next lookup, that whole decaying
    future is applied at once, and the second moment is decayed over the steps
    the row was absent (`s`: the step of its previous lookup):

        v_r <- beta_2^(t - s) v_r + (1 - beta_2) g^2
        w_r <- w_r - lr sqrt(1 - beta_2^t) k g / (sqrt(v_r) + eps)

    No first moment is kept for the rows: the `momentum` slot holds, in every
    column of a row, the step `s` of its last lookup (`mtlrec.optimizers.row_steps`).
    A row with no step there (never looked up, reset, or restored from a
    checkpoint written before the slot held steps, whose `momentum` slot is zero)
    is updated without decay of `v_r` (`t - s` taken as 1) and gets its step.

    What is matched and what is not, against dense Adam on the same gradients
    (`benchmarks/sparse_row_displacement.py --gaps`: one row given the gradient
    1.0 every `gap` steps, 25 times, its distance read where the next lookup
    would be):

    - `v_r` at a lookup is dense Adam's exactly (the `beta_2` decay over the
      absent steps included).
    - A row absent until its gradient's momentum has died out (about 50 steps)
      moves by dense Adam's distance, only earlier: at the lookup instead of over
      the following steps. Gaps of 100 to 10,000 steps: 0.97-1.00 of dense Adam
      (before `v_r` decayed: 0.75 at 100 steps, 0.32 at 10,000).
    - A row looked up again sooner moves a little less or more: dense Adam moves
      the rest of the earlier gradient's momentum with the `v` of the new lookup
      (gap 1: 1.00; gap 10: 0.93 from step 1, 1.06 from step 5,001).
    - The bias correction is that of the lookup's step `t` for the gradient's
      whole future. For a row looked up on consecutive steps this is what dense
      Adam does (its growing `v` cancels the growing correction); a row looked up
      once in the first ~100 steps of a run moves farther under dense Adam (6x at
      `t = 1`, 1.6x at `t = 10`, 1.04x at `t = 100`). Each future step's own
      correction would instead move a row looked up on every step 1.9x as far as
      dense Adam over its first 25 steps.
    - A row new late in a run (`v_r = 0`) and then looked up on consecutive
      steps moves farther than under dense Adam while its `v_r` builds up: each
      gradient's future is applied with the small `v` of its lookup, where
      dense Adam's grows with the next gradients (1.8x dense Adam's distance
      over its first 25 lookups, from step 5,001). This was so before too.

    `beta_1` must be below `sqrt(beta_2)` (else the momentum's future steps
    do not shrink and `k` has no value).

    `row_momentum="per_lookup"` is the usual lazy Adam (TF Addons' `LazyAdam`,
    PyTorch's `SparseAdam`): a row's moments advance only when it is looked up,

        m_r <- m_r + (1 - beta_1) (g - m_r)
        v_r <- v_r + (1 - beta_2) (g^2 - v_r)
        w_r <- w_r - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m_r / (sqrt(v_r) + eps)

    so a gradient is spread over the row's next ~1 / (1 - beta_1) lookups
    instead of its next ~10 steps: a row looked up 6 times in 600 steps moves
    about a third as far as under dense Adam, a row looked up twice a sixth
    (`benchmarks/sparse_row_displacement.py`; docs/results/optimizers.md). When every
    row is in every batch, `per_lookup` is exactly dense Adam. A row whose
    `momentum` holds a step written by `per_step` (a run resumed with the other
    mode) starts its first moment from zero rather than from that step.

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
        if row_momentum == "per_step" and not beta_1 < beta_2**0.5:
            raise ValueError(
                "row_momentum='per_step' applies the sum of a gradient's future momentum "
                "steps, which is finite only for beta_1 < sqrt(beta_2). Received: "
                f"beta_1={beta_1!r}, beta_2={beta_2!r}"
            )
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
        m = slots["momentum"]
        v = slots["velocity"]
        v_rows = gather_rows(v, ids)
        if self.row_momentum == "per_step":
            momentum_sum = (1 - beta_1) / (1 - beta_1 / tf.sqrt(beta_2))
            alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) * momentum_sum
            first = values
            last = last_steps(gather_rows(m, ids), step)
            # Dense Adam's decay of v over the steps the row was absent; the update
            # below is the decay of its own step.
            absent = tf.where(last > 0, step - last - 1, tf.zeros_like(last))
            v_rows = v_rows * tf.pow(beta_2, absent)
            self.assign(m, tf.IndexedSlices(stamped(values, step), ids))
        else:
            alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
            first = gather_rows(m, ids)
            first = tf.where(last_steps(first, step) > 0, tf.zeros_like(first), first)
            # Same operation order as keras' Adam, so a row updated every step
            # gets exactly the dense result.
            first = first + (values - first) * (1 - self.beta_1)
            self.assign(m, tf.IndexedSlices(first, ids))
        v_rows = v_rows + (tf.square(values) - v_rows) * (1 - self.beta_2)
        self.assign(v, tf.IndexedSlices(v_rows, ids))
        if self.amsgrad:
            v_hat = slots["velocity_hat"]
            v_rows = tf.maximum(gather_rows(v_hat, ids), v_rows)
            self.assign(v_hat, tf.IndexedSlices(v_rows, ids))
        return (first * alpha) / (tf.sqrt(v_rows) + self.epsilon)
