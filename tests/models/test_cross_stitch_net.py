"""CrossStitchNet: task columns linked by cross-stitch units."""

import numpy as np
import pytest

from mtlrec.layers import CrossStitch
from mtlrec.models import CrossStitchNet

TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "sample_space": "click"},
]


def _perturb(layers):
    for layer in layers:
        for v in layer.trainable_variables:
            v.assign(v.numpy() + 0.5)


def test_a_stitch_after_every_hidden_layer_initialised_with_self_weight(tiny_funnel):
    model = CrossStitchNet(tiny_funnel.schema, TASKS, column_units=[8, 6, 4], self_weight=0.8)
    stitches = [layer for layer in model.layers if isinstance(layer, CrossStitch)]
    assert len(stitches) == 3
    for stitch in stitches:
        np.testing.assert_allclose(stitch.trainable_variables[0].numpy(), [[0.8, 0.2], [0.2, 0.8]])


def test_columns_are_independent_with_self_weight_one_and_mixed_otherwise(tiny_funnel):
    features, _ = tiny_funnel.batch(16)
    independent = CrossStitchNet(tiny_funnel.schema, TASKS, column_units=[8, 8], self_weight=1.0)
    before = np.asarray(independent(features)["ctr"])
    _perturb(independent.columns[1])  # the cvr column
    np.testing.assert_allclose(np.asarray(independent(features)["ctr"]), before, rtol=1e-6)

    stitched = CrossStitchNet(tiny_funnel.schema, TASKS, column_units=[8, 8], self_weight=0.9)
    before = np.asarray(stitched(features)["ctr"])
    _perturb(stitched.columns[1])
    assert not np.allclose(np.asarray(stitched(features)["ctr"]), before)


def test_needs_two_tasks_and_a_valid_self_weight(tiny_funnel):
    with pytest.raises(ValueError, match="at least two tasks"):
        CrossStitchNet(tiny_funnel.schema, TASKS[:1])
    with pytest.raises(ValueError, match="Received: self_weight=1.5"):
        CrossStitchNet(tiny_funnel.schema, TASKS, self_weight=1.5)
    with pytest.raises(ValueError, match="Received: column_units=\\[\\]"):
        CrossStitchNet(tiny_funnel.schema, TASKS, column_units=[])
