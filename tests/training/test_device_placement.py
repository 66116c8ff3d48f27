"""Placement of the training step's state on a machine with an accelerator: the dynamic id map
(a `tf.lookup` table and its int64 bookkeeping) pins itself to the host; nothing in mtlrec
names a device that a GPU machine or a worker of a cluster would not have.

No GPU is needed: with soft placement off, an enclosing `/GPU:0` scope on a CPU-only machine
fails every op that does not choose its device itself."""

import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from mtlrec.layers.embedding.dynamic_id_map import HOST, DynamicIdMap

PACKAGE = Path(__file__).resolve().parents[2] / "mtlrec"


@pytest.fixture
def hard_placement():
    before = tf.config.get_soft_device_placement()
    tf.config.set_soft_device_placement(False)
    yield
    tf.config.set_soft_device_placement(before)


def test_the_dynamic_id_map_lives_and_counts_on_the_host_inside_an_accelerator_scope(hard_placement):
    seen, asked = tf.constant([7, 9, 7], tf.int64), tf.constant([9, 7, 5], tf.int64)
    with tf.device("/GPU:0"):
        id_map = DynamicIdMap(capacity=4, oov_buckets=2, min_count=1, name="ids")
        id_map.build()
        id_map.start_day(19723)
        id_map.observe(seen)
        rows = id_map.rows(asked)
    assert id_map.table.resource_handle.device.endswith("device:CPU:0")
    assert all(v.value.device.endswith("device:CPU:0") for v in id_map.weights)
    # 7 then 9 admitted in order of first appearance; 5 unseen goes to an OOV row (4 or 5)
    np.testing.assert_array_equal(rows.numpy()[:2], [1, 0])
    assert 4 <= rows.numpy()[2] < 6


def test_the_id_map_steps_on_the_host_inside_a_traced_function(hard_placement):
    id_map = DynamicIdMap(capacity=3, oov_buckets=1, min_count=1, name="ids")
    id_map.build()

    @tf.function
    def step(ids):
        with tf.device("/GPU:0"):
            id_map.observe(ids)
            return id_map.rows(ids)

    np.testing.assert_array_equal(step(tf.constant([4, 5, 4], tf.int64)).numpy(), [0, 1, 0])


def test_device_strings_in_the_package_name_a_device_type_only():
    """`tf.device("/CPU:0")` merges into a worker's own `/job:worker/task:i` scope; a job, a
    task or a GPU index written into the code would break a CPU-only or a multi-worker run."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"tf\.device\(([^)]*)\)", text):
            found.append((path.name, match.group(1)))
    assert found, "expected the id map's host placement"
    for name, argument in found:
        assert argument in ("HOST",), f"{name}: tf.device({argument})"
    assert HOST == "/CPU:0"
    assert not re.search(r"[\"']/?(job|replica|task):", "".join(
        p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")))
    assert not re.search(r"[\"']/?(device:)?GPU:\d", "".join(
        p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")))
