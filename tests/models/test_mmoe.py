"""MMoE: gates, expert utilization, and CTR AUC against the oracle."""

import keras
import numpy as np
import pytest

from mtlrec.metrics import auc, expert_utilization
from mtlrec.models import MMoE

TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
]


def test_gate_weights_are_distributions_and_survive_round_trip(tiny_funnel, keras_roundtrip):
    model = MMoE(tiny_funnel.schema, TASKS, num_experts=3, expert_units=[8], tower_units=[4])
    features, _ = tiny_funnel.batch(64)
    gates = {k: np.asarray(v) for k, v in model.gate_model()(features).items()}
    assert sorted(gates) == ["ctr", "cvr"]
    for w in gates.values():
        assert w.shape == (64, 3)
        assert np.all(w >= 0)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    report = expert_utilization(gates)
    assert all(len(v) == 3 and abs(sum(v) - 1) < 1e-5 for v in report.values())

    restored = keras_roundtrip(model)
    again = restored.gate_model()(features)
    for task in gates:
        np.testing.assert_array_equal(np.asarray(again[task]), gates[task])


@pytest.mark.parametrize("batch_norm, shapes", [
    # the Dense has no bias under batch norm: its kernel and the norm's gamma, beta
    (True, [(8, 6), (6,), (6,)]),
    (False, [(8, 6), (6,)]),
])
def test_experts_and_gates_are_the_shared_and_last_shared_variables(tiny_funnel, batch_norm, shapes):
    model = MMoE(tiny_funnel.schema, TASKS, num_experts=2, expert_units=[8, 6], tower_units=[],
                 expert_batch_norm=batch_norm)
    last = model.variable_groups().balance_layer
    # GradNorm's W: every expert's output layer, not its first layer
    assert [tuple(v.shape) for v in last] == shapes * 2
    want = [v for e in model.mixture.experts
            for layer in (e.mlp.dense_layers[-1], e.mlp.norm_layers[-1]) if layer is not None
            for v in layer.trainable_variables]
    assert [id(v) for v in last] == [id(v) for v in want]
    shared = {id(v) for v in model.variable_groups().all_shared}
    assert {id(v) for v in model.mixture.trainable_variables} <= shared


def test_experts_batch_normalise_by_default_only_when_every_input_is_numeric(tiny_funnel):
    """docs/results/quality.md, "MMoE's experts and batch norm": on for dense inputs (the MMoE
    paper's task), off when embeddings feed the experts (the funnel)."""
    numeric = {"numeric": [{"name": "x"}, {"name": "y"}], "labels": tiny_funnel.schema["labels"]}
    tasks = [{"name": "ctr", "label": "click"}]
    assert MMoE(numeric, tasks, num_experts=2).expert_batch_norm is True
    funnel = MMoE(tiny_funnel.schema, TASKS, num_experts=2)
    assert funnel.expert_batch_norm is False
    assert all(n is None for e in funnel.mixture.experts for n in e.mlp.norm_layers)
    on = MMoE(tiny_funnel.schema, TASKS, num_experts=2, expert_batch_norm=True)
    assert all(n is not None for e in on.mixture.experts for n in e.mlp.norm_layers[:-1])
    assert on.get_config()["expert_batch_norm"] is True
    with pytest.raises(ValueError, match="Received: expert_batch_norm='yes'"):
        MMoE(tiny_funnel.schema, TASKS, expert_batch_norm="yes")


def test_a_config_without_expert_batch_norm_is_a_format_3_file_and_keeps_it(tiny_funnel):
    """A `.keras` file of model format 3 records no `expert_batch_norm`; its experts had
    batch norm, so deserialising it builds them with batch norm (and its weights fit)."""
    config = MMoE(tiny_funnel.schema, TASKS, num_experts=2, seed=1).get_config()
    del config["expert_batch_norm"]
    assert MMoE.from_config(config).expert_batch_norm is True


@pytest.mark.parametrize("bad, message", [
    ({"num_experts": 0}, "Received: num_experts=0"),
    ({"expert_units": []}, "Received: expert_units=\\[\\]"),
    ({"tower_units": [4, 0]}, "Received: tower_units=\\[4, 0\\]"),
])
def test_bad_hyperparameters_are_refused(tiny_funnel, bad, message):
    with pytest.raises(ValueError, match=message):
        MMoE(tiny_funnel.schema, TASKS, **bad)


def test_ctr_auc_reaches_the_oracle_on_a_learnable_setting(funnel_factory):
    """CTR AUC within 0.03 of the oracle AUC (true_ctr as the score) on the next day.

    Setting: 10 users x 10 items and 20k impressions a day (~200 rows per user-item pair),
    id tables 50x the ids (no hash collisions), base_ctr 0.2, item popularity fixed across
    days: every term of the true pCTR is identifiable from one training day, so the oracle
    is reachable in ~250 steps. With many sparse ids the oracle is an information bound
    no model reaches; not tested here.
    """
    funnel = funnel_factory(
        "learnable", 20_000, bucket_scale=50,
        num_users=10, num_items=10, num_categories=5, num_brands=10, num_shops=5,
        max_len=3, dim=8, property_dim=2, base_ctr=0.2, popularity_drift=0.0,
        new_items_per_day=0.0,
    )
    eval_features, eval_labels = funnel.evaluate()
    oracle = auc(eval_labels["click"], eval_labels["true_ctr"])
    model = MMoE(funnel.schema, TASKS, num_experts=3, expert_units=[32], tower_units=[16], seed=1)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(funnel.train(batch_size=256), epochs=4, verbose=0)
    predictions = model.predict(eval_features, verbose=0)
    got = auc(eval_labels["click"], predictions["ctr"])
    assert got > oracle - 0.03, (got, oracle)
    gates = model.gate_model().predict(eval_features, verbose=0)
    np.testing.assert_allclose(gates["ctr"].sum(axis=1), 1.0, rtol=1e-5)
