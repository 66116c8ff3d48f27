"""PLE: stacked CGC levels and the last level's gates."""

import numpy as np
import pytest

from mtlrec.layers import CGC
from mtlrec.models import PLE

TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "sample_space": "click"},
    {"name": "follow", "label": "follow"},
]


@pytest.mark.parametrize("num_levels", [1, 3])
def test_levels_and_gate_weights(tiny_funnel, keras_roundtrip, num_levels):
    model = PLE(tiny_funnel.schema, TASKS, num_levels=num_levels, num_task_experts=2,
                num_shared_experts=1, expert_units=[6], tower_units=[4])
    levels = [layer for layer in model.layers if isinstance(layer, CGC)]
    assert len(levels) == num_levels
    assert [level.is_last for level in levels] == [False] * (num_levels - 1) + [True]

    features, _ = tiny_funnel.batch(32)
    gates = {k: np.asarray(v) for k, v in model.gate_model()(features).items()}
    assert sorted(gates) == ["ctr", "cvr", "follow"]
    for w in gates.values():
        assert w.shape == (32, 3)  # 2 own experts + 1 shared
        assert np.all(w >= 0)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)

    restored = keras_roundtrip(model)
    again = restored.gate_model()(features)
    for task in gates:
        np.testing.assert_array_equal(np.asarray(again[task]), gates[task])


def test_last_shared_variables_are_the_last_levels_expert_output_layers(tiny_funnel):
    """GradNorm's W: the output layer of every expert the last level's gates mix."""
    model = PLE(tiny_funnel.schema, TASKS, num_levels=2, num_shared_experts=2, expert_units=[6, 5])
    last = model.variable_groups().balance_layer
    level = model.levels[-1]
    experts = list(level.task_experts) + list(level.shared_experts)
    assert len(experts) == len(TASKS) * 1 + 2
    want = [v for e in experts for v in e.mlp.dense_layers[-1].trainable_variables]
    assert [id(v) for v in last] == [id(v) for v in want]
    assert [tuple(v.shape) for v in last] == [(6, 5), (5,)] * len(experts)


def test_bad_level_count_is_refused(tiny_funnel):
    with pytest.raises(ValueError, match="Received: num_levels=0"):
        PLE(tiny_funnel.schema, TASKS, num_levels=0)
