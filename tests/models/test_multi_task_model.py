"""MultiTaskModel: inputs, shared embedding, interaction block, heads, loss, variable groups,
and the contract every model keeps (builds, trains with fit, round-trips through .keras)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.metrics import auc
from mtlrec.models import (
    DUPN,
    ESMM,
    MultiTaskModel,
    SingleTask,
    build_model,
    schema_inputs,
)
from mtlrec.models.base._masked_mean import MaskedMean

FUNNEL_TASKS = [
    {"name": "ctr", "label": "click", "weight": 2.0},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
    {"name": "purchasing_power", "label": "purchasing_power", "kind": "multiclass", "num_classes": 7},
    {"name": "follow", "label": "follow"},
]
FLAT_TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "sample_space": "click"},
    {"name": "purchasing_power", "label": "purchasing_power", "kind": "multiclass", "num_classes": 7},
]
DUPN_TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "rank", "label": "click"},
    {"name": "purchasing_power", "label": "purchasing_power", "kind": "multiclass", "num_classes": 7},
    {"name": "follow", "label": "follow"},
]
CONFIGS = {
    "single_task": ({"type": "single_task", "tower_units": [8],
                     "interaction": {"type": "dcn", "num_layers": 1, "low_rank": 4}}, FLAT_TASKS),
    "shared_bottom": ({"type": "shared_bottom", "bottom_units": [16], "tower_units": [8],
                       "interaction": {"type": "dot"},
                       "loss_weighting": {"type": "uncertainty"}}, FUNNEL_TASKS),
    "esmm": ({"type": "esmm", "tower_units": [8], "interaction": {"type": "fm"}}, FUNNEL_TASKS),
    "mmoe": ({"type": "mmoe", "num_experts": 3, "expert_units": [8], "tower_units": [4]}, FUNNEL_TASKS),
    "ple": ({"type": "ple", "num_levels": 2, "expert_units": [8], "tower_units": [4]}, FUNNEL_TASKS),
    "cross_stitch": ({"type": "cross_stitch", "column_units": [8, 8]}, FUNNEL_TASKS),
    "soft_sharing": ({"type": "soft_sharing", "column_units": [8], "distance_penalty": 1e-3}, FUNNEL_TASKS),
    "dupn": ({"type": "dupn", "lstm_units": 4, "attention_units": 4, "representation_dim": 8,
              "tower_units": [4]}, DUPN_TASKS),
}


def _numpy(outputs):
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def _bce(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_every_model_trains_with_fit_and_round_trips(model_type, tiny_funnel, keras_roundtrip):
    config, tasks = CONFIGS[model_type]
    model = build_model(config, tiny_funnel.schema, tasks)
    assert isinstance(model, MultiTaskModel)

    weighting_vars = model.weighting.trainable_variables
    weighting_before = [v.numpy().copy() for v in weighting_vars]
    model.compile(optimizer=keras.optimizers.Adam(0.01), metrics={"ctr": ["auc"]})
    history = model.fit(tiny_funnel.train(batch_size=150), epochs=3, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]
    for task in tasks:
        assert f"{task['name']}_loss" in history
    assert 0.0 <= history["ctr_auc"][-1] <= 1.0

    features, _ = tiny_funnel.batch(64)
    outputs = _numpy(model(features, training=False))
    expected = [t["name"] for t in tasks] + [t["joint"] for t in tasks if "parent" in t]
    assert model.probability_names() == expected
    assert sorted(outputs) == sorted(expected + [f"{name}_logit" for name in expected])
    for name in expected:  # the probabilities are the logits through sigmoid / softmax
        z = outputs[f"{name}_logit"].astype(np.float64)
        if z.ndim == 2:
            want = np.exp(z - z.max(axis=1, keepdims=True))
            want /= want.sum(axis=1, keepdims=True)
        else:
            want = 1 / (1 + np.exp(-z))
        np.testing.assert_allclose(outputs[name], want, rtol=1e-5, atol=1e-7)
    for task in tasks:
        y = outputs[task["name"]]
        if task.get("kind") == "multiclass":
            assert y.shape == (64, 7)
            np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
        else:
            assert y.shape == (64,)
            assert np.all((y > 0) & (y < 1))

    # uncertainty weighting (shared_bottom's config) learns its log-variances through fit
    if "loss_weighting" in config:
        assert weighting_vars
        assert any(not np.allclose(v.numpy(), b) for v, b in zip(weighting_vars, weighting_before))

    # variable groups for the trainer: with the weighting's own, a partition of the
    # trainable variables
    shared = {id(v) for v in model.variable_groups().all_shared}
    task = {id(v) for v in model.variable_groups().task_order}
    own = {id(v) for v in weighting_vars}
    assert shared and task and not shared & task and not (shared | task) & own
    assert shared | task | own == {id(v) for v in model.trainable_variables}
    assert {id(v) for v in model.variable_groups().embedding_tables} <= shared
    assert {id(v) for v in model.variable_groups().balance_layer} <= shared
    groups = model.variable_groups()
    assert list(groups.task) == [t["name"] for t in model.tasks]
    assert sorted(id(v) for vs in groups.task.values() for v in vs) == sorted(map(id, groups.task_order))
    assert not set(map(id, groups.embedding_tables)) & set(map(id, groups.shared))
    # the tables come first: all_shared is in the model's order (the optimizers' slot order)
    assert list(map(id, groups.all_shared)) == [id(v) for v in model.trainable_variables if id(v) in shared]
    with pytest.raises(dataclasses.FrozenInstanceError):
        groups.shared = ()

    restored = keras_roundtrip(model)
    assert type(restored) is type(model)
    assert restored.get_config() == model.get_config()
    again = _numpy(restored(features, training=False))
    for name in outputs:
        np.testing.assert_array_equal(again[name], outputs[name])
    for a, b in zip(restored.weighting.trainable_variables, weighting_vars):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # compiled as saved: the optimizer's state and the metrics come back (fit trains on:
    # test_keras_workflow.py)
    assert restored.compiled and [m.name for m in restored.metrics][-1] == "ctr_auc"
    assert int(restored.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) > 0


def test_schema_inputs_follow_the_schema(tiny_funnel):
    schema = {
        "key": "impression_id",
        "categorical": [{"name": "user_id", "num_buckets": 10, "dim": 2},
                        {"name": "scene", "dtype": "string", "num_buckets": 4, "dim": 2}],
        "numeric": [{"name": "price", "dtype": "float64", "normalize": "log1p"}],
        "sequence": [{"name": "hist_item_id", "max_len": 5, "num_buckets": 10, "dim": 2},
                     {"name": "hist_query", "dtype": "string", "max_len": 3, "num_buckets": 10, "dim": 2}],
        "labels": [{"name": "click"}],
    }
    inputs = schema_inputs(schema)
    assert sorted(inputs) == ["hist_item_id", "hist_query", "price", "scene", "user_id"]
    expected = {
        "user_id": ("int64", (None,)), "scene": ("string", (None,)), "price": ("float32", (None,)),
        "hist_item_id": ("int64", (None, 5)), "hist_query": ("string", (None, 3)),
    }
    for name, (dtype, shape) in expected.items():
        assert (inputs[name].dtype, tuple(inputs[name].shape)) == (dtype, shape), name

    model = SingleTask(schema, [{"name": "ctr", "label": "click"}], tower_units=[2])
    out = model({"user_id": tf.constant([1, 2]), "scene": tf.constant(["a", "b"]),
                 "price": tf.constant([1.0, 2.0]),
                 "hist_item_id": tf.constant([[1, 2, -1, -1, -1], [-1] * 5], tf.int64),
                 "hist_query": tf.constant([["x", "", ""], ["", "", ""]])})
    assert out["ctr"].shape == (2,)


def test_compute_loss_is_the_weighted_sum_of_the_task_losses(tiny_funnel):
    model = _shared_bottom(tiny_funnel)
    features, labels = tiny_funnel.batch(64)
    outputs = model(features, training=False)
    total = float(model.compute_loss(x=features, y=labels, y_pred=outputs))

    p = _numpy(outputs)
    y = {k: v.numpy() for k, v in labels.items()}
    ctr = _bce(y["click"], p["ctr"]).mean()
    ctcvr = _bce(y["conversion"], p["ctcvr"]).mean()  # ESMM step: joint over all rows
    pp = -np.log(np.clip(p["purchasing_power"][np.arange(64), y["purchasing_power"].astype(int)], 1e-7, 1)).mean()
    follow = _bce(y["follow"], p["follow"]).mean()
    np.testing.assert_allclose(total, 2.0 * ctr + ctcvr + pp + follow, rtol=1e-5)
    np.testing.assert_allclose(p["ctcvr"], p["ctr"] * p["cvr"], rtol=1e-6)


def _shared_bottom(funnel):
    return build_model(
        {"type": "shared_bottom", "bottom_units": [8], "tower_units": []}, funnel.schema, FUNNEL_TASKS
    )


def test_sample_space_restricts_the_loss_to_clicked_rows(tiny_funnel):
    model = SingleTask(
        tiny_funnel.schema, [{"name": "cvr", "label": "conversion", "sample_space": "click"}],
        tower_units=[4],
    )
    features, labels = tiny_funnel.batch(64)
    outputs = model(features, training=False)
    total = float(model.compute_loss(y=labels, y_pred=outputs))
    click = labels["click"].numpy() == 1
    assert 0 < click.sum() < 64
    summed = _bce(labels["conversion"].numpy()[click], _numpy(outputs)["cvr"][click]).sum()
    np.testing.assert_allclose(total, summed / 64, rtol=1e-5)  # default: over the batch's rows
    per_space = SingleTask(
        tiny_funnel.schema,
        [{"name": "cvr", "label": "conversion", "sample_space": "click", "loss_normalization": "sample_space"}],
        tower_units=[4],
    )
    per_space.set_weights(model.get_weights())
    total = float(per_space.compute_loss(y=labels, y_pred=per_space(features, training=False)))
    np.testing.assert_allclose(total, summed / click.sum(), rtol=1e-5)  # over the clicked rows


def test_compute_loss_refuses_sample_weight(tiny_funnel):
    model = _shared_bottom(tiny_funnel)
    features, labels = tiny_funnel.batch(8)
    with pytest.raises(ValueError, match="sample_space"):
        model.compute_loss(y=labels, y_pred=model(features), sample_weight=np.ones(8))


def test_longer_funnel_chain_outputs_the_products_down_the_chain():
    schema = {
        "categorical": [{"name": "user_id", "num_buckets": 10, "dim": 2},
                        {"name": "item_id", "num_buckets": 10, "dim": 2}],
        "labels": [{"name": "click"}, {"name": "cart"}, {"name": "buy"}],
    }
    tasks = [
        {"name": "ctr", "label": "click"},
        {"name": "cart", "label": "cart", "parent": "ctr"},
        {"name": "buy", "label": "buy", "parent": "cart", "joint": "ctbuy"},
    ]
    model = ESMM(schema, tasks, tower_units=[])
    out = _numpy(model({"user_id": np.array([1, 2, 3]), "item_id": np.array([4, 5, 6])}))
    assert model.probability_names() == ["ctr", "cart", "buy", "ctr_cart", "ctbuy"]
    assert sorted(n for n in out if not n.endswith("_logit")) == ["buy", "cart", "ctbuy", "ctr", "ctr_cart"]
    np.testing.assert_allclose(out["ctr_cart"], out["ctr"] * out["cart"], rtol=1e-6)
    np.testing.assert_allclose(out["ctbuy"], out["ctr"] * out["cart"] * out["buy"], rtol=1e-6)

    labels = {"click": np.array([1.0, 1, 0]), "cart": np.array([1.0, 0, 0]), "buy": np.array([1.0, 0, 0])}
    loss = float(model.compute_loss(y=labels, y_pred=model({"user_id": np.array([1, 2, 3]),
                                                             "item_id": np.array([4, 5, 6])})))
    expected = sum(_bce(labels[k], out[o]).mean() for k, o in
                   (("click", "ctr"), ("cart", "ctr_cart"), ("buy", "ctbuy")))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_compile_builds_the_optimizer_on_the_trainable_variables(tiny_funnel):
    model = _shared_bottom(tiny_funnel)
    model.compile(optimizer="adam")
    assert model.optimizer.built
    # iterations (+ learning rate) + two Adam slots per trainable variable
    slots = [v for v in model.optimizer.variables if "iteration" not in v.path
             and "learning_rate" not in v.path]
    assert len(slots) == 2 * len(model.trainable_variables)


def test_gradient_surgery_weightings_are_refused_for_fit(tiny_funnel):
    with pytest.raises(ValueError, match="pcgrad.*model.fit"):
        SingleTask(tiny_funnel.schema, FLAT_TASKS, loss_weighting={"type": "pcgrad"})


@pytest.mark.parametrize(
    "interaction, message",
    [
        ({"type": "attention"}, "Received: interaction="),
        ("fm", "Received: interaction='fm'"),
        ({"type": "fm", "num_layers": 2}, "interaction.num_layers: unknown key"),
        ({"type": "dot", "low_rank": 2}, "interaction.low_rank: unknown key"),
        ({"type": "dcn", "num_layers": 0}, "Received: interaction.num_layers=0"),
        ({"type": "dcn", "low_rank": -1}, "Received: interaction.low_rank=-1"),
    ],
)
def test_bad_interaction_configs_are_refused(tiny_funnel, interaction, message):
    with pytest.raises(ValueError, match=message):
        SingleTask(tiny_funnel.schema, FLAT_TASKS, interaction=interaction)


def test_fm_needs_equal_categorical_dims():
    schema = {
        "categorical": [{"name": "user_id", "num_buckets": 10, "dim": 2},
                        {"name": "item_id", "num_buckets": 10, "dim": 3}],
        "labels": [{"name": "click"}],
    }
    with pytest.raises(ValueError, match=r"same embedding dim.*'item_id': 3"):
        SingleTask(schema, [{"name": "ctr", "label": "click"}], interaction={"type": "fm"})


def test_bad_tasks_and_hyperparameters_are_refused(tiny_funnel):
    with pytest.raises(ValueError, match="tasks\\[0\\].label.*'clicks' is not a label"):
        SingleTask(tiny_funnel.schema, [{"name": "ctr", "label": "clicks"}])
    with pytest.raises(ValueError, match="Received: tower_units=\\[8, -1\\]"):
        SingleTask(tiny_funnel.schema, FLAT_TASKS, tower_units=[8, -1])
    with pytest.raises(ValueError, match="Received: dropout=1.5"):
        SingleTask(tiny_funnel.schema, FLAT_TASKS, dropout=1.5)
    with pytest.raises(ValueError, match="use ESMM"):
        SingleTask(tiny_funnel.schema, FUNNEL_TASKS)


def test_masked_mean_ignores_padding_and_gives_zero_for_empty_rows():
    x = np.arange(12, dtype="float32").reshape(2, 3, 2)
    mask = np.array([[True, True, False], [False, False, False]])
    out = keras.ops.convert_to_numpy(MaskedMean()(x, mask=mask))
    np.testing.assert_allclose(out, [[1.0, 2.0], [0.0, 0.0]])


def test_users_without_history_get_finite_outputs(tiny_funnel):
    features, _ = tiny_funnel.batch(16)
    features = dict(features)
    for sequence in tiny_funnel.schema["sequence"]:
        pad = "" if sequence["dtype"] == "string" else tf.constant(-1, tf.int64)
        features[sequence["name"]] = tf.fill(tf.shape(features[sequence["name"]]), pad)
    for model in (_shared_bottom(tiny_funnel),
                  DUPN(tiny_funnel.schema, DUPN_TASKS, lstm_units=4, attention_units=4,
                       representation_dim=8)):
        for value in _numpy(model(features)).values():
            assert np.all(np.isfinite(value))


def test_interaction_block_learns_user_item_products(funnel_factory):
    """Clicks driven by user x item factor products (signal=4: the u.v term dominates pCTR).

    Setting: 50 users x 50 items, 20k rows a day, id tables 100x larger than the ids (no
    hash collisions), features user_id, item_id, position, scene. The model is SingleTask
    with no hidden tower, so without an interaction block it is logistic regression on the
    embeddings, which cannot express u.v; the FM block makes it a factorization machine and
    the DCN block adds bilinear cross terms; the dot block gives the output layer <u, v> itself. Same data, seed and steps (3 epochs of 512).
    """
    funnel = funnel_factory(
        "factor_clicks", 20_000, bucket_scale=50, keep=("user_id", "item_id", "position", "scene"),
        num_users=50, num_items=50, num_categories=5, num_brands=10, num_shops=5, max_len=2,
        dim=8, base_ctr=0.2, signal=4.0,
    )
    eval_features, eval_labels = funnel.evaluate()
    aucs = {}
    for name, interaction in (("none", None), ("fm", {"type": "fm"}), ("dot", {"type": "dot"}),
                              ("dcn", {"type": "dcn", "num_layers": 2})):
        keras.utils.set_random_seed(7)
        model = SingleTask(funnel.schema, [{"name": "ctr", "label": "click"}], tower_units=[],
                           interaction=interaction, seed=3)
        model.compile(optimizer=keras.optimizers.Adam(0.02))
        model.fit(funnel.train(batch_size=512), epochs=3, verbose=0)
        pred = model.predict(eval_features, verbose=0)["ctr"]
        aucs[name] = auc(eval_labels["click"], pred)
    assert aucs["fm"] > aucs["none"] + 0.05, aucs
    assert aucs["dot"] > aucs["none"] + 0.05, aucs
    assert aucs["dcn"] > aucs["none"] + 0.05, aucs
