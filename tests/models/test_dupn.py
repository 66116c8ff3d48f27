"""DUPN: feature roles, the shared item table, the rank head, user_model transfer and
item_scorer."""

from pathlib import Path

import keras
import numpy as np
import pytest

from mtlrec.models import DUPN

TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "rank", "label": "click"},
    {"name": "purchasing_power", "label": "purchasing_power", "kind": "multiclass", "num_classes": 7},
    {"name": "follow", "label": "follow"},
]
SMALL = dict(lstm_units=4, attention_units=4, representation_dim=6, tower_units=[4])


def _model(funnel, **kwargs):
    return DUPN(funnel.schema, TASKS, **{**SMALL, **kwargs})


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_user_side_and_item_side_inputs(tiny_funnel):
    model = _model(tiny_funnel)
    user = model.user_model()
    assert sorted(user.input) == sorted(
        ["user_id", "user_gender", "scene", "hist_item_id", "hist_behavior", "hist_scene"]
    )
    assert user.output.shape == (None, 6)
    scorer = model.item_scorer()
    assert sorted(scorer.input) == ["item_id", "price", "representation"]
    assert sorted(scorer.output) == ["ctr", "rank"]


def test_candidate_item_and_behavior_sequence_share_one_table(tiny_funnel):
    model = _model(tiny_funnel)
    names = sorted(v.path.split("/")[-1] for v in model.variable_groups().embedding_tables)
    assert "embedding_item_id" in names and "embedding_hist_item_id" not in names
    table = next(v for v in model.variable_groups().embedding_tables if v.path.endswith("embedding_item_id"))
    features, _ = tiny_funnel.batch(32)
    before = _np(model.user_model()({k: features[k] for k in model.user_model().input}))
    table.assign(table.numpy() + 0.3)  # moves every item, in the history too
    after = _np(model.user_model()({k: features[k] for k in model.user_model().input}))
    assert not np.allclose(before, after)


def test_outputs_and_item_scorer_agree(tiny_funnel):
    model = _model(tiny_funnel)
    features, _ = tiny_funnel.batch(32)
    out = {k: _np(v) for k, v in model(features).items()}
    assert out["ctr"].shape == (32,) and out["rank"].shape == (32,)
    assert out["purchasing_power"].shape == (32, 7) and out["follow"].shape == (32,)
    rep = model.user_model()({k: features[k] for k in model.user_model().input})
    scored = model.item_scorer()({"representation": rep, "item_id": features["item_id"],
                                  "price": features["price"]})
    for name in ("ctr", "rank"):
        np.testing.assert_allclose(_np(scored[name]), out[name], rtol=1e-5, atol=1e-7)


def test_rank_head_is_a_per_user_weighting_of_the_ranking_features(tiny_funnel):
    """rank = sigmoid(a * <w(r), f> + b), w(r) = rank tower(r), f = log1p(price)."""
    model = _model(tiny_funnel)
    features, _ = tiny_funnel.batch(16)
    rep = model.user_model()({k: features[k] for k in model.user_model().input})
    w = _np(model.towers["rank"](rep))
    assert w.shape == (16, 1)
    price = features["price"].numpy()
    f = np.sign(price) * np.log1p(np.abs(price))
    a, b = (v.numpy() for v in model.rank_score.trainable_variables)
    expected = 1 / (1 + np.exp(-(w[:, 0] * f * a[0, 0] + b[0])))
    np.testing.assert_allclose(_np(model(features)["rank"]), expected, rtol=1e-5)


def test_new_task_on_the_frozen_representation_leaves_it_unchanged(tiny_funnel):
    """The paper's transfer: train a new head on top of the frozen user representation."""
    model = _model(tiny_funnel)
    user = model.user_model()
    user.trainable = False
    head = keras.layers.Dense(1, activation="sigmoid", name="new_task")
    transfer = keras.Model(user.input, head(user.output))
    frozen = [v.numpy().copy() for v in user.weights]
    optimizer = keras.optimizers.Adam(0.05)
    optimizer.build(transfer.trainable_variables)  # eagerly: faster than in the traced step
    transfer.compile(optimizer=optimizer, loss="binary_crossentropy")

    def user_side(features, labels):
        return {k: features[k] for k in user.input}, labels["follow"]

    data = tiny_funnel.train(batch_size=100).map(user_side)
    head_before = [v.numpy().copy() for v in head.weights]
    transfer.fit(data, epochs=2, verbose=0)
    assert len(transfer.trainable_weights) == 2
    for before, v in zip(frozen, user.weights):
        np.testing.assert_array_equal(v.numpy(), before)
    assert any(not np.allclose(v.numpy(), b) for v, b in zip(head.weights, head_before))

    # fine-tuning is the same path with the representation trainable
    user.trainable = True
    assert len(transfer.trainable_weights) == 2 + len(user.trainable_weights) > 2


def test_interaction_blocks_apply_to_the_item_heads(tiny_funnel):
    features, _ = tiny_funnel.batch(8)
    for interaction in ({"type": "fm"}, {"type": "dot"}, {"type": "dcn", "num_layers": 1}):
        model = _model(tiny_funnel, interaction=interaction)
        out = model(features)
        assert np.all(np.isfinite(_np(out["ctr"])))
        assert model.interaction_layer is not None
        assert model.interaction_layer.built


def test_feature_roles_and_rank_task_errors(tiny_funnel):
    with pytest.raises(ValueError, match="features.query: unknown key"):
        _model(tiny_funnel, features={"query": ["scene"]})
    with pytest.raises(ValueError, match="features.behavior.*'hist_click' is not one"):
        _model(tiny_funnel, features={"behavior": ["hist_click"]})
    with pytest.raises(ValueError, match="Received: rank_task='purchasing_power'"):
        _model(tiny_funnel, rank_task="purchasing_power")
    with pytest.raises(ValueError, match="ranking features"):
        _model(tiny_funnel, rank_task="rank", features={"rank": []})
    with pytest.raises(ValueError, match="also behavior sequences"):
        _model(tiny_funnel, features={"behavior": ["hist_item_id"],
                                      "properties": ["hist_item_id", "hist_scene"]})


def test_feature_roles_as_arguments_default_to_the_inferred_roles(tiny_funnel):
    """Naming today's inferred roles explicitly builds the same model (same inputs, same
    weights, same outputs); the `features` dict of older configs still works."""
    features, _ = tiny_funnel.batch(16)
    inferred = _model(tiny_funnel, seed=3)
    explicit = _model(
        tiny_funnel, seed=3,
        user_features=["user_id", "user_gender", "scene"], item_features=["item_id", "price"],
        behavior_features=["hist_item_id"], property_features=["hist_behavior", "hist_scene"],
        rank_features=["price"], item_tasks=["ctr", "rank"], rank_task="rank",
    )
    older = _model(tiny_funnel, seed=3, features={"item": ["item_id", "price"], "rank": ["price"]})
    for other in (explicit, older):
        assert sorted(other.user_model().input) == sorted(inferred.user_model().input)
        assert sorted(other.item_scorer().input) == sorted(inferred.item_scorer().input)
        for name, value in inferred(features).items():
            np.testing.assert_allclose(_np(other(features)[name]), _np(value), rtol=1e-6)
    assert explicit.get_config()["user_features"] == ["user_id", "user_gender", "scene"]
    assert older.get_config()["item_features"] == ["item_id", "price"]
    assert older.get_config()["features"] is None
    assert inferred.get_config()["item_features"] is None


def test_user_features_choose_the_attention_query(tiny_funnel):
    model = _model(tiny_funnel, user_features=["user_id", "scene"])
    assert sorted(model.user_model().input) == sorted(
        ["user_id", "scene", "hist_item_id", "hist_behavior", "hist_scene"]
    )
    with pytest.raises(ValueError, match=r"^user_features: \['item_id'\] are also item-side features"):
        _model(tiny_funnel, user_features=["user_id", "item_id"])
    with pytest.raises(ValueError, match=r"Expected item_features to name one of: .*'hist_item_id' is not one"):
        _model(tiny_funnel, item_features=["hist_item_id"])
    with pytest.raises(ValueError, match=r"Expected the item features once, as item_features or as features.item"):
        _model(tiny_funnel, item_features=["item_id"], features={"item": ["item_id"]})


def test_round_trip_keeps_roles_and_weights(tmp_path, tiny_funnel):
    model = _model(tiny_funnel, seed=4, user_features=["user_id", "scene"], rank_features=["price"])
    model.save(tmp_path / "dupn.keras")
    restored = keras.saving.load_model(tmp_path / "dupn.keras", safe_mode=True)
    assert restored.get_config() == model.get_config()
    assert [v.path for v in restored.weights] == [v.path for v in model.weights]
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_keras_file_written_before_the_role_arguments_loads_with_its_weights():
    """`data/dupn_format3.keras`: a DUPN (the tiny schema, seed=7, every weight moved off
    its init) saved during mtlrec 0.3.0's development, when its embedding layer was a
    `PartialFeatureEmbedding` (Keras files a layer's weights under its class name);
    `data/dupn_format3.npz` holds 5 input rows and the outputs that model gave them."""
    data = Path(__file__).parent / "data"
    recorded = np.load(data / "dupn_format3.npz", allow_pickle=True)
    model = keras.saving.load_model(data / "dupn_format3.keras", safe_mode=True)
    features = {k[3:]: recorded[k] for k in recorded.files if k.startswith("in_")}
    outputs = model(features)
    names = [k[4:] for k in recorded.files if k.startswith("out_")]
    assert sorted(names) == sorted(outputs)
    for name in names:
        np.testing.assert_allclose(_np(outputs[name]), recorded[f"out_{name}"], rtol=1e-6, atol=1e-7)
