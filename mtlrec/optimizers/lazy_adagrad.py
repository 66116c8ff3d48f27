"""Adagrad that updates only the embedding rows present in the batch."""

import keras
import tensorflow as tf

from mtlrec.optimizers._sparse import LazyRowUpdates
from mtlrec.optimizers._sparse import check_range
from mtlrec.optimizers._sparse import refuse_gradient_accumulation
from mtlrec.layers.embedding.sparse_reads import gather_rows


@keras.saving.register_keras_serializable(package="mtlrec")
class LazyAdagrad(LazyRowUpdates, keras.optimizers.Adagrad):
    """Adagrad with row-sparse updates for `tf.IndexedSlices` gradients.

    For an embedding gradient, duplicate ids are summed first, then only the
    touched rows of the table and of the accumulator are read and written:

        g   = sum of the gradient rows for each unique id
        a_r <- a_r + g^2
        w_r <- w_r - lr g / sqrt(a_r + eps)

    Adagrad has no decay, so for the rows a batch touches this is exactly the
    dense algorithm, and an absent row's dense update (zero gradient) would
    change nothing either: lazy and dense Adagrad agree everywhere. The only
    gain is the cost, which no longer grows with the table size.

    Dense gradients take the stock `Adagrad` update, bit for bit.
    `weight_decay` (decoupled, as in Keras) is applied to the touched rows only
    for sparse gradients: there the two do differ.

    As for `LazyAdam`, the lookup must read only the looked-up rows
    (`tf.gather` on the variable), not the whole table (`keras.ops.take`).

    Args: those of `keras.optimizers.Adagrad`; `gradient_accumulation_steps`
    is not supported (its accumulators would be dense tables).
    """

    def __init__(
        self,
        learning_rate=0.001,
        initial_accumulator_value=0.1,
        epsilon=1e-7,
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
        check_range("initial_accumulator_value", initial_accumulator_value, 0.0)
        check_range("epsilon", epsilon, 0.0)
        refuse_gradient_accumulation("LazyAdagrad", gradient_accumulation_steps)
        super().__init__(
            learning_rate=learning_rate,
            initial_accumulator_value=initial_accumulator_value,
            epsilon=epsilon,
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

    SLOTS = {"accumulator": "_accumulators"}

    def slot_initial_value(self, name):
        return self.initial_accumulator_value

    def _row_step(self, values, ids, lr, slots):
        accumulator = slots["accumulator"]
        acc_rows = gather_rows(accumulator, ids) + tf.square(values)
        self.assign(accumulator, tf.IndexedSlices(acc_rows, ids))
        return (lr * values) / tf.sqrt(acc_rows + self.epsilon)
