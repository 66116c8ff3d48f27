import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.losses import (
    MetaBalance,
    FixedWeighting,
    GradNorm,
    PCGrad,
    UncertaintyWeighting,
    make_weighting,
    project_conflicting,
    task_losses,
)

ESMM = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
]


def bce(y, p):
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


def values(losses):
    return {k: float(v) for k, v in losses.items()}


# --------------------------------------------------------------------------- task_losses


def test_binary_loss_is_mean_bce():
    losses = task_losses(
        [{"name": "ctr", "label": "click"}],
        {"click": np.array([1.0, 0.0, 1.0, 0.0])},
        {"ctr_logit": logit([[0.8], [0.2], [0.6], [0.4]])},
    )
    expected = (bce(1, 0.8) + bce(0, 0.2) + bce(1, 0.6) + bce(0, 0.4)) / 4
    assert values(losses)["ctr"] == pytest.approx(expected, rel=1e-6)
    assert values(losses)["ctr"] == pytest.approx(0.366985, rel=1e-5)


def test_sample_space_mask_and_normalisation():
    tasks = [{"name": "cvr", "label": "conversion", "sample_space": "click"}]
    labels = {
        "click": np.array([1.0, 0.0, 1.0, 0.0, 1.0]),
        "conversion": np.array([1.0, 0.0, 0.0, 0.0, 0.0]),
    }
    # rows 1 and 3 are outside the space: their (terrible) predictions must not count
    outputs = {"cvr_logit": logit([0.9, 0.999, 0.3, 0.999, 0.5])}
    in_space = bce(1, 0.9) + bce(0, 0.3) + bce(0, 0.5)
    # default: divided by the batch's 5 rows (Keras' sample-weight convention)
    assert values(task_losses(tasks, labels, outputs))["cvr"] == pytest.approx(in_space / 5, rel=1e-6)
    assert values(task_losses(tasks, labels, outputs))["cvr"] == pytest.approx(0.231037, rel=1e-5)
    # sample_space: a mean over the 3 clicked rows (PLE section 4.3)
    per_space = [dict(tasks[0], loss_normalization="sample_space")]
    assert values(task_losses(per_space, labels, outputs))["cvr"] == pytest.approx(in_space / 3, rel=1e-6)


def test_empty_sample_space_gives_zero_not_nan():
    tasks = [
        {"name": "cvr", "label": "conversion", "sample_space": "click"},
        {"name": "dwell", "label": "dwell", "kind": "regression", "sample_space": "click"},
    ]
    labels = {"click": np.zeros(3), "conversion": np.zeros(3), "dwell": np.ones(3)}
    outputs = {"cvr_logit": np.zeros(3), "dwell": np.zeros(3)}
    assert values(task_losses(tasks, labels, outputs)) == {"cvr": 0.0, "dwell": 0.0}
    per_space = [dict(t, loss_normalization="sample_space") for t in tasks]
    assert values(task_losses(per_space, labels, outputs)) == {"cvr": 0.0, "dwell": 0.0}


def test_regression_in_a_sample_space_divides_by_the_batch():
    tasks = [{"name": "dwell", "label": "dwell", "kind": "regression", "sample_space": "click"}]
    labels = {"click": np.array([1.0, 0.0, 0.0, 1.0]), "dwell": np.array([2.0, 9.0, 9.0, 1.0])}
    outputs = {"dwell": np.array([0.0, 0.0, 0.0, 4.0])}
    # rows 0 and 3 count: (2^2 + 3^2) / 4 batch rows; a mean over the space: / 2
    assert values(task_losses(tasks, labels, outputs))["dwell"] == pytest.approx(3.25)
    per_space = [dict(tasks[0], loss_normalization="sample_space")]
    assert values(task_losses(per_space, labels, outputs))["dwell"] == pytest.approx(6.5)


def test_funnel_step_uses_joint_output_over_all_rows():
    labels = {"click": np.array([1.0, 1.0, 0.0, 0.0]), "conversion": np.array([1.0, 0.0, 0.0, 0.0])}
    outputs = {
        "ctr_logit": logit([0.8, 0.6, 0.3, 0.1]),
        "cvr_logit": logit([0.01, 0.01, 0.01, 0.01]),  # ignored by the loss
        "ctcvr_logit": logit([0.4, 0.2, 0.1, 0.05]),
    }
    losses = values(task_losses(ESMM, labels, outputs))
    assert losses["ctr"] == pytest.approx(
        (bce(1, 0.8) + bce(1, 0.6) + bce(0, 0.3) + bce(0, 0.1)) / 4, rel=1e-6
    )
    assert losses["cvr"] == pytest.approx(
        (bce(1, 0.4) + bce(0, 0.2) + bce(0, 0.1) + bce(0, 0.05)) / 4, rel=1e-6
    )
    # default joint name is parent_name
    default = [ESMM[0], {"name": "cvr", "label": "conversion", "parent": "ctr"}]
    outputs["ctr_cvr_logit"] = outputs.pop("ctcvr_logit")
    assert values(task_losses(default, labels, outputs))["cvr"] == pytest.approx(losses["cvr"])


def test_funnel_joint_label_is_the_and_of_the_labels_along_the_chain():
    # row 1 converts without a click: the joint (click AND conversion) is 0 there
    labels = {"click": np.array([1.0, 0.0, 1.0, 0.0]), "conversion": np.array([1.0, 1.0, 0.0, 0.0])}
    outputs = {
        "ctr_logit": logit([0.8, 0.6, 0.3, 0.1]),
        "cvr_logit": logit([0.5, 0.5, 0.5, 0.5]),
        "ctcvr_logit": logit([0.4, 0.3, 0.1, 0.05]),
    }
    losses = values(task_losses(ESMM, labels, outputs))
    assert losses["cvr"] == pytest.approx(
        (bce(1, 0.4) + bce(0, 0.3) + bce(0, 0.1) + bce(0, 0.05)) / 4, rel=1e-6
    )
    # three steps: view -> click -> buy, the joint of buy is view AND click AND buy
    chain = [
        {"name": "vtr", "label": "view"},
        {"name": "ctr", "label": "clk", "parent": "vtr"},
        {"name": "cvr", "label": "buy", "parent": "ctr"},
    ]
    labels = {"view": np.array([1.0, 0.0, 1.0]), "clk": np.array([1.0, 1.0, 0.0]), "buy": np.array([1.0, 1.0, 1.0])}
    outputs = {"vtr_logit": logit([0.5] * 3), "vtr_ctr_logit": logit([0.4, 0.3, 0.2]),
               "ctr_cvr_logit": logit([0.25, 0.2, 0.1])}
    losses = values(task_losses(chain, labels, outputs))
    assert losses["ctr"] == pytest.approx((bce(1, 0.4) + bce(0, 0.3) + bce(0, 0.2)) / 3, rel=1e-6)
    assert losses["cvr"] == pytest.approx((bce(1, 0.25) + bce(0, 0.2) + bce(0, 0.1)) / 3, rel=1e-6)


def test_a_funnel_step_alone_names_what_it_lacks():
    from mtlrec.losses import task_loss
    from mtlrec.tasks import Task

    cvr = Task.from_dict(ESMM[1])
    labels = {"click": np.ones(2), "conversion": np.ones(2)}
    outputs = {"ctcvr_logit": np.zeros(2)}
    with pytest.raises(ValueError, match=r"task 'cvr': a funnel step \(parent 'ctr'\) needs tasks="):
        task_loss(cvr, labels, outputs)
    with pytest.raises(ValueError, match=r"task 'cvr': its funnel's parent task 'ctr' is missing \(tasks: cvr\)"):
        task_loss(cvr, labels, outputs, [cvr])
    with pytest.raises(ValueError, match=r"task 'cvr': label 'click' is missing \(have: conversion\)"):
        task_loss(cvr, {"conversion": np.ones(2)}, outputs, ESMM)


def test_multiclass_and_regression_losses():
    tasks = [
        {"name": "pp", "label": "pp", "kind": "multiclass", "num_classes": 3},
        {"name": "price", "label": "price", "kind": "regression"},
    ]
    labels = {"pp": np.array([0.0, 2.0]), "price": np.array([1.0, 3.0])}
    outputs = {  # logits: log of the probabilities plus a per-row constant
        "pp_logit": np.log([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]) + np.array([[3.0], [-2.0]]),
        "price": np.array([[1.5], [1.0]]),
    }
    losses = values(task_losses(tasks, labels, outputs))
    assert losses["pp"] == pytest.approx(-(math.log(0.7) + math.log(0.5)) / 2, rel=1e-6)
    assert losses["price"] == pytest.approx((0.25 + 4.0) / 2)


def test_extreme_logits_give_exact_finite_losses_and_gradients():
    """+-40: a clipped BCE on probabilities would give a constant loss and no gradient."""
    tasks = [{"name": "ctr", "label": "click"}]
    z = tf.Variable([40.0, -40.0, 40.0, -40.0])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    with tf.GradientTape() as tape:
        loss = task_losses(tasks, {"click": y}, {"ctr_logit": z})["ctr"]
    grad = tape.gradient(loss, z).numpy()
    # rows 0, 1: -log sigmoid(-40) ~= 40; rows 2, 3: log(1 + e^-40) ~= 4.25e-18
    assert float(loss) == pytest.approx((40.0 + 40.0 + 2 * math.exp(-40)) / 4, rel=1e-6)
    # d/dz = (sigmoid(z) - y) / 4
    np.testing.assert_allclose(grad[:2], [0.25, -0.25], rtol=1e-6)
    np.testing.assert_allclose(grad[2:], [-math.exp(-40) / 4, math.exp(-40) / 4], rtol=1e-3)
    assert np.all(grad != 0)


def test_missing_label_or_output_is_named():
    with pytest.raises(ValueError, match=r"task 'ctr': label 'click' is missing \(have: clk\)"):
        task_losses([{"name": "ctr", "label": "click"}], {"clk": np.ones(2)}, {"ctr_logit": np.ones(2)})
    with pytest.raises(ValueError, match=r"task 'ctr': logit output 'ctr_logit' is missing \(have: ctr\)"):
        task_losses([{"name": "ctr", "label": "click"}], {"click": np.ones(2)}, {"ctr": np.ones(2)})
    with pytest.raises(ValueError, match=r"task 'cvr': joint logit output 'ctcvr_logit' is missing"):
        task_losses(
            ESMM,
            {"click": np.ones(2), "conversion": np.ones(2)},
            {"ctr_logit": np.ones(2), "cvr_logit": np.ones(2), "ctcvr": np.ones(2)},
        )
    with pytest.raises(ValueError, match=r"task 'cvr': sample_space label 'click' is missing"):
        task_losses(
            [{"name": "cvr", "label": "conversion", "sample_space": "click"}],
            {"conversion": np.ones(2)},
            {"cvr_logit": np.ones(2)},
        )


def test_task_losses_in_a_tf_function():
    tasks = [{"name": "cvr", "label": "conversion", "sample_space": "click"}]

    @tf.function
    def f(click, conv, z):
        return task_losses(tasks, {"click": click, "conversion": conv}, {"cvr_logit": z})["cvr"]

    assert float(f(tf.zeros(2), tf.zeros(2), tf.zeros(2))) == 0.0
    assert float(f(tf.ones(2), tf.ones(2), tf.zeros(2))) == pytest.approx(math.log(2), rel=1e-5)


# --------------------------------------------------------------------------- helpers


def linear_step(strategy, task_grads, shared_init, tower_coef=None, persistent=True, extra=None):
    """Losses L_k = g_k . x (+ tower_coef_k * t) on a shared vector x, so grad_x L_k = g_k."""
    x = keras.Variable(np.asarray(shared_init, "float32"), name="x")
    t = keras.Variable(np.zeros(len(task_grads), "float32"), name="t")
    names = strategy.task_names
    with tf.GradientTape(persistent=persistent) as tape:
        losses = {
            n: tf.reduce_sum(tf.constant(g, tf.float32) * x)
            + (tower_coef[k] * t[k] if tower_coef is not None else 0.0)
            for k, (n, g) in enumerate(zip(names, task_grads))
        }
        if extra is not None:
            losses["l2"] = extra * tf.reduce_sum(x * x)
    grads, total = strategy.gradients(tape, losses, [x], [t])
    return [None if g is None else np.asarray(g) for g in grads], float(total)


# --------------------------------------------------------------------------- fixed


def test_fixed_weighting_combine_and_gradients():
    tasks = [{"name": "a", "label": "a", "weight": 2.0}, {"name": "b", "label": "b", "weight": 0.5}]
    fixed = FixedWeighting(tasks)
    assert fixed.trainable_variables == [] and fixed.variables == []
    assert not fixed.requires_custom_step
    total = fixed.combine({"a": tf.constant(1.5), "b": tf.constant(4.0)})
    assert float(total) == pytest.approx(2 * 1.5 + 0.5 * 4)
    assert fixed.task_weights() == {"a": 2.0, "b": 0.5}
    (gx, gt), total = linear_step(fixed, [[1.0, 0.0], [0.0, 2.0]], [1.0, 1.0], tower_coef=[3.0, 0.0], persistent=False)
    np.testing.assert_allclose(gx, [2.0, 1.0])
    np.testing.assert_allclose(gt, [6.0, 0.0])
    assert total == pytest.approx(2 * 1 + 0.5 * 2)


def test_extra_terms_are_added_with_weight_one():
    fixed = FixedWeighting([{"name": "a", "label": "a", "weight": 2.0}])
    assert float(fixed.combine({"a": tf.constant(1.0), "l2": tf.constant(0.25)})) == pytest.approx(2.25)
    (gx, _), total = linear_step(fixed, [[1.0, 0.0]], [1.0, 2.0], extra=0.5)
    np.testing.assert_allclose(gx, [2.0 + 1.0, 2.0])  # 2 g + d(0.5 |x|^2)/dx
    assert total == pytest.approx(2 * 1 + 0.5 * 5)


def test_missing_task_loss_is_named():
    fixed = FixedWeighting(ESMM)
    with pytest.raises(ValueError, match=r"FixedWeighting: no loss for task\(s\) \['cvr'\]"):
        fixed.combine({"ctr": tf.constant(1.0)})


# --------------------------------------------------------------------------- uncertainty

UNC_TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "price", "label": "price", "kind": "regression"},
]


def test_uncertainty_combine_formula():
    unc = UncertaintyWeighting(UNC_TASKS, init_log_var=0.5)
    assert [v.name for v in unc.trainable_variables] == ["log_vars"]
    unc.log_vars.assign([0.5, -1.0])
    total = unc.combine({"ctr": tf.constant(2.0), "price": tf.constant(3.0)})
    # classification: exp(-s) L + s/2; regression: exp(-s) L / 2 + s/2
    expected = math.exp(-0.5) * 2.0 + 0.25 + 0.5 * math.exp(1.0) * 3.0 - 0.5
    assert float(total) == pytest.approx(expected, rel=1e-6)
    assert unc.task_weights() == pytest.approx({"ctr": math.exp(-0.5), "price": 0.5 * math.e})


def test_uncertainty_gradients_match_autodiff():
    unc = UncertaintyWeighting(UNC_TASKS)
    unc.log_vars.assign([0.3, -0.7])
    x = keras.Variable(np.array([1.0, 2.0], "float32"))
    with tf.GradientTape(persistent=True) as tape:
        losses = {"ctr": tf.reduce_sum(x * x), "price": tf.reduce_sum(3.0 * x)}
        recorded_total = unc.combine(losses)
    grads, total = unc.gradients(tape, losses, [x], unc.trainable_variables)
    want = tape.gradient(recorded_total, [x, unc.log_vars])
    np.testing.assert_allclose(grads[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(grads[1], want[1], rtol=1e-6)
    assert float(total) == pytest.approx(float(recorded_total), rel=1e-6)


def make_two_noise_problem(n=512):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    a, b = rng.normal(size=4), rng.normal(size=4)
    y_clean = (x @ a + 0.1 * rng.normal(size=n)).astype("float32")
    y_noisy = (x @ b + 1.0 * rng.normal(size=n)).astype("float32")
    return x, {"clean": y_clean, "noisy": y_noisy}


REG_TASKS = [
    {"name": "clean", "label": "clean", "kind": "regression"},
    {"name": "noisy", "label": "noisy", "kind": "regression"},
]


def test_uncertainty_learns_lower_weight_for_noisier_task():
    x, y = make_two_noise_problem()
    unc = UncertaintyWeighting(REG_TASKS)
    dense = keras.layers.Dense(2)
    dense.build((None, 4))
    optimizer = keras.optimizers.Adam(0.05)
    variables = dense.trainable_variables + unc.trainable_variables

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = dense(x)
            losses = task_losses(REG_TASKS, y, {"clean": out[:, 0], "noisy": out[:, 1]})
        grads, total = unc.gradients(tape, losses, dense.trainable_variables, unc.trainable_variables)
        optimizer.apply_gradients(zip(grads, variables))
        return losses

    for _ in range(300):
        losses = step()
    weights = unc.task_weights()  # 0.5 exp(-s_k)
    assert weights["noisy"] < weights["clean"] / 10
    # at the optimum s_k = log L_k (regression form)
    s = np.asarray(unc.log_vars)
    assert s[0] == pytest.approx(math.log(float(losses["clean"])), abs=0.3)
    assert s[1] == pytest.approx(math.log(float(losses["noisy"])), abs=0.1)


@keras.saving.register_keras_serializable(package="mtlrec_test")
class TwoHead(keras.Model):
    """A model that holds its weighting as an attribute and trains with fit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2)
        self.weighting = UncertaintyWeighting(REG_TASKS)

    def call(self, x):
        out = self.dense(x)
        return {"clean": out[:, 0], "noisy": out[:, 1]}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.weighting.combine(task_losses(REG_TASKS, y, y_pred))


def test_uncertainty_trains_and_saves_inside_a_model_with_fit(keras_roundtrip):
    x, y = make_two_noise_problem()
    model = TwoHead()
    model.compile(optimizer=keras.optimizers.Adam(0.1))
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(256)
    model.fit(data, steps_per_epoch=60, epochs=1, shuffle=False, verbose=0)
    assert any(v is model.weighting.log_vars for v in model.trainable_variables)
    s = np.asarray(model.weighting.log_vars)
    assert s[1] > s[0] + 2.0  # noisier task: larger log-variance, lower weight
    loaded = keras_roundtrip(model)
    np.testing.assert_allclose(np.asarray(loaded.weighting.log_vars), s)


def test_weighting_config_roundtrip():
    for layer in [
        FixedWeighting(ESMM),
        UncertaintyWeighting(ESMM, init_log_var=0.2),
        GradNorm(ESMM, alpha=0.5, learning_rate=0.01, optimizer="sgd"),
        PCGrad(ESMM, seed=3),
    ]:
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == config
        assert config["tasks"][1] == {**ESMM[1], "kind": "binary", "weight": 1.0}
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(restored) is type(layer) and restored.get_config() == config
    assert UncertaintyWeighting(ESMM, init_log_var=0.2).get_config()["init_log_var"] == 0.2
    assert PCGrad(ESMM, seed=3).get_config()["seed"] == 3
    gn_config = GradNorm(ESMM, alpha=0.5, learning_rate=0.01, optimizer="sgd").get_config()
    assert (gn_config["alpha"], gn_config["learning_rate"], gn_config["optimizer"]) == (0.5, 0.01, "sgd")


# --------------------------------------------------------------------------- GradNorm


def test_gradnorm_hand_computed_sgd_steps():
    tasks = [{"name": "a", "label": "a"}, {"name": "b", "label": "b"}]
    gn = GradNorm(tasks, alpha=1.0, learning_rate=0.1, optimizer="sgd")
    assert gn.requires_custom_step and gn.trainable_variables == []
    w_layer = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    bias = keras.Variable(np.zeros(2, "float32"), name="bias")
    a_coef = tf.ones((2, 2))  # ||grad_W L_a|| = 2
    b_coef = 2.0 * tf.ones((2, 2))  # ||grad_W L_b|| = 4

    def step(offset_a, offset_b):
        with tf.GradientTape(persistent=True) as tape:
            losses = {
                "a": tf.reduce_sum(a_coef * w_layer) + offset_a,
                "b": tf.reduce_sum(b_coef * w_layer) + offset_b,
            }
        return gn.gradients(tape, losses, [w_layer, bias], [])

    # step 1: L = (4, 8) = L(0), r = (1, 1), G = (2, 4), target = 3
    # dL_grad/dw = sign(G - 3) * ||grad|| = (-2, 4); w = (1.2, 0.6) -> x 2/1.8
    (g_kernel, g_bias), total = step(0.0, 0.0)
    np.testing.assert_allclose(g_kernel, 3.0 * np.ones((2, 2)))  # w was (1, 1)
    assert g_bias is None
    assert float(total) == pytest.approx(12.0)
    np.testing.assert_allclose(np.asarray(gn.weights_var), [4 / 3, 2 / 3], rtol=1e-6)

    # step 2: L = (1, 8): L/L0 = (0.25, 1), r = (0.4, 1.6), G = (8/3, 8/3),
    # target = 8/3 * r = (16/15, 64/15); dL_grad/dw = (2, -4); w = (17/15, 16/15) -> x 2/2.2
    (g_kernel, _), total = step(-3.0, 0.0)
    np.testing.assert_allclose(g_kernel, (4 / 3 + 2 * 2 / 3) * np.ones((2, 2)), rtol=1e-6)
    assert float(total) == pytest.approx(4 / 3 * 1 + 2 / 3 * 8, rel=1e-6)
    np.testing.assert_allclose(np.asarray(gn.weights_var), [1.0303030, 0.9696970], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gn.initial_losses), [4.0, 8.0])


def test_gradnorm_favours_the_slower_task_and_keeps_sum_k():
    rng = np.random.default_rng(1)
    n = 256
    x = rng.normal(size=(n, 6)).astype("float32")
    u, v = rng.normal(size=6), rng.normal(size=6)
    y = {
        "fast": (x @ u).astype("float32"),  # learnable: loss falls towards 0
        "slow": (x @ v + 2.0 * rng.normal(size=n)).astype("float32"),  # noise floor
    }
    tasks = [
        {"name": "fast", "label": "fast", "kind": "regression"},
        {"name": "slow", "label": "slow", "kind": "regression"},
    ]
    gn = make_weighting({"type": "gradnorm", "alpha": 1.5, "learning_rate": 0.025}, tasks)
    shared = keras.layers.Dense(16)
    heads = [keras.layers.Dense(1), keras.layers.Dense(1)]
    shared.build((None, 6))
    for h in heads:
        h.build((None, 16))
    shared_vars = shared.trainable_variables
    task_vars = heads[0].trainable_variables + heads[1].trainable_variables
    optimizer = keras.optimizers.Adam(0.01)

    @tf.function
    def step():
        with tf.GradientTape(persistent=True) as tape:
            h = shared(x)
            out = {"fast": heads[0](h), "slow": heads[1](h)}
            losses = task_losses(tasks, y, out)
        grads, _ = gn.gradients(tape, losses, shared_vars, task_vars)
        optimizer.apply_gradients(zip(grads, shared_vars + task_vars))
        return gn.task_weights_tensor()

    sums = []
    for _ in range(150):
        sums.append(float(np.sum(step())))
    np.testing.assert_allclose(sums, 2.0, rtol=1e-5)
    w = gn.task_weights()
    assert w["slow"] > 1.3 > 0.7 > w["fast"]


def test_gradnorm_balances_on_an_embedding_table_without_densifying():
    tasks = [{"name": "a", "label": "a"}, {"name": "b", "label": "b"}]
    gn = GradNorm(tasks, alpha=1.0, learning_rate=0.01, optimizer="sgd")
    table = keras.Variable(np.ones((4, 2), "float32"))
    with tf.GradientTape(persistent=True) as tape:
        losses = {
            "a": tf.reduce_sum(tf.gather(table, [1, 1, 3])),  # rows 1 -> (2, 2), 3 -> (1, 1)
            "b": 2.0 * tf.reduce_sum(tf.gather(table, [0])),  # row 0 -> (2, 2)
        }
    (g,), _ = gn.gradients(tape, losses, [table], [])
    assert isinstance(g, tf.IndexedSlices)  # the model's gradient stays sparse
    norms = np.array([math.sqrt(10.0), math.sqrt(8.0)])
    w = 1.0 - 0.01 * np.sign(norms - norms.mean()) * norms
    np.testing.assert_allclose(np.asarray(gn.weights_var), 2 * w / w.sum(), rtol=1e-6)


def test_gradnorm_initial_weights_from_task_weights():
    gn = GradNorm([{"name": "a", "label": "a", "weight": 3.0}, {"name": "b", "label": "b", "weight": 1.0}])
    assert gn.task_weights() == pytest.approx({"a": 1.5, "b": 0.5})


# --------------------------------------------------------------------------- PCGrad


def numpy_pcgrad(grads, orders):
    grads = [np.asarray(g, np.float64) for g in grads]
    out = []
    for i, g in enumerate(grads):
        g = g.copy()
        for j in orders[i]:
            if j == i:
                continue
            dot = g @ grads[j]
            if dot < 0:
                g = g - dot / (grads[j] @ grads[j]) * grads[j]
        out.append(g)
    return out


def project(grads, orders):
    result = project_conflicting([[tf.constant(g, tf.float32)] for g in grads], orders)
    return [np.asarray(r[0]) for r in result]


def test_pcgrad_two_tasks_by_hand():
    g1, g2 = [1.0, 0.0], [-1.0, 1.0]
    p1, p2 = project([g1, g2], [[0, 1], [1, 0]])
    np.testing.assert_allclose(p1, [0.5, 0.5], atol=1e-7)
    np.testing.assert_allclose(p2, [0.0, 1.0], atol=1e-7)
    assert np.dot(p1, g2) >= -1e-7 and np.dot(p2, g1) >= -1e-7
    # no conflict: untouched
    q1, q2 = project([[1.0, 0.0], [1.0, 1.0]], [[1, 0], [0, 1]])
    np.testing.assert_allclose(q1, [1.0, 0.0])
    np.testing.assert_allclose(q2, [1.0, 1.0])


def all_orders(k):
    """Every combination of visiting orders (row i: a permutation of range(k))."""
    rows = [list(itertools.permutations(range(k))) for _ in range(k)]
    return [list(map(list, combo)) for combo in itertools.product(*rows)]


def test_pcgrad_three_tasks_by_hand():
    # g1 conflicts with g2 only, g3 with neither: projected (0.5, 0.5, 0), (0, 1, 0), g3
    g = [[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]
    for orders in all_orders(3)[::27]:
        p = project(g, orders)
        np.testing.assert_allclose(p[0], [0.5, 0.5, 0.0], atol=1e-7)
        np.testing.assert_allclose(p[1], [0.0, 1.0, 0.0], atol=1e-7)
        np.testing.assert_allclose(p[2], [0.0, 1.0, 1.0], atol=1e-7)
        for i, j in itertools.permutations(range(3), 2):
            assert np.dot(p[i], g[j]) >= -1e-6, (i, j)


def test_pcgrad_three_tasks_order_matters():
    # g2 conflicts with g1 and g3. Visiting g1 then g3:
    # (-1,1,0) + (1,0,1)/2 = (-0.5,1,0.5); dot with g3 = -0.5 -> + g3/4 = (-0.75,0.75,0.5)
    # (PCGrad's guarantee is towards the task visited last, hence the random order).
    g = [[1.0, 0.0, 1.0], [-1.0, 1.0, 0.0], [-1.0, -1.0, 0.0]]
    p = project(g, [[0, 1, 2], [0, 1, 2], [0, 1, 2]])
    np.testing.assert_allclose(p[1], [-0.75, 0.75, 0.5], atol=1e-7)
    assert np.dot(p[1], g[2]) == pytest.approx(0.0, abs=1e-6)
    # g1's other tasks are orthogonal to each other: the order does not matter for it
    np.testing.assert_allclose(p[0], [0.0, 0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(project(g, [[2, 1, 0], [2, 1, 0], [2, 1, 0]])[1], [-0.5, 1.0, 0.5], atol=1e-7)


def test_pcgrad_matches_numpy_on_random_vectors():
    rng = np.random.default_rng(7)
    for k in (2, 3, 4):
        grads = [rng.normal(size=5) for _ in range(k)]
        orders = [list(rng.permutation(k)) for _ in range(k)]
        got = project(grads, orders)
        want = numpy_pcgrad(grads, orders)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for i in range(k):
            last = [j for j in orders[i] if j != i][-1]
            assert np.dot(got[i], grads[last]) >= -1e-5  # the last projection holds exactly


def test_pcgrad_random_orders_are_permutations():
    pc = PCGrad([{"name": n, "label": n} for n in "abcd"], seed=5)
    seen = set()
    for _ in range(5):
        orders = np.asarray(pc.random_orders())
        assert orders.shape == (4, 4)
        for row in orders:
            assert sorted(row) == [0, 1, 2, 3]
        seen.add(orders.tobytes())
    assert len(seen) > 1  # fresh orders each step


def test_pcgrad_orders_are_a_function_of_seed_and_step():
    tasks = [{"name": n, "label": n} for n in "abcd"]
    pc, again, other = PCGrad(tasks, seed=5), PCGrad(tasks, seed=5), PCGrad(tasks, seed=6)
    step = tf.Variable(0, dtype=tf.int64)
    seen = set()
    for s in range(6):
        step.assign(s)
        orders = np.asarray(pc.random_orders(step))
        assert orders.dtype == np.int32 and orders.shape == (4, 4)
        assert all(sorted(row) == [0, 1, 2, 3] for row in orders)
        # a new layer (a resumed process) at the same step: the same orders
        np.testing.assert_array_equal(np.asarray(again.random_orders(s)), orders)
        np.testing.assert_array_equal(np.asarray(pc.random_orders(s)), orders)
        seen.add(orders.tobytes())
    assert len(seen) == 6  # fresh orders each step
    assert any(
        not np.array_equal(np.asarray(other.random_orders(s)), np.asarray(pc.random_orders(s))) for s in range(6)
    )
    # seed None: drawn from the global seed when the layer is made, like its SeedGenerator's
    keras.utils.set_random_seed(3)
    first = np.asarray(PCGrad(tasks).random_orders(7))
    keras.utils.set_random_seed(3)
    np.testing.assert_array_equal(np.asarray(PCGrad(tasks).random_orders(7)), first)


def test_pcgrad_gradients_two_tasks_and_task_vars():
    tasks = [{"name": "a", "label": "a", "weight": 2.0}, {"name": "b", "label": "b"}]
    pc = PCGrad(tasks, seed=0)
    x = keras.Variable(np.ones(2, "float32"))
    towers = [keras.Variable(0.0), keras.Variable(0.0)]  # one per task
    with tf.GradientTape(persistent=True) as tape:
        losses = {
            "a": tf.reduce_sum(tf.constant([0.5, 0.0]) * x) + 3.0 * towers[0],
            "b": tf.reduce_sum(tf.constant([-1.0, 1.0]) * x) + 1.0 * towers[1],
        }
    (gx, ga, gb), total = pc.gradients(tape, losses, [x], towers)
    # weighted task gradients (1, 0) and (-1, 1): projected (0.5, 0.5) + (0, 1)
    np.testing.assert_allclose(gx, [0.5, 1.5], atol=1e-6)
    assert (float(ga), float(gb)) == (6.0, 1.0)  # each tower gets its own (weighted) gradient
    assert float(total) == pytest.approx(2 * (0.5 + 3 * 0) + (0.0 + 0.0))


def test_pcgrad_projects_the_conflict_on_a_funnel_parents_tower():
    """The parent's tower p is a task variable, but the joint's loss reaches it too
    (pCTCVR = pCTR x pCVR): the tasks conflict there, not on the shared x."""
    tasks = [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion", "parent": "ctr"}]
    pc = PCGrad(tasks, seed=0)
    x = keras.Variable(np.ones(2, "float32"), name="x")
    p = keras.Variable(np.ones(2, "float32"), name="ctr_tower")
    c = keras.Variable(np.ones(1, "float32"), name="cvr_tower")
    l2 = keras.Variable(np.ones(1, "float32"), name="other")
    with tf.GradientTape(persistent=True) as tape:
        losses = {  # grad_x: (1, 0) and (0, 1), orthogonal; grad_p: (2, 0) and (-1, 0)
            "ctr": x[0] + 2.0 * p[0],
            "cvr": x[1] - p[0] + 3.0 * c[0],
            "regularization": 0.5 * tf.reduce_sum(p * p) + l2[0],
        }
    (gx, gp, gc, gl), total = pc.gradients(tape, losses, [x], [p, c, l2])
    g_ctr, g_cvr = np.array([1.0, 0.0, 2.0, 0.0]), np.array([0.0, 1.0, -1.0, 0.0])
    # over (x, p): g_ctr . g_cvr = -2 -> g_ctr + g_cvr = (1, 1, 1, 0);
    # g_cvr + 2/5 g_ctr = (0.4, 1, -0.2, 0); the regularisation adds p = (1, 1) unprojected
    want = sum(numpy_pcgrad([g_ctr, g_cvr], [[0, 1], [1, 0]]))
    np.testing.assert_allclose(want, [1.4, 2.0, 0.8, 0.0], atol=1e-12)
    np.testing.assert_allclose(gx, want[:2], atol=1e-6)
    np.testing.assert_allclose(gp, want[2:] + 1.0, atol=1e-6)
    np.testing.assert_allclose(gc, [3.0])  # the child's tower: the joint's loss alone
    np.testing.assert_allclose(gl, [1.0])
    assert float(total) == pytest.approx(1 + 2 + 1 - 1 + 3 + 1 + 1)


def test_pcgrad_gradients_three_tasks_in_tf_function():
    g = [np.array([1.0, 0.0, 1.0]), np.array([-1.0, 1.0, 0.0]), np.array([-1.0, -0.5, 0.2])]
    pc = PCGrad([{"name": n, "label": n} for n in "abc"], seed=11)
    x = keras.Variable(np.ones(3, "float32"))

    @tf.function
    def step():
        with tf.GradientTape(persistent=True) as tape:
            losses = {n: tf.reduce_sum(tf.constant(gk, tf.float32) * x) for n, gk in zip("abc", g)}
        return pc.gradients(tape, losses, [x], [])

    (gx,), _ = step()
    candidates = [sum(numpy_pcgrad(g, orders)) for orders in all_orders(3)]
    assert min(np.abs(c - np.asarray(gx)).max() for c in candidates) < 1e-5


def test_per_task_strategies_need_a_persistent_tape():
    tasks = [{"name": "a", "label": "a"}, {"name": "b", "label": "b"}]
    for strategy in (PCGrad(tasks), GradNorm(tasks)):
        with pytest.raises(ValueError, match=r"tf\.GradientTape\(persistent=True\)"):
            linear_step(strategy, [[1.0], [1.0]], [1.0], persistent=False)


def test_pcgrad_projects_embedding_gradients_as_if_dense():
    tasks = [{"name": "a", "label": "a"}, {"name": "b", "label": "b"}]
    pc = PCGrad(tasks, seed=0)
    table = keras.Variable(np.ones((4, 2), "float32"))
    with tf.GradientTape(persistent=True) as tape:
        rows = tf.gather(table, [1, 1, 3])
        losses = {"a": tf.reduce_sum(rows[:, 0]), "b": -tf.reduce_sum(rows[:2, 0]) + tf.reduce_sum(rows[:, 1])}
    (g,), _ = pc.gradients(tape, losses, [table], [])
    assert isinstance(g, tf.IndexedSlices)
    g = tf.convert_to_tensor(g)
    # g_a: rows 1 -> (2, 0), 3 -> (1, 0); g_b: row 1 -> (-2, 2), row 3 -> (0, 1)
    ga = np.zeros((4, 2)); ga[1] = [2, 0]; ga[3] = [1, 0]
    gb = np.zeros((4, 2)); gb[1] = [-2, 2]; gb[3] = [0, 1]
    want = sum(numpy_pcgrad([ga.ravel(), gb.ravel()], [[0, 1], [1, 0]])).reshape(4, 2)
    np.testing.assert_allclose(np.asarray(g), want, atol=1e-6)


# --------------------------------------------------------------------------- MetaBalance


def test_metabalance_hand_computed_steps():
    tasks = [{"name": "a", "label": "a"}, {"name": "b", "label": "b"}]
    mb = MetaBalance(tasks, target="a", relax_factor=0.5, beta=0.5)
    assert mb.requires_custom_step and mb.trainable_variables == []
    w = keras.Variable(np.ones(2, "float32"))
    head = keras.Variable(np.ones(1, "float32"))

    def step(coef_b):
        with tf.GradientTape(persistent=True) as tape:
            losses = {"a": 3.0 * w[0] + 4.0 * w[1] + head[0], "b": coef_b * w[0]}
        return mb.gradients(tape, losses, [w], [head])

    # step 1: ||g_a|| = 5, ||g_b|| = 1; m = 0.5 * (5, 1) = (2.5, 0.5); ratio 5;
    # scale 0.5 * 5 + 0.5 = 3: update (3, 4) + 3 * (1, 0) = (6, 4)
    (g_w, g_head), total = step(1.0)
    np.testing.assert_allclose(g_w, [6.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(g_head, [1.0])  # a task variable: its task's gradient
    assert float(total) == pytest.approx(3 + 4 + 1 + 1)
    # step 2: ||g_b|| = 2; m = (0.5 * 2.5 + 2.5, 0.5 * 0.5 + 1) = (3.75, 1.25); ratio 3;
    # scale 0.5 * 3 + 0.5 = 2: update (3, 4) + 2 * (2, 0) = (7, 4)
    (g_w, _), _ = step(2.0)
    np.testing.assert_allclose(g_w, [7.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mb.norms), [[3.75], [1.25]], rtol=1e-6)


def test_metabalance_relax_factor_one_matches_the_target_norm_per_variable():
    tasks = [{"name": "t", "label": "t"}, {"name": "x", "label": "x", "weight": 2.0}]
    mb = MetaBalance(tasks, target="t", relax_factor=1.0, beta=0.0)
    u = keras.Variable(np.ones(2, "float32"))
    v = keras.Variable(np.ones(3, "float32"))
    with tf.GradientTape(persistent=True) as tape:
        # per variable: ||g_t|| = (1, 2); ||g_x|| = 2 * (10, 0.5) (weight 2)
        losses = {"t": u[0] + 2.0 * v[1], "x": 10.0 * u[1] + 0.5 * v[2]}
    (g_u, g_v), total = mb.gradients(tape, losses, [u, v], [])
    np.testing.assert_allclose(g_u, [1.0, 1.0], rtol=1e-6)  # (0, 20) scaled to norm 1
    np.testing.assert_allclose(g_v, [0.0, 2.0, 2.0], rtol=1e-6)  # (0, 0, 1) scaled to norm 2
    assert float(total) == pytest.approx(3.0 + 2 * 10.5)


def test_metabalance_keeps_embedding_gradients_sparse():
    tasks = [{"name": "a", "label": "a"}, {"name": "b", "label": "b"}]
    mb = MetaBalance(tasks, target="a", relax_factor=1.0, beta=0.0)
    table = keras.Variable(np.ones((4, 2), "float32"))
    with tf.GradientTape(persistent=True) as tape:
        losses = {
            "a": 3.0 * tf.reduce_sum(tf.gather(table, [0])),  # norm 3 sqrt 2
            "b": tf.reduce_sum(tf.gather(table, [2, 2])),  # row 2 -> (2, 2): norm 2 sqrt 2
        }
    (g,), _ = mb.gradients(tape, losses, [table], [])
    assert isinstance(g, tf.IndexedSlices)
    want = np.zeros((4, 2))
    want[0] = 3.0
    want[2] = 3.0  # (2, 2) x 3/2
    np.testing.assert_allclose(tf.convert_to_tensor(g), want, rtol=1e-6)


def test_metabalance_config_and_state():
    mb = make_weighting({"type": "metabalance", "target": "cvr", "beta": 0.8}, ESMM)
    assert (type(mb), mb.target, mb.relax_factor, mb.beta) == (MetaBalance, "cvr", 0.7, 0.8)
    config = mb.get_config()
    assert (config["target"], config["relax_factor"], config["beta"]) == ("cvr", 0.7, 0.8)
    mb.prepare([keras.Variable(np.ones(2, "float32"))] * 3)
    assert tuple(mb.norms.shape) == (2, 3) and mb.non_trainable_variables == [mb.norms]


# --------------------------------------------------------------------------- make_weighting


def test_make_weighting_types():
    assert type(make_weighting(None, ESMM)) is FixedWeighting
    assert type(make_weighting({"type": "fixed"}, ESMM)) is FixedWeighting
    unc = make_weighting({"type": "uncertainty", "init_log_var": 1.0}, ESMM)
    assert type(unc) is UncertaintyWeighting and unc.init_log_var == 1.0
    gn = make_weighting({"type": "gradnorm", "alpha": 0.5, "learning_rate": 0.01}, ESMM)
    assert (type(gn), gn.alpha, gn.learning_rate, gn.optimizer) == (GradNorm, 0.5, 0.01, "adam")
    pc = make_weighting({"type": "pcgrad", "seed": 4}, ESMM)
    assert type(pc) is PCGrad and pc.seed == 4


@pytest.mark.parametrize(
    "config, match",
    [
        ({"type": "dwa"}, r"loss_weighting\.type: expected one of fixed, uncertainty, gradnorm, pcgrad, metabalance, got 'dwa'"),
        ({"type": "fixed", "alpha": 1.0}, r"loss_weighting\.alpha: unknown key for type 'fixed' \(allowed: none\)"),
        ({"type": "pcgrad", "alpha": 1.0}, r"loss_weighting\.alpha: unknown key for type 'pcgrad' \(allowed: seed\)"),
        ({"type": "gradnorm", "alpha": -1}, r"loss_weighting\.alpha: .*Received: alpha=-1"),
        ({"type": "gradnorm", "learning_rate": 0}, r"loss_weighting\.learning_rate: .*Received: learning_rate=0"),
        ({"type": "gradnorm", "optimizer": "rmsprop"}, r"loss_weighting\.optimizer: .*Received: optimizer='rmsprop'"),
        ({"type": "uncertainty", "init_log_var": "0"}, r"loss_weighting\.init_log_var: .*Received"),
        ({"type": "pcgrad", "seed": 1.5}, r"loss_weighting\.seed: .*Received: seed=1\.5"),
        ({"type": "metabalance", "target": "ctcvr"}, r"loss_weighting\.target: .*\['ctr', 'cvr'\]\. Received: target='ctcvr'"),
        ({"type": "metabalance", "target": "ctr", "relax_factor": 0}, r"loss_weighting\.relax_factor: .*\(0, 1\]\. Received: relax_factor=0"),
        ({"type": "metabalance", "target": "ctr", "beta": 1.0}, r"loss_weighting\.beta: .*\[0, 1\)\. Received: beta=1\.0"),
        ({"type": "metabalance", "target": "ctr", "seed": 1}, r"loss_weighting\.seed: unknown key for type 'metabalance' \(allowed: target, relax_factor, beta\)"),
        (["fixed"], r"loss_weighting: expected a mapping, got list"),
    ],
)
def test_make_weighting_refuses(config, match):
    with pytest.raises(ValueError, match=match):
        make_weighting(config, ESMM)


def test_make_weighting_uses_the_given_path():
    with pytest.raises(ValueError, match=r"training\.loss_weighting\.type"):
        make_weighting({"type": "nope"}, ESMM, path="training.loss_weighting")


def test_strategy_refuses_no_tasks():
    with pytest.raises(ValueError, match=r"Expected at least one task\. Received: tasks=\[\]"):
        FixedWeighting([])


# --------------------------------------------------------------------------- W and sparse rows


def test_gradnorm_norms_cover_every_expert_of_the_last_shared_layer():
    """Three experts' output kernels whose task gradients differ: G_k is the norm over all
    three (the old W, the last rank-2 variable, saw expert 2 only: G_a = 0)."""
    tasks = [{"name": "a", "label": "a"}, {"name": "b", "label": "b"}]
    experts = [keras.Variable(np.ones((2, 2), "float32"), name=f"expert_{i}") for i in range(3)]
    coefs = {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 2.0]}  # grad_W L_k per expert: coef * ones

    def step(gn, balance):
        with tf.GradientTape(persistent=True) as tape:
            losses = {
                n: sum(c * tf.reduce_sum(w) for c, w in zip(cs, experts)) for n, cs in coefs.items()
            }
        gn.gradients(tape, losses, experts, [], balance)
        return np.asarray(gn.weights_var)

    norms = np.array([2.0, math.sqrt(4 * 1 + 4 * 4)])  # ||grad|| over the 3 experts
    w = 1.0 - 0.1 * np.sign(norms - norms.mean()) * norms  # r = (1, 1): target = mean G
    want = 2 * w / w.sum()
    gn = GradNorm(tasks, alpha=1.0, learning_rate=0.1, optimizer="sgd")
    np.testing.assert_allclose(step(gn, experts), want, rtol=1e-6)
    only_last = GradNorm(tasks, alpha=1.0, learning_rate=0.1, optimizer="sgd")
    assert not np.allclose(step(only_last, experts[-1:]), want)


def test_pcgrad_projects_the_touched_embedding_rows():
    """Two rows of a shared table, task gradients g_a = rows (1, 0), (0, 1) and
    g_b = rows (-1, 1), (0, 0): g_a . g_b = -1 < 0, so
    g_a' = g_a + 0.5 g_b = (0.5, 0.5), (0, 1); g_b' = g_b + 0.5 g_a = (-0.5, 1), (0, 0.5);
    the update is (0, 1.5), (0, 1.5) where fixed weighting gives (0, 1), (0, 1)."""
    tasks = [{"name": "a", "label": "a"}, {"name": "b", "label": "b"}]
    table = keras.Variable(np.ones((5, 2), "float32"))

    def gradient(strategy):
        with tf.GradientTape(persistent=True) as tape:
            rows = tf.gather(table, [3, 1])
            losses = {
                "a": tf.reduce_sum(rows * tf.constant([[1.0, 0.0], [0.0, 1.0]])),
                "b": tf.reduce_sum(rows[:1] * tf.constant([[-1.0, 1.0]])),
            }
        (g,), _ = strategy.gradients(tape, losses, [table], [])
        return g

    g = gradient(PCGrad(tasks, seed=0))
    assert isinstance(g, tf.IndexedSlices)  # the table's update stays sparse
    assert sorted(g.indices.numpy().tolist()) == [1, 3]
    want = np.zeros((5, 2))
    want[3], want[1] = [0.0, 1.5], [0.0, 1.5]
    np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), want, atol=1e-6)
    fixed = tf.convert_to_tensor(gradient(FixedWeighting(tasks))).numpy()
    np.testing.assert_allclose(fixed[[3, 1]], [[0.0, 1.0], [0.0, 1.0]])


def test_weighted_objective_by_hand():
    from mtlrec.losses import weighted_objective

    weights = tf.constant([2.0, 0.5])
    total = weighted_objective(weights, [tf.constant(1.0), tf.constant(4.0)], [tf.constant(0.25)])
    assert float(total) == 2.0 + 2.0 + 0.25
    offsets = tf.constant([0.5, -1.0])
    total = weighted_objective(weights, tf.constant([1.0, 4.0]), (), offsets=offsets)
    assert float(total) == 2.5 + 1.0
