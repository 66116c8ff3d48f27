"""Embedded numerics (`bucketize`, `piecewise_linear`) in the models: fields of the FM and
dot interactions, part of DCN's input, and kept by a `.keras` round trip."""

import keras
import numpy as np
import pytest

from mtlrec.models import ESMM, MMoE, SingleTask

SCHEMA = {
    "categorical": [
        {"name": "user_id", "num_buckets": 20, "dim": 4},
        {"name": "item_id", "num_buckets": 20, "dim": 4},
    ],
    "numeric": [
        {"name": "price", "normalize": "bucketize", "boundaries": [10.0, 100.0, 1000.0]},
        {"name": "age", "normalize": "piecewise_linear", "boundaries": [1.0, 10.0, 100.0, 1000.0]},
        {"name": "score", "normalize": "log1p"},
    ],
    "labels": [{"name": "click"}, {"name": "conversion"}],
}
FUNNEL = [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}]
FLAT = [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion"}]


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "user_id": rng.integers(0, 20, n),
        "item_id": rng.integers(0, 20, n),
        "price": rng.lognormal(4, 2, n).astype("float32"),
        "age": rng.pareto(1.0, n).astype("float32") * 10,
        "score": rng.random(n).astype("float32"),
    }


@pytest.mark.parametrize("kind, layer, width", [("fm", "fm_interaction", 4), ("dot", "dot_interaction", 6)])
def test_the_numeric_embeddings_are_fields_of_fm_and_dot(kind, layer, width):
    model = SingleTask(SCHEMA, FLAT, tower_units=[8], interaction={"type": kind}, seed=1)
    block = model.get_layer(layer)
    assert tuple(block.input.shape) == (None, 4, 4)  # user_id, item_id, price, age
    assert tuple(block.output.shape) == (None, width)  # FM: the dim; dot: 4 * 3 / 2 pairs
    # another bucket of price alone changes what the block gives the towers
    probe = keras.Model(model.inputs, block.output)
    a, b = _batch(), _batch()
    b["price"] = np.where(a["price"] < 100.0, 500.0, 5.0).astype("float32")
    assert not np.allclose(probe(a), probe(b))


def test_dcn_crosses_the_dense_vector_with_the_numeric_embeddings():
    model = SingleTask(SCHEMA, FLAT, tower_units=[8], interaction={"type": "dcn", "num_layers": 1}, seed=1)
    # 2 ids x 4 + price 4 + age 4 + the log1p value
    assert tuple(model.get_layer("cross_network").input.shape) == (None, 17)


def test_one_id_and_one_embedded_numeric_make_two_fields():
    schema = {**SCHEMA, "categorical": SCHEMA["categorical"][:1], "numeric": SCHEMA["numeric"][:1]}
    model = SingleTask(schema, FLAT, tower_units=[8], interaction={"type": "fm"}, seed=1)
    assert tuple(model.get_layer("fm_interaction").input.shape) == (None, 2, 4)
    narrow = {**schema, "numeric": [{**SCHEMA["numeric"][0], "dim": 2}]}
    with pytest.raises(ValueError, match=r"same embedding dim. Received embedding dims: \{'user_id': 4, 'price': 2\}"):
        SingleTask(narrow, FLAT, interaction={"type": "fm"})


@pytest.mark.parametrize("build", [
    lambda: ESMM(SCHEMA, FUNNEL, tower_units=[8], interaction={"type": "fm"}, seed=2),
    lambda: MMoE(SCHEMA, FLAT, num_experts=2, expert_units=[8], tower_units=[4], seed=2),
], ids=["esmm_fm", "mmoe"])
def test_keras_roundtrip_with_bucketized_numerics(build, keras_roundtrip):
    model = build()
    batch = _batch(32, seed=3)
    expected = model(batch)
    loaded = keras_roundtrip(model)
    assert loaded.get_config()["schema"]["numeric"] == model.get_config()["schema"]["numeric"]
    got = loaded(batch)
    for name in model.probability_names():
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(expected[name]))


def test_dupn_reads_an_embedded_numeric_as_an_item_feature_not_a_ranking_value(tiny_funnel):
    from mtlrec.models import DUPN

    schema = {**tiny_funnel.schema, "numeric": [{"name": "price", "normalize": "bucketize", "boundaries": [20.0, 100.0, 500.0]}]}
    small = dict(lstm_units=4, attention_units=4, representation_dim=6, tower_units=[4])
    model = DUPN(schema, [{"name": "ctr", "label": "click"}], **small)
    assert sorted(model.item_scorer().input) == ["item_id", "price", "representation"]
    features, _ = tiny_funnel.batch(8)
    assert tuple(model(features)["ctr"].shape) == (8,)
    # a rank head weighs numeric values: an embedded numeric is none
    rank = [{"name": "ctr", "label": "click"}, {"name": "rank", "label": "click"}]
    with pytest.raises(ValueError, match=r"The rank task needs numeric ranking features"):
        DUPN(schema, rank, rank_task="rank", **small)
    with pytest.raises(ValueError, match=r"rank_features"):
        DUPN(schema, rank, rank_features=["price"], **small)
