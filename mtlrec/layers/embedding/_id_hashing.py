"""The hash of an id into a fixed number of buckets (shared by every lookup kind)."""

import tensorflow as tf


def hash_ids(ids, num_buckets):
    """Bucket of each id in [0, num_buckets): FarmHash Fingerprint64 of the id's string form.

    Integers are hashed through their decimal string, so `123` and `"123"` share a bucket.
    The result depends only on the id and `num_buckets` (not on the process, seed or
    platform), which keeps exported models and later training days consistent.
    """
    ids = tf.convert_to_tensor(ids)
    if ids.dtype != tf.string:
        ids = tf.strings.as_string(ids)
    return tf.strings.to_hash_bucket_fast(ids, num_buckets)
