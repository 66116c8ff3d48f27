"""Adam that updates only the embedding rows present in the batch."""

import keras
import tensorflow as tf

from mtlrec.optimizers._sparse import LazyRowUpdates
from mtlrec.optimizers._sparse import check_range
from mtlrec.optimizers._sparse import refuse_gradient_accumulation
from mtlrec.sparse_reads import gather_rows


@keras.saving.register_keras_serializable(package="mtlrec")
class LazyAdam(LazyRowUpdates, keras.optimizers.Adam):
    """Adam with lazy (row-sparse) updates for `tf.IndexedSlices` gradients.

    An embedding lookup yields a gradient for the looked-up rows only
    (`tf.IndexedSlices`). Keras' `Adam` densifies it and rewrites the whole
    table and both moment slots every step; `LazyAdam` sums duplicate ids,
    then reads, updates and writes back only those rows:

        g   = sum of the gradient rows for each unique id
        m_r <- m_r + (1 - beta_1) (g - m_r)
        v_r <- v_r + (1 - beta_2) (g^2 - v_r)
        t   = optimizer.iterations + 1            (the global step)
        w_r <- w_r - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m_r / (sqrt(v_r) + eps)

    How this differs from dense Adam (where every row sees a zero gradient on
    the steps it is absent):
    - the moments of rows absent from a batch do not decay, and those rows
      do not move (dense Adam keeps moving them with their decaying momentum);
    - the bias correction uses the global step `t`, not the number of times the
      row was seen. A row first seen late in training (`t` large, corrections
      near 1) moves by about `lr (1 - beta_1) / sqrt(1 - beta_2)`, 3.2 `lr` with
      the defaults, where Adam's first step on that row alone would be `lr`:
      both its moments are still biased towards zero, the second one more.
    When every row is in every batch the two are the same algorithm.

    Dense gradients (every non-embedding variable) take the stock `Adam`
    update, bit for bit. `weight_decay` is decoupled as in Keras, applied to
    the touched rows only for sparse gradients. Slots are named as in `Adam`
    (`momentum`, `velocity`), so checkpoints hold the same variables.

    The gain needs a lookup that reads only the looked-up rows
    (`tf.gather` on the table's `tf.Variable`). `keras.ops.take` on the table,
    as in `keras.layers.Embedding`, reads it whole: after a sparse update
    TensorFlow then copies the whole table on every such read.

    Args: those of `keras.optimizers.Adam`; `gradient_accumulation_steps` is
    not supported (its accumulators would be dense tables).
    """

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
        **kwargs,
    ):
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

    def _row_step(self, values, ids, variable, lr):
        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1_power = tf.pow(tf.cast(self.beta_1, dtype), local_step)
        beta_2_power = tf.pow(tf.cast(self.beta_2, dtype), local_step)
        alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)

        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        m_rows = gather_rows(m, ids)
        v_rows = gather_rows(v, ids)
        # Same operation order as keras' Adam, so a row updated every step
        # gets exactly the dense result.
        m_rows = m_rows + (values - m_rows) * (1 - self.beta_1)
        v_rows = v_rows + (tf.square(values) - v_rows) * (1 - self.beta_2)
        self.assign(m, tf.IndexedSlices(m_rows, ids))
        self.assign(v, tf.IndexedSlices(v_rows, ids))
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            v_rows = tf.maximum(gather_rows(v_hat, ids), v_rows)
            self.assign(v_hat, tf.IndexedSlices(v_rows, ids))

        return (m_rows * alpha) / (tf.sqrt(v_rows) + self.epsilon)
