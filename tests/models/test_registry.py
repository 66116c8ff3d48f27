"""build_model: the `model` section of a config -> a model."""

import pytest

from mtlrec.models import MODELS, MMoE, build_model
from mtlrec.models.registry import hyperparameters

TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
]


def test_model_types():
    assert sorted(MODELS) == sorted(
        ["single_task", "shared_bottom", "esmm", "mmoe", "ple", "cross_stitch", "soft_sharing", "dupn", "aitm", "escm2"]
    )
    assert hyperparameters("mmoe") == [
        "num_experts", "expert_units", "tower_units", "dropout", "interaction", "sequence_encoders",
        "loss_weighting", "gate",
        "expert_batch_norm", "seed",
    ]


def test_builds_with_hyperparameters(tiny_funnel):
    model = build_model({"type": "mmoe", "num_experts": 2, "expert_units": [4]}, tiny_funnel.schema, TASKS)
    assert isinstance(model, MMoE)
    assert model.num_experts == 2 and model.expert_units == [4]


def test_unknown_type_names_model_type_and_the_valid_ones(tiny_funnel):
    with pytest.raises(ValueError, match=r"model\.type: expected one of .*dupn.*single_task.*got 'mmoe2'"):
        build_model({"type": "mmoe2"}, tiny_funnel.schema, TASKS)
    with pytest.raises(ValueError, match=r"model\.type: required key is missing"):
        build_model({"num_experts": 2}, tiny_funnel.schema, TASKS)
    with pytest.raises(ValueError, match="model: expected a mapping"):
        build_model("mmoe", tiny_funnel.schema, TASKS)


def test_unknown_hyperparameter_names_model_key(tiny_funnel):
    with pytest.raises(ValueError, match=r"model\.num_expert: unknown hyperparameter of model type 'mmoe'"):
        build_model({"type": "mmoe", "num_expert": 2}, tiny_funnel.schema, TASKS)
    with pytest.raises(ValueError, match=r"model\.bottom_units: unknown hyperparameter .*'esmm'"):
        build_model({"type": "esmm", "bottom_units": [8]}, tiny_funnel.schema, TASKS)


def test_bad_value_names_model_key(tiny_funnel):
    with pytest.raises(ValueError, match=r"model\.num_experts: Expected num_experts .*Received: num_experts=0"):
        build_model({"type": "mmoe", "num_experts": 0}, tiny_funnel.schema, TASKS)
    with pytest.raises(ValueError, match=r"model\.interaction: .*interaction\.low_rank"):
        build_model({"type": "esmm", "interaction": {"type": "dcn", "low_rank": 0}}, tiny_funnel.schema, TASKS)
    with pytest.raises(ValueError, match=r"model: tasks\[0\]\.label"):
        build_model({"type": "esmm"}, tiny_funnel.schema, [{"name": "ctr", "label": "clk"}])
