import collections

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from mtlrec.data_pipeline import DataValidationError, convert_day, make_dataset
from mtlrec.data_pipeline import parquet_reader

DAY = "2024-05-01"


def collect(ds):
    """All batches -> (features, labels) dicts of concatenated numpy arrays, and batch sizes."""
    feats, labels, sizes = collections.defaultdict(list), collections.defaultdict(list), []
    for f, l in ds:
        sizes.append(int(next(iter(l.values())).shape[0]))
        for k, v in f.items():
            feats[k].append(v.numpy())
        for k, v in l.items():
            labels[k].append(v.numpy())
    cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    return cat(feats), cat(labels), sizes


def expected_hand(n=10):
    ids = lambda i: str(i).encode()  # noqa: E731
    hist, hist_s = [], []
    for i in range(n):
        h = [] if i == 5 else list(range(i))[-3:]
        hist.append(h + [-1] * (3 - len(h)))
        s = [f"s{j}".encode() for j in range(i % 4)][-2:]
        hist_s.append(s + [b""] * (2 - len(s)))
    return {
        "uid": np.array([i if i % 4 else -1 for i in range(n)]),
        "scene": np.array([b"none" if i % 3 == 0 else (b"search" if i % 2 else b"rec") for i in range(n)], dtype=object),
        "shop": np.array([ids(100 + i) for i in range(n)], dtype=object),
        "price": np.array([-1.0 if i == 2 else float(i) for i in range(n)], np.float32),
        "hist": np.array(hist),
        "hist_s": np.array(hist_s, dtype=object),
    }


def test_parquet_values_nulls_and_padding(tmp_path, hand_schema, hand_table, write_day):
    t = hand_table()
    write_day(tmp_path, DAY, [t.slice(0, 6), t.slice(6)])
    ds = make_dataset(tmp_path, DAY, hand_schema, batch_size=4, extra_columns=("rid", "noise", "uid"))
    features, labels, sizes = collect(ds)
    assert sizes == [4, 4, 2]
    want = expected_hand()
    assert set(features) == set(want)
    for k, v in want.items():
        np.testing.assert_array_equal(features[k], v, err_msg=k)
    spec_f, spec_l = ds.element_spec
    assert spec_f["hist"].shape.as_list() == [None, 3] and spec_f["hist_s"].dtype == tf.string
    assert spec_f["uid"].dtype == tf.int64 and spec_f["price"].dtype == tf.float32
    np.testing.assert_array_equal(labels["click"], np.arange(10) % 2)
    assert labels["click"].dtype == np.float32 and labels["conversion"].dtype == np.float32
    np.testing.assert_array_equal(labels["rid"], [f"r{i}".encode() for i in range(10)])
    np.testing.assert_array_equal(labels["noise"], np.full(10, 0.5, np.float32))
    np.testing.assert_array_equal(labels["uid"], want["uid"])  # a feature asked for as an extra


def test_tfrecord_matches_parquet_on_hand_data(tmp_path, hand_schema, hand_table, write_day):
    t = hand_table()
    write_day(tmp_path / "pq", DAY, [t.slice(0, 6), t.slice(6)])
    convert_day(tmp_path / "pq", tmp_path / "tf", DAY, hand_schema, "tfrecord")
    kwargs = dict(batch_size=4, extra_columns=("rid", "noise"))
    a = make_dataset(tmp_path / "pq", DAY, hand_schema, **kwargs)
    b = make_dataset(tmp_path / "tf", DAY, hand_schema, fmt="tfrecord", **kwargs)
    assert a.element_spec == b.element_spec
    fa, la, sa = collect(a)
    fb, lb, sb = collect(b)
    assert sa == sb
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    for k in la:
        np.testing.assert_array_equal(la[k], lb[k], err_msg=k)
    # the ".tfrecords" spelling (TensorFlow's tutorials use it) reads the same
    for path in sorted((tmp_path / "tf" / f"dt={DAY}").iterdir()):
        path.rename(path.with_name(path.name.replace(".tfrecord", ".tfrecords")))
    fc, _, sc = collect(make_dataset(tmp_path / "tf", DAY, hand_schema, fmt="tfrecord", **kwargs))
    assert sc == sa
    for k in fa:
        np.testing.assert_array_equal(fa[k], fc[k], err_msg=k)


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_funnel_parquet_tfrecord_roundtrip(tmp_path, funnel_root, funnel_schema, funnel_days, compression):
    day = funnel_days[0]
    written = convert_day(funnel_root, tmp_path / "tf", day, funnel_schema, "tfrecord", compression=compression)
    assert [p.rsplit("/", 1)[1] for p in written] == (
        ["part-00000.tfrecord.gz", "part-00001.tfrecord.gz"] if compression else ["part-00000.tfrecord", "part-00001.tfrecord"])
    extras = ("true_ctr", "impression_id", "user_id")
    a = make_dataset(funnel_root, day, funnel_schema, batch_size=512, extra_columns=extras)
    b = make_dataset(tmp_path / "tf", day, funnel_schema, fmt="tfrecord", batch_size=512, extra_columns=extras)
    assert a.element_spec == b.element_spec
    fa, la, sa = collect(a)
    fb, lb, sb = collect(b)
    assert sa == sb == [512] * 5 + [440]
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    for k in la:
        np.testing.assert_array_equal(la[k], lb[k], err_msg=k)
    # and back to Parquet: the same table
    back = convert_day(tmp_path / "tf", tmp_path / "back", day, funnel_schema, "parquet")
    for src, dst in zip(sorted((funnel_root / f"dt={day}").glob("part-*.parquet")), back):
        original = pq.ParquetFile(src).read()
        again = pq.ParquetFile(dst).read()
        assert sorted(again.column_names) == sorted(original.column_names)
        assert original.select(again.column_names).cast(again.schema).equals(again)


def _ids(ds):
    return np.concatenate([l["impression_id"].numpy() for _, l in ds])


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_shuffle_seeded_and_complete(tmp_path, funnel_root, funnel_schema, funnel_days, fmt):
    root = funnel_root
    if fmt == "tfrecord":
        convert_day(funnel_root, tmp_path, funnel_days[0], funnel_schema, "tfrecord")
        root = tmp_path
    make = lambda **kw: make_dataset(root, funnel_days[0], funnel_schema, fmt=fmt, batch_size=256,  # noqa: E731
                                     extra_columns=("impression_id",), **kw)
    plain = _ids(make())
    one = _ids(make(shuffle_buffer=700, seed=3))
    assert np.array_equal(one, _ids(make(shuffle_buffer=700, seed=3)))
    assert not np.array_equal(one, _ids(make(shuffle_buffer=700, seed=4)))
    assert not np.array_equal(one, plain)
    np.testing.assert_array_equal(np.sort(one), np.sort(plain))
    # the first batch draws from a window wider than itself (700-row buffer)
    first = one[:256] % 10**10
    assert np.ptp(first) > 600


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
@pytest.mark.parametrize("shuffle", [0, 600])
def test_skip_batches_resumes_the_same_stream(tmp_path, funnel_root, funnel_schema, funnel_days, fmt, shuffle):
    root = funnel_root
    if fmt == "tfrecord":
        convert_day(funnel_root, tmp_path, funnel_days[0], funnel_schema, "tfrecord")
        root = tmp_path
    make = lambda skip: make_dataset(root, funnel_days[0], funnel_schema, fmt=fmt, batch_size=256, shuffle_buffer=shuffle,  # noqa: E731
                                     seed=11, extra_columns=("impression_id",), repeat=True, skip_batches=skip)
    full = [l["impression_id"].numpy() for _, l in make(0).take(30)]
    resumed = [l["impression_id"].numpy() for _, l in make(17).take(13)]
    assert len(resumed) == 13
    for a, b in zip(full[17:], resumed):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_repeat_passes_reshuffle(tmp_path, funnel_root, funnel_schema, funnel_days, fmt):
    root = funnel_root
    if fmt == "tfrecord":
        convert_day(funnel_root, tmp_path, funnel_days[0], funnel_schema, "tfrecord")
        root = tmp_path
    ds = make_dataset(root, funnel_days[0], funnel_schema, fmt=fmt, batch_size=512, shuffle_buffer=1000, seed=1,
                      extra_columns=("impression_id",), repeat=True)
    batches = [l["impression_id"].numpy() for _, l in ds.take(12)]
    assert [len(b) for b in batches] == ([512] * 5 + [440]) * 2  # each pass ends with its partial batch
    p1, p2 = np.concatenate(batches[:6]), np.concatenate(batches[6:])
    np.testing.assert_array_equal(np.sort(p1), np.sort(p2))
    assert len(np.unique(p1)) == 3000 and not np.array_equal(p1, p2)


def test_several_days_and_deterministic(funnel_root, funnel_schema, funnel_days):
    ds = make_dataset(funnel_root, f"{funnel_days[0]}:{funnel_days[1]}", funnel_schema, batch_size=1000,
                      shuffle_buffer=2000, deterministic=True, extra_columns=("impression_id",))
    ids = _ids(ds)
    assert len(ids) == 6000 and len(np.unique(ids)) == 6000
    assert set(ids // 10**10) == {0, 1}  # day index in the impression id
    np.testing.assert_array_equal(ids, _ids(ds))  # deterministic without a seed: seed 0
    listed = make_dataset(funnel_root, [funnel_days[2]], funnel_schema, batch_size=4096)
    assert sum(int(l["click"].shape[0]) for _, l in listed) == 3000


def test_projection_reads_only_needed_columns(tmp_path, hand_schema, hand_table, write_day):
    t = hand_table()
    weird = pa.array([{"a": i} for i in range(t.num_rows)])  # a struct column no reader supports
    write_day(tmp_path, DAY, [t.append_column("blob", weird)])
    _, labels, _ = collect(make_dataset(tmp_path, DAY, hand_schema, batch_size=8))
    assert len(labels["click"]) == 10
    with pytest.raises(DataValidationError, match="column 'blob': type not readable as declared: expected a scalar number or string"):
        make_dataset(tmp_path, DAY, hand_schema, extra_columns=("blob",))


def test_streams_record_batches_in_file_order(tmp_path, hand_schema, hand_table, write_day, monkeypatch):
    """Record batches of 7 rows are read by two reader threads, one file each, and come out
    one chunk per record batch, in file order; rebatch cuts the 4-row batches across them."""
    from mtlrec.data_pipeline.columns import column_plan

    monkeypatch.setattr(parquet_reader, "READ_BATCH_ROWS", 7)
    monkeypatch.setattr(parquet_reader, "READ_WORKERS", 2)
    t = hand_table(30)
    paths = write_day(tmp_path, DAY, [t.slice(0, 17), t.slice(17, 3), t.slice(20)])
    plan = parquet_reader.resolve_plan(column_plan(hand_schema), pq.read_schema(paths[0]), "f")
    chunks = list(parquet_reader.stream_pass([str(p) for p in paths], plan, 4))
    assert [len(c["click"]) for c in chunks] == [7, 7, 3, 3, 7, 3]
    uid = np.concatenate([c["uid"] for c in chunks])
    np.testing.assert_array_equal(uid, [i if i % 4 else -1 for i in range(30)])
    # resuming: skipped rows are dropped
    skipped = list(parquet_reader.stream_pass([str(p) for p in paths], plan, 4, skip_rows=12))
    np.testing.assert_array_equal(np.concatenate([c["uid"] for c in skipped]), uid[12:])
    _, labels, sizes = collect(make_dataset(tmp_path, DAY, hand_schema, batch_size=4, extra_columns=("uid",)))
    assert sizes == [4] * 7 + [2]
    np.testing.assert_array_equal(labels["uid"], uid)


def test_read_in_parallel_keeps_order_and_raises_in_place():
    def read(name):
        for i in range(5):
            if name == "bad" and i == 2:
                raise DataValidationError("broken", file=name)
            yield name, i

    for workers in (0, 1, 2):
        got = list(parquet_reader.read_in_parallel(["a", "b", "c"], read, workers=workers, depth=1))
        assert got == [(n, i) for n in "abc" for i in range(5)]
    seen = []
    with pytest.raises(DataValidationError, match="broken"):
        for item in parquet_reader.read_in_parallel(["a", "bad", "c"], read, workers=3, depth=1):
            seen.append(item)
    assert seen == [("a", i) for i in range(5)] + [("bad", 0), ("bad", 1)]


def test_argument_errors(funnel_root, funnel_schema, funnel_days):
    with pytest.raises(ValueError, match="Received: fmt='csv'"):
        make_dataset(funnel_root, funnel_days[0], funnel_schema, fmt="csv")
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        make_dataset(funnel_root, funnel_days[0], funnel_schema, batch_size=0)
    with pytest.raises(ValueError, match="Received: skip_batches=-1"):
        make_dataset(funnel_root, funnel_days[0], funnel_schema, skip_batches=-1)
    with pytest.raises(DataValidationError, match="day 2030-01-01 missing"):
        make_dataset(funnel_root, "2030-01-01", funnel_schema)
    with pytest.raises(DataValidationError, match="day .* is empty: no tfrecord files"):
        make_dataset(funnel_root, funnel_days[0], funnel_schema, fmt="tfrecord")


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_stream_runs_without_autotuning(tmp_path, funnel_root, funnel_schema, funnel_days, fmt):
    """tf.data's autotuning thread kept a finished day's iterator from being deleted until
    its sleep between optimizations ended (9 to 21 s seen): the stream runs without it and
    still streams the whole day, shuffled or not."""
    root = funnel_root
    if fmt == "tfrecord":
        root = tmp_path / "tfr"
        convert_day(funnel_root, root, funnel_days[0], funnel_schema, "tfrecord")
    for shuffle in (0, 2000):
        ds = make_dataset(root, funnel_days[0], funnel_schema, fmt=fmt, batch_size=1000,
                          shuffle_buffer=shuffle, seed=1)
        assert ds.options().autotune.enabled is False
        assert sum(int(l["click"].shape[0]) for _, l in ds) == 3000
