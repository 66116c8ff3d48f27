"""SharedBottom and SingleTask specifics."""

import numpy as np
import pytest

from mtlrec.models import SharedBottom, SingleTask

TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "follow", "label": "follow"},
]


def test_shared_bottom_feeds_every_tower_and_its_last_layer_is_gradnorms_w(tiny_funnel):
    model = SharedBottom(tiny_funnel.schema, TASKS, bottom_units=[12, 7], tower_units=[3])
    last = model.variable_groups().balance_layer
    assert [tuple(v.shape) for v in last] == [(12, 7), (7,)]
    for name in ("ctr", "follow"):
        first_kernel = model.towers[name].trainable_variables[0]
        assert tuple(first_kernel.shape) == (7, 3)


def test_single_task_towers_share_only_the_embedding(tiny_funnel):
    model = SingleTask(tiny_funnel.schema, TASKS, tower_units=[5])
    shared = model.variable_groups().all_shared
    assert {id(v) for v in shared} == {id(v) for v in model.variable_groups().embedding_tables}
    features, _ = tiny_funnel.batch(8)
    before = np.asarray(model(features)["ctr"])
    for v in model.towers["follow"].trainable_variables:
        v.assign(v.numpy() + 1.0)
    np.testing.assert_array_equal(np.asarray(model(features)["ctr"]), before)


def test_bottom_units_must_be_given(tiny_funnel):
    with pytest.raises(ValueError, match="Received: bottom_units=\\[\\]"):
        SharedBottom(tiny_funnel.schema, TASKS, bottom_units=[])
