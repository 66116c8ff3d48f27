"""MMoE and PLE with `gate: {type: dselect_k, k: 2}`."""

import numpy as np
import pytest

from mtlrec.models import MMoE, PLE, build_model

TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
]
DSELECT = {"type": "dselect_k", "k": 2}


def test_mmoe_with_dselect_k_gates_round_trips(tiny_funnel, keras_roundtrip):
    model = MMoE(
        tiny_funnel.schema, TASKS, num_experts=4, expert_units=[8], tower_units=[4],
        gate=DSELECT, seed=3,
    )
    assert [type(g).__name__ for g in model.mixture.gates] == ["DSelectKGate"] * 2
    assert model.get_config()["gate"] == DSELECT
    features, _ = tiny_funnel.batch(32)
    gates = {k: np.asarray(v) for k, v in model.gate_model()(features).items()}
    for w in gates.values():
        assert w.shape == (32, 4)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)  # 4 experts: no unused code
    model(features)
    assert len(model.losses) == 2  # one entropy term per task gate
    restored = keras_roundtrip(model)
    assert restored.get_config()["gate"] == DSELECT
    again = restored.gate_model()(features)
    for task in gates:
        np.testing.assert_array_equal(np.asarray(again[task]), gates[task])


def test_ple_with_dselect_k_gates(tiny_funnel):
    model = PLE(
        tiny_funnel.schema, TASKS, num_levels=2, num_task_experts=2, num_shared_experts=2,
        expert_units=[8], tower_units=[], gate={"type": "dselect_k", "k": 1, "gamma": 2.0},
    )
    names = {type(g).__name__ for level in model.levels for g in level.task_gates}
    assert names == {"DSelectKGate"}
    assert type(model.levels[0].shared_gate).__name__ == "DSelectKGate"
    features, _ = tiny_funnel.batch(16)
    gates = model.gate_model()(features)
    assert np.asarray(gates["ctr"]).shape == (16, 4)


def test_softmax_stays_the_default(tiny_funnel):
    model = MMoE(tiny_funnel.schema, TASKS, num_experts=2, expert_units=[4], tower_units=[])
    assert model.get_config()["gate"] == {"type": "softmax"}
    assert [type(g).__name__ for g in model.mixture.gates] == ["Gate", "Gate"]


@pytest.mark.parametrize("gate, message", [
    ({"type": "topk"}, r"^model\.gate\.type: expected one of softmax, dselect_k, got 'topk'"),
    ({"type": "dselect_k", "k": 0}, r"^model\.gate\.k: .*Received: k=0"),
    ({"type": "dselect_k", "gama": 1}, r"^model\.gate\.gama: unknown key for gate type 'dselect_k'"),
    ({"type": "softmax", "k": 2}, r"^model\.gate\.k: unknown key for gate type 'softmax' \(allowed: none\)"),
    ("dselect_k", r"^model\.gate: expected a mapping"),
])
def test_bad_gate_settings_name_their_key(tiny_funnel, gate, message):
    with pytest.raises(ValueError, match=message):
        build_model({"type": "mmoe", "gate": gate}, tiny_funnel.schema, TASKS)
