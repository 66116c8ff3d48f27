import dataclasses
import types

import numpy as np
import pytest

from mtlrec import Task
from mtlrec.tasks import funnel_chain, validate_tasks

SCHEMA = {
    "labels": [
        {"name": "click", "kind": "binary"},
        {"name": "conversion", "kind": "binary"},
        {"name": "purchasing_power", "kind": "multiclass", "num_classes": 7},
        {"name": "dwell", "kind": "regression"},
    ]
}

ESMM = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
]


def test_defaults_and_joint_name():
    t = Task("ctr", "click")
    assert (t.kind, t.weight, t.num_classes, t.sample_space, t.parent) == (
        "binary",
        1.0,
        None,
        None,
        None,
    )
    assert t.joint_name is None
    assert Task("cvr", "conversion", parent="ctr").joint_name == "ctr_cvr"
    assert Task("cvr", "conversion", parent="ctr", joint="ctcvr").joint_name == "ctcvr"


def test_from_dict_to_dict_roundtrip():
    d = {
        "name": "pp",
        "label": "purchasing_power",
        "kind": "multiclass",
        "num_classes": 7,
        "weight": 2,
        "sample_space": "click",
    }
    t = Task.from_dict(d, "tasks[2]")
    assert t == Task("pp", "purchasing_power", "multiclass", 2.0, 7, "click")
    assert isinstance(t.weight, float)
    assert t.to_dict() == {**d, "weight": 2.0}
    assert Task.from_dict(t.to_dict()) == t
    per_space = {"name": "cvr", "label": "conversion", "sample_space": "click", "loss_normalization": "sample_space"}
    assert Task.from_dict(per_space).loss_normalization == "sample_space"
    assert Task.from_dict(per_space).to_dict() == {**per_space, "kind": "binary", "weight": 1.0}
    assert t.loss_normalization == "batch" and "loss_normalization" not in t.to_dict()
    funnel = Task.from_dict(ESMM[1])
    assert funnel.to_dict() == {**ESMM[1], "kind": "binary", "weight": 1.0}


@pytest.mark.parametrize(
    "d, match",
    [
        ({"name": "a", "label": "click", "colour": 1}, r"tasks\[1\]\.colour: unknown key"),
        ({"label": "click"}, r"tasks\[1\]\.name: required key is missing"),
        ({"name": "a"}, r"tasks\[1\]\.label: required key is missing"),
        ({"name": 3, "label": "click"}, r"tasks\[1\]\.name: expected a non-empty string, got 3"),
        ({"name": "a", "label": ""}, r"tasks\[1\]\.label: expected a non-empty string"),
        ({"name": "a", "label": "c", "kind": "ranking"}, r"tasks\[1\]\.kind: expected one of"),
        ({"name": "a", "label": "c", "weight": "2"}, r"tasks\[1\]\.weight: expected a non-negative"),
        ({"name": "a", "label": "c", "weight": -1.0}, r"tasks\[1\]\.weight: .*got -1\.0"),
        ({"name": "a", "label": "c", "weight": True}, r"tasks\[1\]\.weight"),
        (
            {"name": "a", "label": "c", "kind": "multiclass"},
            r"tasks\[1\]\.num_classes: required for a multiclass task",
        ),
        (
            {"name": "a", "label": "c", "kind": "multiclass", "num_classes": 1},
            r"tasks\[1\]\.num_classes: expected an integer >= 2, got 1",
        ),
        (
            {"name": "a", "label": "c", "kind": "multiclass", "num_classes": 2.5},
            r"tasks\[1\]\.num_classes: expected an integer >= 2, got 2\.5",
        ),
        (
            {"name": "a", "label": "c", "num_classes": 3},
            r"tasks\[1\]\.num_classes: only allowed for a multiclass task",
        ),
        ({"name": "a", "label": "c", "sample_space": 1}, r"tasks\[1\]\.sample_space"),
        (
            {"name": "a", "label": "c", "sample_space": "click", "loss_normalization": "mean"},
            r"tasks\[1\]\.loss_normalization: expected one of batch, sample_space, got 'mean'",
        ),
        (
            {"name": "a", "label": "c", "loss_normalization": "sample_space"},
            r"tasks\[1\]\.loss_normalization: only applies to a task with a sample_space",
        ),
        ({"name": "a", "label": "c", "parent": ["ctr"]}, r"tasks\[1\]\.parent"),
        ({"name": "a", "label": "c", "joint": "x"}, r"tasks\[1\]\.joint: only allowed together"),
        (
            {"name": "a", "label": "c", "kind": "regression", "parent": "ctr"},
            r"tasks\[1\]\.parent: a funnel step must be a binary task",
        ),
        (
            {"name": "a", "label": "c", "parent": "ctr", "sample_space": "click"},
            r"tasks\[1\]\.sample_space: a funnel step",
        ),
    ],
)
def test_from_dict_refuses(d, match):
    with pytest.raises(ValueError, match=match):
        Task.from_dict(d, "tasks[1]")


def test_from_dict_refuses_non_mapping():
    with pytest.raises(ValueError, match=r"tasks\[0\]: expected a mapping, got list"):
        Task.from_dict(["ctr"], "tasks[0]")


def test_constructor_validates_too():
    with pytest.raises(ValueError, match=r"task 'a'\.kind: expected one of"):
        Task("a", "click", kind="ordinal")


def test_validate_tasks_accepts_dicts_and_tasks():
    tasks = validate_tasks(
        ESMM
        + [
            Task("pp", "purchasing_power", "multiclass", num_classes=7, sample_space="click"),
            {"name": "dwell", "label": "dwell", "kind": "regression"},
        ],
        SCHEMA,
    )
    assert [t.name for t in tasks] == ["ctr", "cvr", "pp", "dwell"]
    assert all(isinstance(t, Task) for t in tasks)


def test_validate_tasks_accepts_schema_object():
    schema = types.SimpleNamespace(
        labels=[
            types.SimpleNamespace(name="click", kind="binary"),
            types.SimpleNamespace(name="conversion", kind="binary"),
        ]
    )
    assert [t.joint_name for t in validate_tasks(ESMM, schema)] == [None, "ctcvr"]
    bad = types.SimpleNamespace(labels=[types.SimpleNamespace(name="click", kind="binary")])
    with pytest.raises(ValueError, match=r"tasks\[1\]\.label \(task 'cvr'\): 'conversion'"):
        validate_tasks(ESMM, bad)


@pytest.mark.parametrize(
    "tasks, match",
    [
        (
            [{"name": "ctr", "label": "click"}, {"name": "ctr", "label": "conversion"}],
            r"tasks\[1\]\.name \(task 'ctr'\): duplicate task name, already used by tasks\[0\]",
        ),
        (
            [{"name": "ctr", "label": "clicks"}],
            r"tasks\[0\]\.label \(task 'ctr'\): 'clicks' is not a label of the schema "
            r"\(labels: click, conversion, dwell, purchasing_power\)",
        ),
        (
            [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion", "parent": "ctrr"}],
            r"tasks\[1\]\.parent \(task 'cvr'\): 'ctrr' is not a task \(tasks: ctr, cvr\)",
        ),
        (
            [
                {"name": "a", "label": "click", "parent": "b"},
                {"name": "b", "label": "conversion", "parent": "a"},
            ],
            r"tasks\[0\]\.parent \(task 'a'\): parent cycle a -> b -> a",
        ),
        (
            [{"name": "a", "label": "click", "parent": "a"}],
            r"tasks\[0\]\.parent \(task 'a'\): parent cycle a -> a",
        ),
        (
            [
                {"name": "d", "label": "dwell", "kind": "regression"},
                {"name": "cvr", "label": "conversion", "parent": "d"},
            ],
            r"tasks\[1\]\.parent \(task 'cvr'\): parent 'd' must be a binary task",
        ),
        (
            [{"name": "cvr", "label": "conversion", "sample_space": "purchasing_power"}],
            r"tasks\[0\]\.sample_space \(task 'cvr'\): 'purchasing_power' must be a binary label",
        ),
        (
            [{"name": "cvr", "label": "conversion", "sample_space": "clicked"}],
            r"tasks\[0\]\.sample_space \(task 'cvr'\): 'clicked' is not a label of the schema",
        ),
        (
            [{"name": "ctr", "label": "dwell"}],
            r"tasks\[0\]\.kind \(task 'ctr'\): 'binary' does not match the kind of label 'dwell'",
        ),
        (
            [{"name": "pp", "label": "purchasing_power", "kind": "multiclass", "num_classes": 5}],
            r"tasks\[0\]\.num_classes \(task 'pp'\): 5 does not match",
        ),
        (
            [
                {"name": "ctr", "label": "click"},
                {"name": "ctcvr", "label": "click"},
                {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
            ],
            r"tasks\[2\]\.joint \(task 'cvr'\): joint output name 'ctcvr' is already used by tasks\[1\]",
        ),
        (
            [{"name": "ctr_logit", "label": "click"}],
            r"tasks\[0\]\.name \(task 'ctr_logit'\): output names ending in '_logit' are reserved "
            r"for the logits beside each probability output, got 'ctr_logit'",
        ),
        (
            [ESMM[0], {**ESMM[1], "joint": "ctcvr_logit"}],
            r"tasks\[1\]\.joint \(task 'cvr'\): output names ending in '_logit' are reserved",
        ),
        ([], r"tasks: expected at least one task"),
        ([{"name": "a", "label": "click", "kind": "bin"}], r"tasks\[0\]\.kind: expected one of"),
    ],
)
def test_validate_tasks_refuses(tasks, match):
    with pytest.raises(ValueError, match=match):
        validate_tasks(tasks, SCHEMA)


def test_validate_tasks_needs_schema_labels():
    with pytest.raises(ValueError, match=r"schema\.labels: required"):
        validate_tasks(ESMM, {"categorical": []})
    with pytest.raises(ValueError, match=r"schema: expected a Schema"):
        validate_tasks(ESMM, object())


def test_funnel_chain():
    tasks = validate_tasks(
        ESMM + [{"name": "buy", "label": "conversion", "parent": "cvr"}], SCHEMA
    )
    assert [t.name for t in funnel_chain(tasks[2], tasks)] == ["ctr", "cvr", "buy"]
    assert tasks[2].joint_name == "cvr_buy"
    assert [t.name for t in funnel_chain(tasks[0], tasks)] == ["ctr"]


def test_task_is_a_plain_dataclass():
    assert [f.name for f in dataclasses.fields(Task)] == [
        "name",
        "label",
        "kind",
        "weight",
        "num_classes",
        "sample_space",
        "parent",
        "joint",
        "loss_normalization",
        "sample_weight",
        "negative_keep_rate",
        "negative_keep_rate_column",
    ]


def test_validate_tasks_with_the_schema_class():
    from mtlrec.schema import Schema

    schema = Schema.from_dict(
        {"categorical": [{"name": "user_id", "dtype": "int64", "num_buckets": 10, "dim": 4}], **SCHEMA}
    )
    assert [t.name for t in validate_tasks(ESMM, schema)] == ["ctr", "cvr"]
    with pytest.raises(ValueError, match=r"tasks\[0\]\.sample_space \(task 'x'\): 'dwell' must be a binary label"):
        validate_tasks([{"name": "x", "label": "click", "sample_space": "dwell"}], schema)


def test_evaluation_spaces_name_rows_label_and_output():
    from mtlrec.tasks import EvaluationSpace, evaluation_labels

    tasks = [
        Task("ctr", "click"),
        Task("cvr", "buy", parent="ctr"),
        Task("stay", "dwell", kind="regression", sample_space="click"),
        Task("like", "like"),
    ]
    assert tasks[0].evaluation_spaces(tasks) == [EvaluationSpace("ctr", "ctr", "click", None)]
    assert tasks[1].evaluation_spaces(tasks) == [
        EvaluationSpace("cvr", "cvr", "buy", "click"),
        EvaluationSpace("cvr", "ctr_cvr", "buy", None, joint=True),
    ]
    assert tasks[2].evaluation_spaces(tasks) == [EvaluationSpace("stay", "stay", "dwell", "click")]
    assert evaluation_labels(tasks) == {"click", "buy", "dwell", "like"}

    labels = {"click": np.array([[1.0], [0.0], [1.0]])}
    space = tasks[1].evaluation_spaces(tasks)[0]
    np.testing.assert_array_equal(space.rows(labels, lambda x: x.reshape(-1)), [True, False, True])
    assert tasks[0].evaluation_spaces(tasks)[0].rows(labels, np.ravel) is None
    with pytest.raises(ValueError, match=r"^task 'cvr': label 'click' is missing \(have: clk\)$"):
        space.rows({"clk": np.zeros(3)}, np.ravel)
