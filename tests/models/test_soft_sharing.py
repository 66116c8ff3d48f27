"""SoftSharing: per-task columns tied by an L2 penalty on their distance."""

import numpy as np
import pytest

from mtlrec.losses import task_losses
from mtlrec.models import SoftSharing

TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "sample_space": "click"},
    {"name": "follow", "label": "follow"},
]


def _fill(model, values):
    for column, value in zip(model.columns, values):
        for v in column.trainable_variables:
            v.assign(np.full(v.shape, value, dtype="float32"))


def test_penalty_is_the_scaled_squared_distance_between_columns(tiny_funnel):
    model = SoftSharing(tiny_funnel.schema, TASKS, column_units=[5, 3], distance_penalty=0.01)
    _fill(model, [0.0, 1.0, 3.0])
    size = sum(int(np.prod(v.shape)) for v in model.columns[0].trainable_variables)
    # pairs (0,1), (0,2), (1,2): squared differences 1, 9, 4 on every parameter
    expected = 0.01 * (1 + 9 + 4) * size
    np.testing.assert_allclose(float(model.losses[-1]), expected, rtol=1e-5)
    np.testing.assert_allclose(float(model.column_distance()), (1 + 9 + 4) * size, rtol=1e-5)

    features, labels = tiny_funnel.batch(32)
    outputs = model(features)
    total = float(model.compute_loss(y=labels, y_pred=outputs))
    tasks_only = sum(float(v) for v in task_losses(TASKS, labels, outputs).values())
    np.testing.assert_allclose(total - tasks_only, expected, rtol=1e-4)

    _fill(model, [1.0, 1.0, 1.0])
    assert float(model.losses[-1]) == 0.0


def test_columns_are_task_variables_and_penalty_zero_disables_it(tiny_funnel):
    model = SoftSharing(tiny_funnel.schema, TASKS, column_units=[4], distance_penalty=0.0)
    assert model.losses == []
    column_vars = {id(v) for c in model.columns for v in c.trainable_variables}
    assert column_vars <= {id(v) for v in model.variable_groups().task_order}
    assert not column_vars & {id(v) for v in model.variable_groups().all_shared}


def test_bad_arguments_are_refused(tiny_funnel):
    with pytest.raises(ValueError, match="at least two tasks"):
        SoftSharing(tiny_funnel.schema, TASKS[:1])
    with pytest.raises(ValueError, match="Received: distance_penalty=-1"):
        SoftSharing(tiny_funnel.schema, TASKS, distance_penalty=-1)


def test_each_column_is_grouped_with_its_task_and_the_penalty_is_one_term(tiny_funnel):
    from mtlrec.losses import objective_terms

    model = SoftSharing(tiny_funnel.schema, TASKS, column_units=[4], distance_penalty=0.01)
    groups = model.variable_groups()
    for task, column in zip(TASKS, model.columns):
        want = column.trainable_variables + model.towers[task["name"]].trainable_variables
        assert list(map(id, groups.task[task["name"]])) == list(map(id, want))
    _fill(model, [0.0, 1.0, 3.0])
    features, labels = tiny_funnel.batch(16)
    terms = objective_terms(model, labels, model(features))
    assert sorted(terms) == ["ctr", "cvr", "follow", "regularization"]
    np.testing.assert_allclose(float(terms["regularization"]), float(model.losses[-1]), rtol=1e-6)
