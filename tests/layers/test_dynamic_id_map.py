"""DynamicIdMap and FeatureEmbedding's identity / dynamic lookups: admission, expiry,
eviction, freed rows and slots, checkpoints and .keras files."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.layers import FeatureEmbedding
from mtlrec.layers.embedding.dynamic_id_map import DynamicIdMap
from mtlrec.layers.embedding.feature_embedding import hash_ids
from mtlrec.optimizers import LazyAdagrad, LazyAdam, reset_slot_rows


def _map(**kwargs):
    id_map = DynamicIdMap(**{"key_dtype": "int64", "capacity": 4, "oov_buckets": 2, **kwargs})
    id_map.build()
    return id_map


def _entries(id_map):
    keys, values = (t.numpy() for t in id_map.table.export())
    keys = [k.decode() if isinstance(k, bytes) else int(k) for k in keys]
    return {k: tuple(int(x) for x in v) for k, v in zip(keys, values)}


def test_every_id_of_a_known_set_gets_its_own_row_string_and_int():
    ids = ["item-a", "", "é✓ユニコード", "x" * 5000, "item-b", "0"]
    id_map = _map(key_dtype="string", capacity=len(ids))
    id_map.start_day(100)
    id_map.observe(tf.constant(ids + ids[::-1]))
    # rows in order of first appearance; no two ids share one
    np.testing.assert_array_equal(id_map.rows(tf.constant(ids)).numpy(), [0, 1, 2, 3, 4, 5])
    unseen = tf.constant(["never", "seen"])
    np.testing.assert_array_equal(id_map.rows(unseen).numpy(), 6 + hash_ids(unseen, 2).numpy())
    ints = _map(capacity=3)
    ints.observe(tf.constant([7, -1, 2**62, 7], tf.int64))
    np.testing.assert_array_equal(ints.rows(tf.constant([2**62, -1, 7], tf.int64)).numpy(), [2, 1, 0])
    assert ints.report()["rows_in_use"] == 3


def test_an_id_is_admitted_once_seen_min_count_times_counted_over_days():
    id_map = _map(min_count=3)
    id_map.start_day(1)
    id_map.observe(tf.constant([5, 5, 6], tf.int64))
    assert _entries(id_map) == {5: (-1, 2, 1), 6: (-1, 1, 1)}  # (row, count, last day)
    report = id_map.report()
    assert (report["admitted"], report["lookups"], report["oov_lookups"]) == (0, 3, 3)
    id_map.start_day(2)
    id_map.observe(tf.constant([6, 5], tf.int64))  # 5 reaches 3 on the next day
    assert _entries(id_map) == {5: (0, 3, 2), 6: (-1, 2, 2)}
    report = id_map.report()
    assert (report["admitted"], report["lookups"], report["oov_lookups"], report["rows_in_use"]) == (1, 2, 1, 1)
    assert id_map.rows(tf.constant([5], tf.int64)).numpy().tolist() == [0]


def test_ttl_frees_the_rows_of_ids_unseen_for_ttl_days_and_the_rows_are_reused():
    id_map = _map(ttl_days=2)
    id_map.start_day(10)
    id_map.observe(tf.constant([1, 2, 3], tf.int64))
    id_map.start_day(11)
    id_map.observe(tf.constant([2], tf.int64))
    id_map.start_day(12)
    assert id_map.start_day(12).numpy().tolist() == []  # 1 and 3 last seen on day 10: 10 >= 12 - 2
    freed = id_map.start_day(13)  # unseen on days 11 and 12
    assert freed.numpy().tolist() == [0, 2]
    assert _entries(id_map) == {2: (1, 2, 11)}
    assert id_map.report()["evicted"] == 2 and id_map.report()["rows_in_use"] == 1
    id_map.observe(tf.constant([8, 9, 10], tf.int64))  # recycled rows first (top of the stack), then fresh
    assert [_entries(id_map)[k][0] for k in (8, 9, 10)] == [2, 0, 3]


def test_when_full_the_least_frequent_ids_give_their_rows_to_more_frequent_waiting_ids():
    id_map = _map(capacity=3)
    id_map.start_day(1)
    id_map.observe(tf.constant([1, 1, 1, 2, 3, 3], tf.int64))  # rows 0, 1, 2; counts 3, 1, 2
    id_map.observe(tf.constant([4, 4, 4, 4, 5, 6], tf.int64))  # no row left: waiting, counted
    report = id_map.report()
    assert (report["overflow_lookups"], report["oov_lookups"], report["rows_in_use"]) == (6, 6, 3)
    freed = id_map.start_day(2)
    # waiting: 4 (count 4), 5 (1), 6 (1); admitted ascending by count: 2 (1), 3 (2), 1 (3).
    # 2 (1) < 4 (4) gives way; 3 (2) is not beaten by 5 (1): one row freed
    assert freed.numpy().tolist() == [1]
    assert _entries(id_map)[2] == (-1, 1, 1)
    id_map.observe(tf.constant([4], tf.int64))
    assert _entries(id_map)[4] == (1, 5, 2)



def test_a_row_freed_for_a_waiting_id_goes_to_that_id_even_when_the_evicted_id_comes_first():
    id_map = _map(capacity=3)
    id_map.start_day(1)
    id_map.observe(tf.constant([1, 1, 1, 2, 3, 3], tf.int64))  # rows 0, 1, 2; counts 3, 1, 2
    id_map.observe(tf.constant([4, 4, 4, 4], tf.int64))  # no row left: 4 waits with count 4
    assert id_map.start_day(2).numpy().tolist() == [1]  # 2 (count 1) gives its row to 4 (count 4)
    assert _entries(id_map)[4] == (1, 4, 1) and _entries(id_map)[2] == (-1, 1, 1)
    assert id_map.report()["admitted"] == 1
    id_map.observe(tf.constant([2, 4], tf.int64))  # 2 (count now 2) first in the batch
    assert _entries(id_map)[4] == (1, 5, 2)  # 4 keeps the row freed for it
    assert _entries(id_map)[2] == (-1, 2, 2)  # 2 waits: no row left
    np.testing.assert_array_equal(id_map.rows(tf.constant([2], tf.int64)), 3 + hash_ids(tf.constant([2], tf.int64), 2))
    assert id_map.report()["overflow_lookups"] == 1
    # every id seen once a day: 2 never counts more than 3, the least counted admitted id,
    # and no row changes hands (before, 2 and 4 swapped row 1 every day, re-initialised)
    for day in (3, 4, 5):
        assert id_map.start_day(day).numpy().tolist() == []
        id_map.observe(tf.constant([2, 1, 3, 4], tf.int64))
        assert {k: v[0] for k, v in _entries(id_map).items()} == {1: 0, 2: -1, 3: 2, 4: 1}
    assert _entries(id_map)[2][1] == _entries(id_map)[3][1] == 5


def test_counts_halve_so_a_quiet_id_loses_its_row_to_an_active_one():
    def run(half_life):
        id_map = _map(capacity=1, count_half_life_days=half_life)
        id_map.start_day(1)
        id_map.observe(tf.constant([7] * 64 + [9], tf.int64))  # 7: row 0, count 64; 9 waits with 1
        history = []
        for day in range(2, 7):
            freed = id_map.start_day(day).numpy().tolist()
            history.append((day, freed, _entries(id_map).get(7), _entries(id_map).get(8), id_map.report()["ids_dropped"]))
            id_map.observe(tf.constant([8] * 4, tf.int64))  # 8 is seen 4 times a day from day 2 on
        return id_map, history

    id_map, history = run(half_life=1)  # counts halve at the start of every day
    assert history == [
        # day, freed, 7 (row, count, last), 8 (row, count, last), ids dropped
        (2, [], (0, 32, 1), None, 1),  # 9's count 1 halves to 0: it leaves the map
        (3, [], (0, 16, 1), (-1, 2, 2), 0),  # 8: 4 // 2
        (4, [], (0, 8, 1), (-1, 3, 3), 0),  # (2 + 4) // 2
        (5, [], (0, 4, 1), (-1, 3, 4), 0),  # (3 + 4) // 2; 4 < 3 is false: 7 keeps its row
        (6, [0], (-1, 2, 1), (0, 3, 5), 0),  # 2 < 3: 8 takes the row
    ]
    assert 9 not in _entries(id_map)
    _, history = run(half_life=1000)  # no halving on days 1-6: 7 keeps its row (64 against 20)
    assert [h[1] for h in history] == [[]] * 5 and history[-1][2] == (0, 64, 1) and history[-1][3] == (-1, 16, 5)


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "tf.function"])
def test_the_ids_waiting_for_a_row_stay_bounded_under_a_stream_of_new_ids(traced):
    id_map = _map(capacity=2, max_waiting=3)
    observe = tf.function(id_map.observe) if traced else id_map.observe  # traced: as in the training step
    id_map.start_day(1)
    observe(tf.constant([1, 2, 3, 3, 4, 4, 5, 5], tf.int64))  # 1, 2: rows; 3, 4, 5 wait (count 2)
    assert id_map.report()["ids_waiting"] == 3 and id_map.report()["ids_dropped"] == 0
    observe(tf.constant([10, 11, 12], tf.int64))  # 6 wait: not more than 2 x 3
    assert id_map.report()["ids_waiting"] == 6
    observe(tf.constant([13], tf.int64))  # 7 > 6: the 4 least counted leave
    report = id_map.report()
    assert (report["ids_tracked"], report["ids_waiting"], report["ids_dropped"]) == (5, 3, 4)
    assert sorted(_entries(id_map)) == [1, 2, 3, 4, 5]
    new = 100
    for day in range(2, 6):
        id_map.start_day(day)
        assert id_map.report()["ids_tracked"] <= 2 + 3
        for _ in range(10):
            observe(tf.constant(list(range(new, new + 5)), tf.int64))
            new += 5
            assert id_map.report()["ids_tracked"] <= 2 + 2 * 3
        assert 0 < id_map.report()["ids_dropped"] <= 50
    assert {3, 4, 5} <= set(_entries(id_map))  # counted more than the passing ids: kept
    strings = _map(key_dtype="string", capacity=1, max_waiting=1)
    strings.observe(tf.constant(["a", "b", "b", "c"]))  # b (2) is kept over c (1)
    assert sorted(_entries(strings)) == ["a", "b", "c"]
    strings.observe(tf.constant(["d"]))
    assert sorted(_entries(strings)) == ["a", "b"] and strings.report()["ids_dropped"] == 2


SCHEMA = {
    "categorical": [
        {"name": "item", "dtype": "string", "num_buckets": 3, "dim": 2, "lookup": "dynamic", "ttl_days": 1},
        {"name": "cat", "dtype": "int64", "num_buckets": 4, "dim": 2, "lookup": "identity", "oov_buckets": 2},
    ],
    "sequence": [{"name": "hist", "dtype": "string", "max_len": 2, "shared_with": "item"}],
}
FEATURES = {
    "item": tf.constant(["a", "b"]),
    "cat": tf.constant([3, 9], tf.int64),
    "hist": tf.constant([["b", "c"], ["", ""]]),
}


def test_shared_features_share_one_map_and_the_identity_lookup_counts_out_of_range_ids():
    layer = FeatureEmbedding(SCHEMA)
    layer.build()
    assert sorted(layer.id_maps) == ["item"] and layer.tables["item"].shape == (4, 2)
    assert layer.tables["cat"].shape == (6, 2)
    layer.observe(FEATURES)
    out = layer(FEATURES)
    table = layer.tables["item"].numpy()
    np.testing.assert_array_equal(out["embeddings"]["item"], table[[0, 1]])  # a, b: rows 0, 1
    np.testing.assert_array_equal(out["sequences"]["hist"][0], table[[1, 2]])  # b, then c: row 2
    np.testing.assert_array_equal(out["sequences"]["hist"][1], np.zeros((2, 2)))  # padding
    cat = layer.tables["cat"].numpy()
    np.testing.assert_array_equal(out["embeddings"]["cat"], cat[[3, 4 + hash_ids([9], 2).numpy()[0]]])
    report = layer.lookup_report()
    assert report["item"]["lookups"] == 4 and report["item"]["rows_in_use"] == 3  # pads not counted
    assert report["cat"] == {"lookup": "identity", "lookups": 2, "oov_lookups": 1, "oov_share": 0.5}


# per_lookup: both Adam slots of the touched rows move (per_step leaves the momentum slot zero).
@pytest.mark.parametrize("optimizer", [LazyAdam(0.1, row_momentum="per_lookup"),
                                       LazyAdagrad(0.1, initial_accumulator_value=0.3)])
def test_a_freed_row_is_reinitialised_and_its_optimizer_slots_reset(optimizer):
    layer = FeatureEmbedding(SCHEMA)
    layer.build()
    layer.start_day(730000, seed=1)
    layer.observe(FEATURES)
    table = layer.tables["item"]
    optimizer.build([table])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(FEATURES)["dense"])
    optimizer.apply_gradients([(tape.gradient(loss, table), table)])
    slots = [v for v in optimizer.variables if v.shape == table.shape]
    before, slots_before = table.numpy(), [s.numpy() for s in slots]
    assert all(np.any(s[[0, 1, 2]] != s[3]) for s in slots_before)  # the rows' slots moved
    assert layer.start_day(730001, seed=1) == {}
    layer.observe({"item": tf.constant(["b", "b"]), "cat": FEATURES["cat"], "hist": tf.constant([["", ""]] * 2)})
    freed = layer.start_day(730002, seed=1)  # a and c unseen on day 730001: expired
    assert freed["item"].numpy().tolist() == [0, 2]
    assert reset_slot_rows(optimizer, table, freed["item"]) == len(slots)
    after = table.numpy()
    np.testing.assert_array_equal(after[[1, 3]], before[[1, 3]])  # other rows untouched
    assert np.all(after[[0, 2]] != before[[0, 2]]) and np.all(np.abs(after[[0, 2]]) <= 0.05)
    for slot, old in zip(slots, slots_before):
        fresh = slot.numpy()
        np.testing.assert_array_equal(fresh[[1, 3]], old[[1, 3]])
        np.testing.assert_array_equal(fresh[[0, 2]], np.full((2, 2), 0.3 if "accumulator" in slot.path else 0.0, "float32"))
    # the same state and seed give the same fresh rows
    again = FeatureEmbedding(SCHEMA)
    again.build()
    again.start_day(730000, seed=1)
    again.observe(FEATURES)
    again.start_day(730001, seed=1)
    again.observe({"item": tf.constant(["b", "b"]), "cat": FEATURES["cat"], "hist": tf.constant([["", ""]] * 2)})
    again.start_day(730002, seed=1)
    np.testing.assert_array_equal(again.tables["item"].numpy()[[0, 2]], after[[0, 2]])


def _state(layer):
    return {
        "map": sorted(_entries(layer.id_maps["item"]).items()),
        "weights": [np.asarray(w).tolist() for w in layer.weights],
    }


BATCHES = [
    {"item": tf.constant(x), "cat": tf.constant([1, 2], tf.int64), "hist": tf.constant([[y, ""], ["", ""]])}
    for x, y in ((["a", "b"], "c"), (["d", "a"], "e"), (["f", "g"], "b"), (["h", "a"], "i"))
]


def test_a_checkpoint_restored_mid_day_continues_exactly_like_an_uninterrupted_map(tmp_path):
    def run(layer, batches):
        for features in batches:
            layer.observe(features)

    clean = FeatureEmbedding(SCHEMA, seed=7)  # the same initial tables
    clean.build()
    clean.start_day(5)
    run(clean, BATCHES[:2])
    clean.start_day(7)
    run(clean, BATCHES[2:])

    first = FeatureEmbedding(SCHEMA, seed=7)
    first.build()
    first.start_day(5)
    run(first, BATCHES[:2])
    first.start_day(7)
    run(first, BATCHES[2:3])
    def checkpoint(layer):
        return tf.train.Checkpoint(tables=list(layer.tables.values()), **layer.lookup_state())

    path = checkpoint(first).write(str(tmp_path / "ckpt"))
    resumed = FeatureEmbedding(SCHEMA, seed=8)  # its own tables, overwritten by the checkpoint
    resumed.build()
    checkpoint(resumed).read(path).assert_existing_objects_matched()
    run(resumed, BATCHES[3:])
    assert _state(resumed) == _state(clean)
    assert clean.lookup_report()["item"]["evicted"] == 3  # a, b, c unseen on day 6: their rows freed on day 7


def test_keras_file_round_trips_the_map(keras_roundtrip):
    inputs = {
        "item": keras.Input(shape=(), dtype="string", name="item"),
        "cat": keras.Input(shape=(), dtype="int64", name="cat"),
        "hist": keras.Input(shape=(2,), dtype="string", name="hist"),
    }
    layer = FeatureEmbedding(SCHEMA)
    model = keras.Model(inputs, layer(inputs)["dense"])
    layer.start_day(3)
    layer.observe({**FEATURES, "item": tf.constant(["é", ""])})
    restored = keras_roundtrip(model)
    again = restored.get_layer(layer.name)
    assert _state(again) == _state(layer)
    probe = {**FEATURES, "item": tf.constant(["", "unseen"])}
    np.testing.assert_array_equal(restored(probe), model(probe))


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: key_dtype='float32'"):
        DynamicIdMap(key_dtype="float32", capacity=2)
    with pytest.raises(ValueError, match="Received: capacity=0"):
        DynamicIdMap(capacity=0)
    with pytest.raises(ValueError, match="Received: ttl_days=-1"):
        DynamicIdMap(capacity=2, ttl_days=-1)
    with pytest.raises(ValueError, match="Received: count_half_life_days=0"):
        DynamicIdMap(capacity=2, count_half_life_days=0)
    with pytest.raises(ValueError, match="Received: max_waiting=1.5"):
        DynamicIdMap(capacity=2, max_waiting=1.5)
    keys = ("key_dtype", "capacity", "oov_buckets", "min_count", "ttl_days", "count_half_life_days", "max_waiting")
    config = _map(min_count=2, ttl_days=3).get_config()
    assert {k: config[k] for k in keys} == {
        "key_dtype": "int64", "capacity": 4, "oov_buckets": 2, "min_count": 2, "ttl_days": 3,
        "count_half_life_days": 7, "max_waiting": 4,
    }
