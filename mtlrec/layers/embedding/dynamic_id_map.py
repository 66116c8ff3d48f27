"""A collision-free id -> row map that admits and evicts ids as a catalogue changes."""

import keras
import numpy as np
import tensorflow as tf

from mtlrec.conventions.arg_checks import check_positive_int
from mtlrec.layers.embedding._id_hashing import hash_ids

#: Value of a map entry: (row or -1 when not admitted, times seen, last day seen).
_ROW, _COUNT, _LAST = 0, 1, 2
#: The day counters, in the order of the `day_counts` weight.
DAY_COUNTS = ("admitted", "evicted", "lookups", "oov_lookups", "overflow_lookups")


@keras.saving.register_keras_serializable(package="mtlrec")
class DynamicIdMap(keras.layers.Layer):
    """Maps raw ids (int64 or string) to rows of an embedding table without collisions.

    Rows `[0, capacity)` belong to admitted ids, one id per row; rows
    `[capacity, capacity + oov_buckets)` are shared, by hash, by every id without a row.

    - `observe(ids)` (the training step, before the forward pass, on the whole global
      batch in data order): each id's count grows by its occurrences; an id whose count
      reaches `min_count` gets a free row (rows freed earlier first, then never-used
      rows), in order of first appearance in the batch. With no row left it stays out
      of vocabulary (counted in `overflow_lookups`).
    - `start_day(day)` (once, before the first step of a day): ids last seen before
      `day - ttl_days` leave the map and free their rows; then, if more ids wait for a
      row than rows are free, the admitted ids seen least often (ties: lowest row) give
      their rows to waiting ids seen more often. Returns the freed rows, in ascending
      order, for the owner to re-initialise them and reset their optimizer slots.
    - `rows(ids)` (any call, serving included) only reads the map.

    Everything depends on the map's contents and the data order only (never on the
    hash table's iteration order), so a run restored from a checkpoint admits exactly
    what an uninterrupted run admits. The map is a `tf.lookup` table tracked by the
    layer: `tf.train.Checkpoint` and SavedModel exports carry it; `.keras` files carry it
    through `save_own_variables`.

    Args:
        key_dtype: "int64" or "string".
        capacity: rows for admitted ids.
        oov_buckets: shared rows for the ids without a row.
        min_count: occurrences (over days) before an id is admitted.
        ttl_days: free the rows of ids not seen for this many days (None: never).
    """

    def __init__(self, key_dtype="int64", capacity=1, oov_buckets=1, min_count=1, ttl_days=None, **kwargs):
        super().__init__(**kwargs)
        if key_dtype not in ("int64", "string"):
            raise ValueError(f"Expected key_dtype to be 'int64' or 'string'. Received: key_dtype={key_dtype!r}")
        self.key_dtype = key_dtype
        self.capacity = check_positive_int("capacity", capacity)
        self.oov_buckets = check_positive_int("oov_buckets", oov_buckets)
        self.min_count = check_positive_int("min_count", min_count)
        self.ttl_days = None if ttl_days is None else check_positive_int("ttl_days", ttl_days)

    def build(self, input_shape=None):
        self.table = tf.lookup.experimental.MutableHashTable(
            key_dtype=tf.as_dtype(self.key_dtype),
            value_dtype=tf.int64,
            default_value=tf.constant([-1, 0, -1], tf.int64),
            name=f"{self.name}_table",
        )
        int_weight = dict(dtype="int64", initializer="zeros", trainable=False)
        self.free_rows = self.add_weight(shape=(self.capacity,), name="free_rows", **int_weight)
        self.free_count = self.add_weight(shape=(), name="free_count", **int_weight)
        self.next_row = self.add_weight(shape=(), name="next_row", **int_weight)
        self.day = self.add_weight(shape=(), name="day", **int_weight)
        self.day_counts = self.add_weight(shape=(len(DAY_COUNTS),), name="day_counts", **int_weight)
        self.built = True

    def _entries(self, ids):
        found = self.table.lookup(ids)
        found.set_shape(ids.shape.concatenate([3]))
        return found

    def rows(self, ids):
        """The row of each id: its own when admitted, else its OOV row."""
        ids = tf.convert_to_tensor(ids)
        own = self._entries(ids)[..., _ROW]
        return tf.where(own >= 0, own, self.capacity + hash_ids(ids, self.oov_buckets))

    def call(self, ids):
        return self.rows(ids)

    def observe(self, ids):
        """Count the ids of one global batch (1-D, data order) and admit those due."""
        ids = tf.reshape(tf.convert_to_tensor(ids), [-1])
        unique, position = tf.unique(ids)
        n = tf.shape(unique)[0]
        seen = tf.math.unsorted_segment_sum(tf.ones_like(position, tf.int64), position, n)
        entry = self._entries(unique)
        row, count = entry[:, _ROW], entry[:, _COUNT] + seen
        want = tf.logical_and(row < 0, count >= self.min_count)
        rank = tf.cumsum(tf.cast(want, tf.int64), exclusive=True)
        free_n = tf.convert_to_tensor(self.free_count)
        fresh_n = self.capacity - tf.convert_to_tensor(self.next_row)
        granted = tf.logical_and(want, rank < free_n + fresh_n)
        recycled = tf.gather(tf.convert_to_tensor(self.free_rows), tf.clip_by_value(free_n - 1 - rank, 0, self.capacity - 1))
        fresh = tf.convert_to_tensor(self.next_row) + rank - free_n
        row = tf.where(granted, tf.where(rank < free_n, recycled, fresh), row)
        n_granted = tf.reduce_sum(tf.cast(granted, tf.int64))
        from_free = tf.minimum(n_granted, free_n)
        day = tf.fill([n], tf.convert_to_tensor(self.day))
        insert = self.table.insert(unique, tf.stack([row, count, day], axis=1))
        with tf.control_dependencies([insert]):
            self.free_count.assign(free_n - from_free)
            self.next_row.assign(self.capacity - fresh_n + n_granted - from_free)
            oov = tf.reduce_sum(tf.where(row < 0, seen, 0))
            overflow = tf.reduce_sum(tf.where(tf.logical_and(want, tf.logical_not(granted)), seen, 0))
            self.day_counts.assign_add(
                tf.stack([n_granted, tf.constant(0, tf.int64), tf.size(ids, tf.int64), oov, overflow])
            )

    def start_day(self, day):
        """Open `day` (an integer day number): expire, evict when full, reset the counters.

        Returns:
            The freed rows (int64, ascending): their embeddings and optimizer slots
            must be reset by the owner of the table before any id reads them.
        """
        day = tf.constant(int(day), tf.int64)
        keys, values = self.table.export()
        row, count, last = values[:, _ROW], values[:, _COUNT], values[:, _LAST]
        keep = tf.ones_like(row, tf.bool)
        if self.ttl_days is not None:
            keep = last >= day - self.ttl_days
            self.table.remove(tf.boolean_mask(keys, tf.logical_not(keep)))
        freed = [tf.boolean_mask(row, tf.logical_and(tf.logical_not(keep), row >= 0))]
        free_space = (
            tf.convert_to_tensor(self.free_count) + tf.size(freed[0], tf.int64)
            + self.capacity - tf.convert_to_tensor(self.next_row)
        )
        waiting = tf.logical_and(keep, tf.logical_and(row < 0, count >= self.min_count))
        waiting_counts = tf.sort(tf.boolean_mask(count, waiting), direction="DESCENDING")
        need = tf.size(waiting_counts, tf.int64) - free_space
        if int(need) > 0:
            admitted = tf.logical_and(keep, row >= 0)
            a_keys, a_rows = tf.boolean_mask(keys, admitted), tf.boolean_mask(row, admitted)
            a_counts, a_last = tf.boolean_mask(count, admitted), tf.boolean_mask(last, admitted)
            by_row = tf.argsort(a_rows)  # ties in count: lowest row first
            order = tf.gather(by_row, tf.argsort(tf.gather(a_counts, by_row), stable=True))
            k = tf.minimum(need, tf.size(order, tf.int64))
            candidates = order[:k]
            # the i-th least frequent admitted id gives way only to a waiting id seen more often
            beaten = tf.gather(a_counts, candidates) < waiting_counts[free_space : free_space + k]
            out = tf.boolean_mask(candidates, beaten)
            out_rows = tf.gather(a_rows, out)
            self.table.insert(
                tf.gather(a_keys, out),
                tf.stack([-tf.ones_like(out_rows), tf.gather(a_counts, out), tf.gather(a_last, out)], axis=1),
            )
            freed.append(out_rows)
        freed = tf.sort(tf.concat(freed, axis=0))
        n = tf.size(freed, tf.int64)
        start = tf.convert_to_tensor(self.free_count)
        if int(n) > 0:
            self.free_rows.assign(
                tf.tensor_scatter_nd_update(tf.convert_to_tensor(self.free_rows), tf.expand_dims(start + tf.range(n), 1), freed)
            )
        self.free_count.assign(start + n)
        self.day.assign(day)
        self.day_counts.assign(tf.constant([0, int(n), 0, 0, 0], tf.int64))
        return freed

    def report(self) -> dict:
        """Rows in use, capacity and the counters of the current day (Python ints)."""
        counts = dict(zip(DAY_COUNTS, (int(v) for v in np.asarray(self.day_counts.numpy()))))
        in_use = int(self.next_row.numpy()) - int(self.free_count.numpy())
        return {"rows_in_use": in_use, "capacity": self.capacity, "ids_tracked": int(self.table.size().numpy()), **counts}

    # ------------------------------------------------------------ .keras files

    def save_own_variables(self, store):
        super().save_own_variables(store)
        keys, values = (t.numpy() for t in self.table.export())
        if self.key_dtype == "string":
            store["key_lengths"] = np.array([len(k) for k in keys], np.int64)
            store["key_bytes"] = np.frombuffer(b"".join(keys), np.uint8).copy()
        else:
            store["keys"] = keys
        store["values"] = values

    def load_own_variables(self, store):
        for i, variable in enumerate(self._trainable_variables + self._non_trainable_variables):
            variable.assign(store[f"{i}"])
        if self.key_dtype == "string":
            data = np.asarray(store["key_bytes"]).tobytes()
            ends = np.cumsum(np.asarray(store["key_lengths"]))
            keys = np.array([data[e - n : e] for e, n in zip(ends, np.asarray(store["key_lengths"]))], dtype=object)
        else:
            keys = np.asarray(store["keys"])
        self.table.remove(self.table.export()[0])
        keys = tf.constant(keys, dtype=tf.as_dtype(self.key_dtype), shape=[len(keys)])
        self.table.insert(keys, tf.constant(np.asarray(store["values"]).reshape(-1, 3), tf.int64))

    def get_config(self):
        config = super().get_config()
        config.update(
            key_dtype=self.key_dtype,
            capacity=self.capacity,
            oov_buckets=self.oov_buckets,
            min_count=self.min_count,
            ttl_days=self.ttl_days,
        )
        return config
