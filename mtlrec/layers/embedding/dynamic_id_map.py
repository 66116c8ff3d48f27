"""A collision-free id -> row map that admits and evicts ids as a catalogue changes."""

import functools

import keras
import numpy as np
import tensorflow as tf

from mtlrec.conventions.arg_checks import check_positive_int
from mtlrec.layers.embedding._id_hashing import hash_ids
from mtlrec.schema import COUNT_HALF_LIFE_DAYS

#: Value of a map entry: (row or -1 when not admitted, times seen, last day seen).
_ROW, _COUNT, _LAST = 0, 1, 2
#: The day counters, in the order of the `day_counts` weight.
DAY_COUNTS = ("admitted", "evicted", "lookups", "oov_lookups", "overflow_lookups")
#: Variables a map holds since its counts age and its waiting ids are bounded: files
#: written before lack them (see `older_state`).
ADDED_VARIABLES = ("ids_dropped",)
#: Fingerprints of ids (ties in count and last day) range over [0, 2^62).
_FINGERPRINT_RANGE = 2**62
#: Where the map lives and computes: the host. `tf.lookup` tables have no GPU kernels, the
#: ids arrive from the input pipeline on the host, and the bookkeeping is many small
#: int64 ops; only the rows go on to the table's device. A device type without a job or
#: task, so it stays inside a worker's own device scope.
HOST = "/CPU:0"


def _on_host(method):
    @functools.wraps(method)
    def on_host(self, *args, **kwargs):
        with tf.device(HOST):
            return method(self, *args, **kwargs)

    return on_host


@keras.saving.register_keras_serializable(package="mtlrec")
class DynamicIdMap(keras.layers.Layer):
    """Maps raw ids (int64 or string) to rows of an embedding table without collisions.

    Rows `[0, capacity)` belong to admitted ids, one id per row; rows
    `[capacity, capacity + oov_buckets)` are shared, by hash, by every id without a row.

    - `observe(ids)` (the training step, before the forward pass, on the whole global
      batch in data order): each id's count grows by its occurrences; an id whose count
      reaches `min_count` gets a free row (rows freed earlier first, then never-used
      rows), in order of first appearance in the batch. With no row left it waits, out
      of vocabulary (counted in `overflow_lookups`).
    - `start_day(day)` (once, before the first step of a day):
        1. ids last seen before `day - ttl_days` leave the map and free their rows;
        2. counts age: `count ← count >> k` (integer halving), `k` the day numbers
           `d` in (previous day opened, day] with `d % count_half_life_days == 0`
           (none on the first day opened), so a count `n` days old weighs about
           `2^(-n / count_half_life_days)` and an id gone quiet loses to active ones;
        3. the waiting ids (not admitted, count >= `min_count`), most counted first
           (ties: seen later first, then by a fingerprint of the id), take the free
           rows; if more wait than rows are free, the admitted ids counted least
           (ties: lowest row) give their rows to waiting ids counted strictly more,
           the i-th least counted to the i-th waiting id without a free row. The
           rows go to those waiting ids now, not to whichever id comes first;
        4. ids without a row whose count aged to 0, then the least counted of the
           others beyond `max_waiting` (same order), leave the map (`ids_dropped`).
      Returns the freed rows (expired and evicted), in ascending order, for the owner
      to re-initialise them and reset their optimizer slots.
    - During a day, once more than `2 * max_waiting` ids wait, `observe` drops the least
      counted down to `max_waiting`: the map tracks at most `capacity + 2 * max_waiting`
      ids after any step (one sort of the map per `max_waiting` new ids at most).
    - `rows(ids)` (any call, serving included) only reads the map.

    Everything depends on the map's contents and the data order only (never on the
    hash table's iteration order), so a run restored from a checkpoint admits exactly
    what an uninterrupted run admits. The map is a `tf.lookup` table tracked by the
    layer: `tf.train.Checkpoint` and SavedModel exports carry it; `.keras` files carry it
    through `save_own_variables`. Files written before the map held `ids_dropped`
    (`ADDED_VARIABLES`) load too (`older_state`, `mtlrec.training.run.trainer_checkpoint`).

    Args:
        key_dtype: "int64" or "string".
        capacity: rows for admitted ids.
        oov_buckets: shared rows for the ids without a row.
        min_count: occurrences (over days, aged) before an id is admitted.
        ttl_days: free the rows of ids not seen for this many days (None: never).
        count_half_life_days: counts halve every this many days (see above).
        max_waiting: ids tracked without a row (None: `capacity`).
    """

    def __init__(
        self, key_dtype="int64", capacity=1, oov_buckets=1, min_count=1, ttl_days=None,
        count_half_life_days=COUNT_HALF_LIFE_DAYS, max_waiting=None, **kwargs,
    ):
        super().__init__(**kwargs)
        if key_dtype not in ("int64", "string"):
            raise ValueError(f"Expected key_dtype to be 'int64' or 'string'. Received: key_dtype={key_dtype!r}")
        self.key_dtype = key_dtype
        self.capacity = check_positive_int("capacity", capacity)
        self.oov_buckets = check_positive_int("oov_buckets", oov_buckets)
        self.min_count = check_positive_int("min_count", min_count)
        self.ttl_days = None if ttl_days is None else check_positive_int("ttl_days", ttl_days)
        self.count_half_life_days = check_positive_int("count_half_life_days", count_half_life_days)
        self.max_waiting = self.capacity if max_waiting is None else check_positive_int("max_waiting", max_waiting)

    @_on_host
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
        # the ids dropped from the map since the day began (the last variable: see ADDED_VARIABLES)
        self.ids_dropped = self.add_weight(shape=(), name="ids_dropped", **int_weight)
        self.built = True

    def _entries(self, ids):
        found = self.table.lookup(ids)
        found.set_shape(ids.shape.concatenate([3]))
        return found

    @_on_host
    def rows(self, ids):
        """The row of each id: its own when admitted, else its OOV row."""
        ids = tf.convert_to_tensor(ids)
        own = self._entries(ids)[..., _ROW]
        return tf.where(own >= 0, own, self.capacity + hash_ids(ids, self.oov_buckets))

    def call(self, ids):
        return self.rows(ids)

    def _in_use(self):
        return tf.convert_to_tensor(self.next_row) - tf.convert_to_tensor(self.free_count)

    def _handed_out(self, rank):
        """The rows for requests ranked 0, 1, ...: freed rows from the top of the stack,
        then never-used rows (only ranks below the rows left are valid)."""
        free_n = tf.convert_to_tensor(self.free_count)
        recycled = tf.gather(tf.convert_to_tensor(self.free_rows), tf.clip_by_value(free_n - 1 - rank, 0, self.capacity - 1))
        fresh = tf.convert_to_tensor(self.next_row) + rank - free_n
        return tf.where(rank < free_n, recycled, fresh)

    def _take(self, n):
        """Record that the first `n` rows of `_handed_out` are in use."""
        free_n = tf.convert_to_tensor(self.free_count)
        from_free = tf.minimum(n, free_n)
        next_row = tf.convert_to_tensor(self.next_row)
        return tf.group(self.free_count.assign(free_n - from_free), self.next_row.assign(next_row + n - from_free))

    @_on_host
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
        rows_left = tf.convert_to_tensor(self.free_count) + self.capacity - tf.convert_to_tensor(self.next_row)
        granted = tf.logical_and(want, rank < rows_left)
        row = tf.where(granted, self._handed_out(rank), row)
        n_granted = tf.reduce_sum(tf.cast(granted, tf.int64))
        day = tf.fill([n], tf.convert_to_tensor(self.day))
        insert = self.table.insert(unique, tf.stack([row, count, day], axis=1))
        with tf.control_dependencies([insert]):
            taken = self._take(n_granted)
        with tf.control_dependencies([taken]):
            oov = tf.reduce_sum(tf.where(row < 0, seen, 0))
            overflow = tf.reduce_sum(tf.where(tf.logical_and(want, tf.logical_not(granted)), seen, 0))
            counted = self.day_counts.assign_add(
                tf.stack([n_granted, tf.constant(0, tf.int64), tf.size(ids, tf.int64), oov, overflow])
            )
            waiting = self.table.size() - self._in_use()
        with tf.control_dependencies([counted]):
            dropped = tf.cond(
                waiting > 2 * self.max_waiting,
                lambda: self._drop_waiting(self.max_waiting),
                lambda: tf.constant(0, tf.int64),
            )
            self.ids_dropped.assign_add(dropped)

    def _drop_waiting(self, keep, also=None):
        """Remove from the map the ids without a row beyond the `keep` counted most
        (`_priority` order), and those of them where `also` (a mask over the exported
        entries) holds; returns how many left."""
        keys, values = self.table.export()
        keys.set_shape([None])  # unknown in a traced step
        values.set_shape([None, 3])
        waiting = values[:, _ROW] < 0
        if also is not None:
            gone = tf.logical_and(waiting, also(values))
            waiting = tf.logical_and(waiting, tf.logical_not(gone))
        else:
            gone = tf.zeros_like(waiting)
        w_keys, w_values = tf.boolean_mask(keys, waiting), tf.boolean_mask(values, waiting)
        order = _priority(w_keys, w_values[:, _COUNT], w_values[:, _LAST])
        out = tf.concat([tf.boolean_mask(keys, gone), tf.gather(w_keys, order[keep:])], axis=0)
        with tf.control_dependencies([self.table.remove(out)]):
            return tf.size(out, tf.int64)

    def _halvings(self, previous, day):
        """How often counts halve on opening `day` after `previous` (0: no day yet)."""
        if previous <= 0 or day <= previous:
            return 0
        h = self.count_half_life_days
        return min(day // h - previous // h, 63)

    @_on_host
    def start_day(self, day):
        """Open `day` (an integer day number): expire, age, evict when full, bound what
        waits, reset the counters.

        Returns:
            The freed rows (int64, ascending): their embeddings and optimizer slots
            must be reset by the owner of the table before any id reads them.
        """
        day = int(day)
        halvings = self._halvings(int(self.day.numpy()), day)
        keys, values = self.table.export()
        row, count, last = values[:, _ROW], values[:, _COUNT], values[:, _LAST]
        keep = tf.ones_like(row, tf.bool)
        if self.ttl_days is not None:
            keep = last >= day - self.ttl_days
            self.table.remove(tf.boolean_mask(keys, tf.logical_not(keep)))
        freed = [tf.boolean_mask(row, tf.logical_and(tf.logical_not(keep), row >= 0))]
        keys, row, count, last = (tf.boolean_mask(t, keep) for t in (keys, row, count, last))
        count = tf.bitwise.right_shift(count, tf.constant(halvings, tf.int64))
        free_space = (
            tf.convert_to_tensor(self.free_count) + tf.size(freed[0], tf.int64)
            + self.capacity - tf.convert_to_tensor(self.next_row)
        )
        waiting = tf.where(tf.logical_and(row < 0, count >= self.min_count))[:, 0]
        waiting = tf.gather(waiting, _priority(tf.gather(keys, waiting), tf.gather(count, waiting), tf.gather(last, waiting)))
        waiting_counts = tf.gather(count, waiting)
        need = tf.size(waiting, tf.int64) - free_space
        if int(need) > 0:
            admitted = tf.where(row >= 0)[:, 0]
            by_row = tf.gather(admitted, tf.argsort(tf.gather(row, admitted)))  # ties in count: lowest row first
            order = tf.gather(by_row, tf.argsort(tf.gather(count, by_row), stable=True))
            k = tf.minimum(need, tf.size(order, tf.int64))
            candidates = order[:k]
            # the i-th least counted admitted id gives way only to a waiting id counted more
            beaten = tf.gather(count, candidates) < waiting_counts[free_space : free_space + k]
            out = tf.boolean_mask(candidates, beaten)
            freed.append(tf.gather(row, out))
            row = tf.tensor_scatter_nd_update(row, out[:, None], -tf.ones_like(out))
        freed = tf.sort(tf.concat(freed, axis=0))
        n = tf.size(freed, tf.int64)
        start = tf.convert_to_tensor(self.free_count)
        if int(n) > 0:
            self.free_rows.assign(
                tf.tensor_scatter_nd_update(tf.convert_to_tensor(self.free_rows), tf.expand_dims(start + tf.range(n), 1), freed)
            )
        self.free_count.assign(start + n)
        # the free rows go to the waiting ids now, so each freed row goes to the id it was freed for
        rows_left = tf.convert_to_tensor(self.free_count) + self.capacity - tf.convert_to_tensor(self.next_row)
        n_granted = tf.minimum(tf.size(waiting, tf.int64), rows_left)
        grantees = waiting[:n_granted]
        row = tf.tensor_scatter_nd_update(row, grantees[:, None], self._handed_out(tf.range(n_granted)))
        self._take(n_granted)
        self.table.insert(keys, tf.stack([row, count, last], axis=1))
        dropped = self._drop_waiting(self.max_waiting, also=lambda values: values[:, _COUNT] <= 0)
        self.day.assign(day)
        self.day_counts.assign(tf.concat([tf.stack([n_granted, n]), tf.zeros([len(DAY_COUNTS) - 2], tf.int64)], 0))
        self.ids_dropped.assign(dropped)
        return freed

    def report(self) -> dict:
        """Rows in use, capacity, ids tracked (`ids_waiting` of them without a row) and the
        counters of the current day, `ids_dropped` included (Python ints)."""
        counts = dict(zip(DAY_COUNTS, (int(v) for v in np.asarray(self.day_counts.numpy()))))
        in_use = int(self._in_use().numpy())
        tracked = int(self.table.size().numpy())
        return {
            "rows_in_use": in_use, "capacity": self.capacity, "ids_tracked": tracked,
            "ids_waiting": tracked - in_use, **counts, "ids_dropped": int(self.ids_dropped.numpy()),
        }

    def added_variables(self) -> list:
        """The variables of `ADDED_VARIABLES`."""
        return [getattr(self, name) for name in ADDED_VARIABLES]

    def older_state(self) -> tf.train.Checkpoint:
        """The map's state as files written before `ADDED_VARIABLES` hold it (same names),
        for reading such a checkpoint; the added variables keep their initial values."""
        names = ("table", "free_rows", "free_count", "next_row", "day", "day_counts")
        return tf.train.Checkpoint(**{name: getattr(self, name) for name in names})

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
            if f"{i}" in store:  # files written before ADDED_VARIABLES lack them
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
            count_half_life_days=self.count_half_life_days,
            max_waiting=self.max_waiting,
        )
        return config


def _priority(keys, count, last):
    """Indices of the entries from the most to the least deserving of a row: count
    descending, then last day seen descending, then a fingerprint of the id (a total
    order of the ids that does not depend on the hash table's iteration order)."""
    order = tf.argsort(hash_ids(keys, _FINGERPRINT_RANGE), stable=True)
    order = tf.gather(order, tf.argsort(-tf.gather(last, order), stable=True))
    return tf.gather(order, tf.argsort(-tf.gather(count, order), stable=True))
