"""DUPN: feature roles, the shared item table, the rank head, user_model transfer and
item_scorer."""

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
    for interaction in ({"type": "fm"}, {"type": "dcn", "num_layers": 1}):
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
