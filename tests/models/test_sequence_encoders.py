"""`sequence_encoders` in every model type: which encoder reads each behavior history, what
it compares the history with, where its output goes, and the messages of bad configs."""

import copy

import keras
import numpy as np
import pytest

from mtlrec.conventions.key_paths import KeyPathError
from mtlrec.layers import PropertyGatedLSTMEncoder, SelfAttentionEncoder, TargetAttention
from mtlrec.models import build_model
from mtlrec.models.base.history_specs import history_specs

SCHEMA = {
    "categorical": [
        {"name": "user_id", "dtype": "int64", "num_buckets": 20, "dim": 4},
        {"name": "item_id", "dtype": "int64", "num_buckets": 30, "dim": 4},
        {"name": "category", "dtype": "string", "num_buckets": 8, "dim": 4},
        {"name": "anchor_item", "dtype": "int64", "shared_with": "item_id"},
    ],
    "numeric": [{"name": "price", "normalize": "log1p"}],
    "sequence": [
        {"name": "hist_item_id", "dtype": "int64", "max_len": 5, "shared_with": "item_id"},
        {"name": "hist_category", "dtype": "string", "max_len": 5, "shared_with": "category"},
        {"name": "cart_item_id", "dtype": "int64", "max_len": 3, "shared_with": "item_id"},
        {"name": "buy_item_id", "dtype": "int64", "max_len": 4, "shared_with": "item_id"},
        {"name": "buy_behavior", "dtype": "int64", "max_len": 4, "num_buckets": 4, "dim": 2},
        {"name": "hist_behavior", "dtype": "int64", "max_len": 5, "num_buckets": 4, "dim": 2},
        {"name": "hist_shop", "dtype": "int64", "max_len": 2, "num_buckets": 6, "dim": 3},
    ],
    "labels": [{"name": "click"}, {"name": "conversion"}],
}

#: One history per encoder; hist_shop is named by none (mean-pooled alone, as before).
ENCODERS = {
    "clicks": {"encoder": "target_attention", "features": ["hist_item_id", "hist_category"],
               "options": {"units": [4]}},
    "cart_item_id": {"encoder": "self_attention", "options": {"position_dim": 2, "num_heads": 2}},
    "buys": {"encoder": "property_gated_lstm", "features": ["buy_item_id", "buy_behavior"],
             "options": {"units": 3, "attention_units": 3}},
    "hist_behavior": "mean",
}

FUNNEL = [{"name": "ctr", "label": "click"},
          {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}]
TWO_TASKS = [{"name": "ctr", "label": "click"},
             {"name": "cvr", "label": "conversion", "sample_space": "click"}]
MODELS = {
    "single_task": ([{"name": "ctr", "label": "click"}], {"tower_units": [4]}),
    "shared_bottom": (TWO_TASKS, {"bottom_units": [6], "tower_units": [4]}),
    "esmm": (FUNNEL, {"tower_units": [4]}),
    "escm2": (FUNNEL, {"tower_units": [4]}),
    "aitm": ([{"name": "ctr", "label": "click"}, {"name": "ctcvr", "label": "conversion"}], {"tower_units": [4]}),
    "mmoe": (TWO_TASKS, {"num_experts": 2, "expert_units": [4], "tower_units": [4]}),
    "ple": (TWO_TASKS, {"expert_units": [4], "tower_units": [4]}),
    "cross_stitch": (TWO_TASKS, {"column_units": [4], "tower_units": [4]}),
    "soft_sharing": (TWO_TASKS, {"column_units": [4], "tower_units": [4]}),
}


def _inputs(seed=0, rows=6):
    rng = np.random.default_rng(seed)
    x = {
        "user_id": rng.integers(0, 20, rows), "item_id": rng.integers(0, 30, rows),
        "anchor_item": rng.integers(0, 30, rows), "category": rng.choice(list("abcd"), rows),
        "price": rng.random(rows).astype("float32"),
    }
    for f in SCHEMA["sequence"]:
        ids = rng.integers(0, 6, (rows, f["max_len"]))
        ids[np.arange(f["max_len"])[None, :] >= rng.integers(0, f["max_len"] + 1, rows)[:, None]] = -1
        x[f["name"]] = ids.astype(str) if f["dtype"] == "string" else ids
        if f["dtype"] == "string":
            x[f["name"]][ids == -1] = ""
    return x


def _build(kind, encoders=ENCODERS, seed=3, **options):
    tasks, hyper = MODELS[kind]
    return build_model({"type": kind, "seed": seed, "sequence_encoders": copy.deepcopy(encoders), **hyper, **options},
                       SCHEMA, tasks)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_model_reads_histories_with_every_encoder_and_round_trips(kind, keras_roundtrip):
    model = _build(kind)
    encoders = {name: model.get_layer(f"{name}_encoder") for name in ENCODERS}
    assert isinstance(encoders["clicks"], TargetAttention)
    assert isinstance(encoders["cart_item_id"], SelfAttentionEncoder)
    assert isinstance(encoders["buys"], PropertyGatedLSTMEncoder)
    assert model.get_layer("hist_shop_mean") is not None  # named by no history: mean-pooled alone
    inputs = _inputs()
    out = {k: np.asarray(v) for k, v in model(inputs).items()}
    assert all(np.isfinite(v).all() for v in out.values())
    loaded = keras_roundtrip(model)
    assert loaded.get_config()["sequence_encoders"] == model.get_config()["sequence_encoders"]
    for name, value in loaded(inputs).items():
        np.testing.assert_array_equal(np.asarray(value), out[name], err_msg=name)


def test_the_config_keeps_every_history_in_full():
    config = _build("esmm").get_config()["sequence_encoders"]
    assert list(config) == ["clicks", "cart_item_id", "buys", "hist_behavior"]  # schema order
    assert config["clicks"] == {
        "encoder": "target_attention", "features": ["hist_item_id", "hist_category"],
        "query": ["item_id", "category"], "options": {"units": [4], "activation": "sigmoid"},
    }
    assert config["cart_item_id"]["query"] == ["item_id"]
    assert config["buys"]["options"] == {"units": 3, "attention_units": 3, "properties": ["buy_behavior"]}
    assert config["hist_behavior"] == {"encoder": "mean", "features": ["hist_behavior"], "query": [], "options": {}}


def _embeddings(model, inputs):
    return model.feature_embedding({k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()})


def _encoder_output(model, name, inputs):
    probe = keras.Model(model.input, model.get_layer(f"{name}_encoder").output)
    return np.asarray(probe(inputs))


def test_target_attention_compares_the_history_with_the_candidates_features_of_its_tables():
    model = _build("esmm")
    inputs = _inputs(seed=1)
    emb = _embeddings(model, inputs)
    history = np.concatenate([emb["sequences"]["hist_item_id"], emb["sequences"]["hist_category"]], -1)
    query = np.concatenate([emb["embeddings"]["item_id"], emb["embeddings"]["category"]], -1)
    mask = np.asarray(emb["masks"]["hist_item_id"]) | np.asarray(emb["masks"]["hist_category"])
    expected = model.get_layer("clicks_encoder")([history, query], mask=mask)
    np.testing.assert_allclose(_encoder_output(model, "clicks", inputs), np.asarray(expected), atol=1e-6)
    # a named query: the anchor item (the item_id table) instead of the candidate; the
    # category slot, whose table no query feature reads, is zeros
    named = copy.deepcopy(ENCODERS)
    named["clicks"]["query"] = ["anchor_item"]
    model = _build("esmm", named)
    emb = _embeddings(model, inputs)
    query = np.concatenate([emb["embeddings"]["anchor_item"], np.zeros((6, 4), "float32")], -1)
    expected = model.get_layer("clicks_encoder")([history, query], mask=mask)
    np.testing.assert_allclose(_encoder_output(model, "clicks", inputs), np.asarray(expected), atol=1e-6)


def test_the_candidate_changes_what_target_attention_reads_but_padded_steps_do_not():
    model = _build("mmoe")
    inputs = _inputs(seed=2)
    base = _encoder_output(model, "clicks", inputs)
    other = dict(inputs, item_id=(inputs["item_id"] + 1) % 30)
    assert not np.allclose(_encoder_output(model, "clicks", other), base)
    # the same histories padded to the schema's max_len from fewer ids: the padding is the same,
    # so only rows whose history changed may change
    shorter = dict(inputs, hist_item_id=inputs["hist_item_id"].copy(), hist_category=inputs["hist_category"].copy())
    shorter["hist_item_id"][0] = -1
    shorter["hist_category"][0] = ""
    changed = _encoder_output(model, "clicks", shorter)
    np.testing.assert_array_equal(changed[0], np.zeros(8))  # no history: zeros
    np.testing.assert_array_equal(changed[1:], base[1:])


@pytest.mark.parametrize("interaction", ["fm", "dot"])
def test_histories_are_fields_of_the_field_interactions(interaction):
    # 4 categorical fields of width 4, then per history: clicks' two slices (item, category:
    # width 4 each), cart's BST output (4 + 2: projected), buys' LSTM output (3: projected),
    # hist_behavior's mean (2: projected); hist_shop (named by none) stays out, as before
    model = _build("esmm", interaction={"type": interaction})
    layer = model.get_layer(f"{interaction}_interaction")
    assert tuple(layer.input.shape[1:]) == (4 + 2 + 1 + 1 + 1, 4)
    projected = sorted(l.name for l in model.layers if l.name.endswith("_field"))
    assert projected == ["buys_field", "cart_item_id_field", "hist_behavior_field"]
    assert model.get_layer("buys_field").kernel.shape == (3, 4)


def test_dcn_crosses_the_histories_in_the_dense_vector():
    model = _build("ple", interaction={"type": "dcn", "num_layers": 1})
    width = model.get_layer("cross_network").input.shape[-1]
    # 4 categorical x 4 + price, clicks 8, cart 6, buys 3, hist_behavior 2, hist_shop 3
    assert width == 16 + 1 + 8 + 6 + 3 + 2 + 3


def test_same_seed_same_model_and_every_encoder_seeded_apart():
    a, b, c = _build("esmm", seed=3), _build("esmm", seed=3), _build("esmm", seed=4)
    inputs = _inputs()
    for name, value in a(inputs).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(b(inputs)[name]))
        assert not np.allclose(np.asarray(value), np.asarray(c(inputs)[name]))
    kernels = [np.asarray(w) for name in ENCODERS if name != "hist_behavior"
               for w in a.get_layer(f"{name}_encoder").weights if "kernel" in w.name]
    assert len(kernels) > 10
    flat = [k.ravel()[:4] for k in kernels]
    assert all(not np.array_equal(x, y) for i, x in enumerate(flat) for y in flat[i + 1:])


def test_dupn_keeps_its_own_encoder():
    with pytest.raises(KeyPathError, match="model.sequence_encoders: unknown hyperparameter of model type 'dupn'"):
        build_model({"type": "dupn", "sequence_encoders": {"hist_item_id": "mean"}}, SCHEMA, FUNNEL)


BAD = [
    ({"clicks": {"encoder": "din", "features": ["hist_item_id"]}},
     "model.sequence_encoders.clicks.encoder: expected one of mean, target_attention, self_attention, "
     "property_gated_lstm, got 'din'"),
    ({"hist_behavior": "target_attention"},
     "model.sequence_encoders.hist_behavior.query: expected the candidate's features whose tables history "
     "'hist_behavior' shares, but none of its features reads a categorical feature's table (shared_with); "
     "declare its sequence features shared_with the candidate's features (schema.sequence[].shared_with)"),
    ({"hist_item_id": {"encoder": "target_attention", "query": ["user_id"]}},
     "model.sequence_encoders.hist_item_id.query[0]: expected a candidate feature whose table a feature of "
     "history 'hist_item_id' shares (hist_item_id reads item_id's table), got 'user_id' (table 'user_id')"),
    ({"hist_item_id": {"encoder": "target_attention", "query": ["item_id", "anchor_item"]}},
     "model.sequence_encoders.hist_item_id.query[1]: 'anchor_item' and 'item_id' both read the table of "
     "'hist_item_id'; name one of them"),
    ({"hist_item_id": {"encoder": "target_attention", "query": ["price"]}},
     "model.sequence_encoders.hist_item_id.query[0]: expected one of the categorical features (user_id, "
     "item_id, category, anchor_item), got 'price'"),
    ({"h": {"encoder": "mean", "features": ["hist_item_id", "cart_item_id"]}},
     "model.sequence_encoders.h.features: expected sequence features of one max_len, read step by step "
     "together, got hist_item_id (5), cart_item_id (3)"),
    ({"a": {"encoder": "mean", "features": ["hist_item_id"]}, "b": {"encoder": "mean", "features": ["hist_item_id"]}},
     "model.sequence_encoders.b.features[0]: 'hist_item_id' is already read by history 'a'"),
    ({"clicks": "mean"},
     "model.sequence_encoders.clicks.features: expected the sequence features history 'clicks' reads"),
    ({"hist_item_id": {"encoder": "mean", "query": ["item_id"]}},
     "model.sequence_encoders.hist_item_id.query: mean reads no query; remove it or choose an attention encoder"),
    ({"hist_item_id": {"encoder": "target_attention", "options": {"heads": 2}}},
     "model.sequence_encoders.hist_item_id.options.heads: unknown setting of target_attention; expected one "
     "of units, activation"),
    ({"hist_item_id": {"encoder": "target_attention", "options": {"units": [0]}}},
     "model.sequence_encoders.hist_item_id.options.units: Expected units to be a non-empty list of positive "
     "integers. Received: units=[0]"),
    ({"hist_item_id": {"encoder": "self_attention", "options": {"num_heads": 5}}},
     "model.sequence_encoders.hist_item_id.options.num_heads: expected a divisor of the attention's width "
     "12 (the steps' 4 + position_dim 8), got 5"),
    ({"buys": {"encoder": "property_gated_lstm", "features": ["buy_item_id", "buy_behavior"],
               "options": {"properties": ["buy_item_id", "buy_behavior"]}}},
     "model.sequence_encoders.buys.options.properties: expected some features of history 'buys' left as the "
     "items the LSTM reads; all of buy_item_id, buy_behavior are properties"),
    ({"hist_item_id": {"encoder": "mean", "window": 3}},
     "model.sequence_encoders.hist_item_id.window: unknown key; expected one of encoder, features, query, options"),
    (["hist_item_id"], "model.sequence_encoders: expected a mapping of history name -> encoder"),
]


@pytest.mark.parametrize("encoders, message", BAD)
def test_bad_encoder_configs_name_the_key_and_what_was_expected(encoders, message):
    with pytest.raises(KeyPathError) as err:
        build_model({"type": "esmm", "sequence_encoders": encoders}, SCHEMA, FUNNEL)
    assert str(err.value).startswith(message), str(err.value)
    # the same check before anything is built (what the config loader runs)
    with pytest.raises(KeyPathError) as checked:
        history_specs(encoders, SCHEMA, "model.sequence_encoders")
    assert str(checked.value) == str(err.value)
