"""Each ps task draws its own rows of an embedding table (``shard_initial_value``), instead of
the strategy building the whole table on the chief and sending each ps its slice."""

import keras
import numpy as np
import tensorflow as tf

from mtlrec.training.distribute.parameter_server import TablePartitioner, shard_initial_value


def _created(name, seed, shape=(10, 4)):
    """The kwargs a variable creator under ``TablePartitioner.tables_sharded`` hands on for
    a Keras variable ``name`` (what ``ParameterServerStrategy``'s own creator receives)."""
    seen = {}

    def capture(next_creator, **kwargs):
        seen.update(kwargs)
        return next_creator(**kwargs)

    with tf.variable_creator_scope(capture), TablePartitioner(2).tables_sharded():
        variable = keras.Variable(
            initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed), shape=shape, name=name
        )
    return seen, variable


def test_a_table_gets_its_shape_and_an_initial_value_that_draws_one_shard():
    seen, variable = _created("embedding_user_id", seed=3)
    assert seen["shape"] == (10, 4)  # without it the strategy would build the value on the chief
    initial = seen["initial_value"]
    np.testing.assert_array_equal(np.asarray(initial()), variable.numpy())  # unsharded: the usual table

    first = np.asarray(initial(partition_shape=(5, 4), partition_offset=(0, 0)))
    second = np.asarray(initial(partition_shape=(5, 4), partition_offset=(5, 0)))
    assert first.shape == second.shape == (5, 4)
    assert np.abs(np.concatenate([first, second])).max() <= 0.05
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, np.asarray(initial(partition_shape=(5, 4), partition_offset=(0, 0))))

    other_seed, _ = _created("embedding_user_id", seed=4)
    assert not np.array_equal(
        first, np.asarray(other_seed["initial_value"](partition_shape=(5, 4), partition_offset=(0, 0)))
    )


def test_other_variables_and_other_initial_values_are_left_as_they_are():
    seen, _ = _created("dense_kernel", seed=3)
    assert seen["shape"] is None and set(seen["initial_value"].__code__.co_freevars) == {"initializer", "self"}
    assert shard_initial_value(lambda: tf.zeros((3, 2))) == {}
    assert shard_initial_value(tf.zeros((3, 2))) == {}
