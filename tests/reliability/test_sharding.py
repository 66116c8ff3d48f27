"""How a day is split over workers (mtlrec/training/distribute/sharding.py), without starting a cluster."""

import numpy as np
import pytest

from mtlrec.training.config import load_config
from mtlrec.training.days.day_datasets import train_dataset
from mtlrec.training.distribute.sharding import Sharding

DAY = "2024-01-01"


def _batches(config, sharding, rows, schema, skip=0):
    return [(f, l) for f, l in train_dataset(load_config(config), schema, sharding, DAY, rows)(0, skip)]


def test_by_record_the_workers_slices_make_up_the_single_process_batch(tmp_path, funnel_root, training):
    config = training.config_file(tmp_path, funnel_root)  # one file per day: by record
    schema = training.SCHEMA | {"numeric": [{"name": "price", "normalize": "log1p"}]}
    single = _batches(config, Sharding(), 320, schema)
    workers = [_batches(config, Sharding(i, 2), 320, schema) for i in range(2)]
    assert [len(w) for w in workers] == [len(single)] * 2 == [5, 5]
    for step, (features, labels) in enumerate(single):
        ids = np.concatenate([w[step][0]["user_id"].numpy() for w in workers])
        np.testing.assert_array_equal(ids, features["user_id"].numpy())
        assert [w[step][0]["user_id"].shape[0] for w in workers] == [32, 32]
    # resuming after 3 batches gives the same last two slices
    resumed = _batches(config, Sharding(1, 2), 320, schema, skip=3)
    assert [b[1]["click"].numpy().tolist() for b in resumed] == [b[1]["click"].numpy().tolist() for b in workers[1][3:]]


def test_by_file_each_worker_reads_its_files_for_the_same_number_of_steps(tmp_path, training):
    from mtlrec.data_pipeline import generate_funnel

    root = tmp_path / "data"
    generate_funnel(root, DAY, 1, 300, seed=3, files_per_day=3, **training.KNOBS)  # 100 rows a file
    config = training.config_file(tmp_path, root)
    schema = training.SCHEMA | {"numeric": [{"name": "price", "normalize": "log1p"}]}
    workers = [_batches(config, Sharding(i, 2), 300, schema) for i in range(2)]
    # ceil(300 / 64) = 5 steps each, 32 rows per worker and step; worker 1 cycles over its one file
    assert [len(w) for w in workers] == [5, 5]
    assert all(b[0]["user_id"].shape[0] == 32 for w in workers for b in w)
    import pyarrow.parquet as pq

    files = sorted((root / f"dt={DAY}").glob("*.parquet"))
    prices = [set(np.float32(pq.read_table(f).column("price").to_numpy()).tolist()) for f in files]
    seen = [set(np.concatenate([b[0]["price"].numpy() for b in w]).tolist()) for w in workers]
    assert seen[0] <= prices[0] | prices[2] and seen[1] <= prices[1]  # files 0, 2 and file 1
    assert seen[1] == prices[1]  # worker 1 read all of its file (and went round again)
    resumed = _batches(config, Sharding(1, 2), 300, schema, skip=2)
    assert [b[0]["price"].numpy().tolist() for b in resumed] == [b[0]["price"].numpy().tolist() for b in workers[1][2:]]
    with pytest.raises(Exception, match="training.batch_size: the global batch 64 must be divisible"):
        train_dataset(load_config(config), schema, Sharding(0, 3), DAY, 300)


def test_a_last_batch_shorter_than_the_worker_count_leaves_no_worker_empty():
    import tensorflow as tf

    from mtlrec.training.distribute.sharding import record_slice

    ds = tf.data.Dataset.from_tensors(({"x": tf.constant([7.0])}, {"y": tf.constant([1.0])}))
    out = [next(iter(record_slice(ds, Sharding(i, 3))))[0]["x"].numpy().tolist() for i in range(3)]
    assert out == [[7.0], [7.0], [7.0]]
    ds = tf.data.Dataset.from_tensors(({"x": tf.range(5.0)}, {"y": tf.zeros(5)}))
    out = [next(iter(record_slice(ds, Sharding(i, 2))))[0]["x"].numpy().tolist() for i in range(2)]
    assert out == [[0.0, 1.0], [2.0, 3.0, 4.0]]
