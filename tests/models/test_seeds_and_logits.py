"""Seed discipline (every weight from the model seed, no two experts/gates/towers alike)
and logit-space heads and losses, for every model type."""

import itertools
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.losses import task_losses
from mtlrec.models import ESMM, build_model
from mtlrec.models.base._funnel_joint import FunnelJoint
from mtlrec.models.model_format import MODEL_FORMAT
from mtlrec.conventions.seeding import derive_seed

FUNNEL_TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
    {"name": "follow", "label": "follow"},
]
DUPN_TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "rank", "label": "click"},
    {"name": "follow", "label": "follow"},
]
FLAT_TASKS = [{"name": "ctr", "label": "click"}, {"name": "follow", "label": "follow"}]
# Equal shapes wherever the architecture allows them, so a seed collision would show.
CONFIGS = {
    "single_task": ({"type": "single_task", "tower_units": [8, 8],
                     "interaction": {"type": "dcn", "num_layers": 2, "low_rank": 4}}, FLAT_TASKS),
    "shared_bottom": ({"type": "shared_bottom", "bottom_units": [8, 8], "tower_units": [8]},
                      FUNNEL_TASKS),
    "esmm": ({"type": "esmm", "tower_units": [8, 8], "interaction": {"type": "dcn"}}, FUNNEL_TASKS),
    "mmoe": ({"type": "mmoe", "num_experts": 3, "expert_units": [8, 8], "tower_units": [8]},
             FUNNEL_TASKS),
    "ple": ({"type": "ple", "num_levels": 3, "num_task_experts": 2, "num_shared_experts": 2,
             "expert_units": [16, 16], "tower_units": [16]}, FUNNEL_TASKS),
    "cross_stitch": ({"type": "cross_stitch", "column_units": [8, 8], "tower_units": [8]},
                     FUNNEL_TASKS),
    "soft_sharing": ({"type": "soft_sharing", "column_units": [8, 8], "tower_units": [8]},
                     FUNNEL_TASKS),
    "dupn": ({"type": "dupn", "lstm_units": 4, "attention_units": 4, "representation_dim": 8,
              "tower_units": [4], "interaction": {"type": "fm"}}, DUPN_TASKS),
}


def _weights(model_type, schema, seed):
    config, tasks = CONFIGS[model_type]
    model = build_model(dict(config, seed=seed), schema, tasks)
    return {v.path: v.numpy().copy() for v in model.weights}


def _random(model_type, schema, seed):
    """The weights drawn at random (not zeros, ones or the cross-stitch's constant):
    those two unseeded builds do not share."""
    a, b = (_weights(model_type, schema, None) for _ in range(2))
    seeded = _weights(model_type, schema, seed)
    return {p: w for p, w in seeded.items() if not np.array_equal(a[p], b[p])}


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_one_seed_one_model_two_seeds_two_models(model_type, tiny_funnel):
    first = _weights(model_type, tiny_funnel.schema, 7)
    again = _weights(model_type, tiny_funnel.schema, 7)
    assert list(first) == list(again)
    for path in first:
        np.testing.assert_array_equal(first[path], again[path], err_msg=path)

    random = _random(model_type, tiny_funnel.schema, 7)
    assert any("embedding_" in p for p in random)  # the tables are seeded too
    other = _weights(model_type, tiny_funnel.schema, 8)
    unseeded = _weights(model_type, tiny_funnel.schema, None)
    for path in random:
        assert not np.array_equal(first[path], other[path]), path
        assert not np.array_equal(first[path], unseeded[path]), path


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_no_two_weights_start_equal(model_type, tiny_funnel):
    """Experts, gates, towers, columns, levels: no two random weights of one shape are
    equal, nor one the transpose of another (PLE's experts of different levels, with
    equal second-layer shapes, used to share their kernels)."""
    random = _random(model_type, tiny_funnel.schema, 3)
    for (pa, a), (pb, b) in itertools.combinations(random.items(), 2):
        if a.shape == b.shape:
            assert not np.array_equal(a, b), (pa, pb)
            assert not np.allclose(np.abs(a), np.abs(b)), (pa, pb)


def test_seeds_are_a_hash_of_seed_and_path():
    assert derive_seed(None, "a") is None
    assert derive_seed(1, "cgc_0", "task_0_expert_1") == derive_seed(1, "cgc_0", "task_0_expert_1")
    seeds = {
        derive_seed(s, *path)
        for s in range(20)
        for path in [("a",), ("b",), ("a", "b"), ("a/b",), ("ab",), ()]
    }
    assert len(seeds) == 20 * 6
    assert all(0 <= s < 2**31 for s in seeds)


# ------------------------------------------------------------------------- logits


def test_funnel_joint_is_the_product_in_log_space():
    a = np.array([-40.0, 40.0, 0.0, 2.0, -20.7, 40.0], dtype=np.float32)
    b = np.array([-40.0, 40.0, 0.0, -1.0, 3.0, -40.0], dtype=np.float32)
    prob, logit = (keras.ops.convert_to_numpy(t) for t in FunnelJoint()([a, b]))
    log_p = -np.logaddexp(0, -a.astype(np.float64)) - np.logaddexp(0, -b.astype(np.float64))
    np.testing.assert_allclose(prob, np.exp(log_p), rtol=1e-6)
    np.testing.assert_allclose(logit, log_p - np.log(-np.expm1(log_p)), rtol=1e-5)
    assert np.all(np.isfinite(logit))


def test_extreme_logits_give_finite_losses_and_gradients_through_the_joint():
    tasks = [
        {"name": "ctr", "label": "click"},
        {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
    ]
    a = tf.Variable([40.0, -40.0, 40.0, -40.0])
    b = tf.Variable([40.0, -40.0, -40.0, 40.0])
    labels = {"click": np.array([0.0, 1.0, 1.0, 0.0]), "conversion": np.array([0.0, 1.0, 1.0, 0.0])}
    with tf.GradientTape() as tape:
        prob, joint = FunnelJoint()([a, b])
        losses = task_losses(tasks, labels, {"ctr_logit": a, "cvr_logit": b, "ctcvr_logit": joint})
        total = losses["ctr"] + losses["cvr"]
    grads = tape.gradient(total, [a, b])
    assert np.isfinite(float(total))
    # row 0 (p ~ 1, y = 0): -log(1 - p) = -log(1 - sigmoid(40)^2) ~= 40 - log 2
    row0 = float(losses["cvr"]) * 4
    assert row0 > 39.0
    for g in grads:
        g = g.numpy()
        assert np.all(np.isfinite(g)) and np.all(g != 0)


def test_esmm_with_pctr_1e_9_trains_without_nan(tiny_funnel):
    model = ESMM(tiny_funnel.schema, tower_units=[8], seed=0)
    bias = model.towers["ctr"].dense_layers[-1].bias
    bias.assign(np.full(bias.shape, np.log(1e-9), dtype=np.float32))
    kernel = model.towers["ctr"].dense_layers[-1].kernel
    kernel.assign(np.zeros(kernel.shape, dtype=np.float32))
    features, labels = tiny_funnel.batch(64)
    out = model(features, training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["ctr"]), 1e-9, rtol=1e-4)

    with tf.GradientTape() as tape:
        losses = task_losses(model.task_specs, labels, model(features, training=True))
        total = losses["ctr"] + losses["cvr"]
    grads = tape.gradient(total, model.trainable_variables)
    assert np.isfinite(float(total))
    for g, v in zip(grads, model.trainable_variables):
        if g is not None:
            g = tf.convert_to_tensor(g).numpy()
            assert np.all(np.isfinite(g)), v.path
    # the clicked rows pull pCTR up: the ctr bias gets a gradient of about -(clicks)/B
    bias_grad = grads[[v.path for v in model.trainable_variables].index(bias.path)].numpy()
    assert bias_grad[0] < -0.1

    model.compile(optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(tiny_funnel.train(batch_size=150), epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weights)
    assert history["loss"][-1] < history["loss"][0]


# ------------------------------------------------------------------------- old files


def test_a_keras_file_written_before_the_logit_heads_is_refused_with_one_message():
    """`data/esmm_format1.keras`: an ESMM (tower_units=[4], seed=3, weights moved off their
    init) saved by mtlrec before model format 2. Keras would match its weights by layer position
    and load its ctr tower into the cvr tower (and back), silently; it is refused."""
    path = Path(__file__).parent / "data" / "esmm_format1.keras"
    message = (
        "the .keras file of model 'esmm': written by mtlrec before model formats were "
        f"recorded; this model reads model format 3 or {MODEL_FORMAT} only (format 2, mtlrec "
        "0.2.0: heads output logits, weights seeded by path; format 3, 0.3.0: MMoE experts "
        "batch-normalised; format 4, 0.4.0: only with expert_batch_norm), and loading the old weights would put "
        "them into the wrong layers."
    )
    with pytest.raises(ValueError) as err:
        keras.saving.load_model(path, safe_mode=True)
    assert message in str(err.value)


def test_a_keras_file_of_this_format_records_it_and_loads(tmp_path, tiny_funnel):
    model = ESMM(tiny_funnel.schema, tower_units=[4], seed=5, loss_weighting={"type": "uncertainty"})
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    store = {}
    model.save_own_variables(store)
    assert int(store["model_format"]) == MODEL_FORMAT
