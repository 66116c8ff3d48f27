"""The ids a multi-worker step gathers for the id maps: string ids as bytes and back, and
one worker's replicas in replica order."""

import numpy as np
import tensorflow as tf

from mtlrec.training.distribute.global_ids import _from_bytes, _to_bytes, local_ids


def test_string_ids_travel_as_their_bytes_and_come_back_the_same():
    ids = tf.constant([b"a", "bé".encode(), b"", b"\x00\xff", b"zz"])
    codes, lengths = _to_bytes(ids)
    # "é" is two bytes in UTF-8 (0xc3 0xa9); a NUL and 0xff are bytes like any other
    assert codes.dtype == tf.int32 and codes.numpy().tolist() == [97, 98, 0xC3, 0xA9, 0, 0xFF, 122, 122]
    assert lengths.numpy().tolist() == [1, 3, 0, 2, 2]
    assert _from_bytes(codes, lengths).numpy().tolist() == ids.numpy().tolist()
    # two workers' parts, concatenated as a gather does, give both parts' strings in order
    a, b = _to_bytes(ids[:2]), _to_bytes(ids[2:])
    joined = _from_bytes(tf.concat([a[0], b[0]], 0), tf.concat([a[1], b[1]], 0))
    assert joined.numpy().tolist() == ids.numpy().tolist()


def test_an_empty_share_of_string_ids_is_empty():
    codes, lengths = _to_bytes(tf.constant([], tf.string))
    assert codes.shape == (0,) and lengths.shape == (0,)
    assert _from_bytes(codes, lengths).shape == (0,)


def test_local_ids_of_one_device_are_the_batch_s_ids():
    features = {"item": tf.constant([[3, -1], [4, 5]], tf.int64)}

    def observed(part):
        ids = tf.reshape(part["item"], [-1])
        return {"item": tf.boolean_mask(ids, ids >= 0)}

    out = local_ids(tf.distribute.get_strategy(), features, observed)
    np.testing.assert_array_equal(out["item"].numpy(), [3, 4, 5])
