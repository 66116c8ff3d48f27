"""ESCM²: ESMM plus the counterfactual CVR risk (IPS and DR)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from mtlrec.losses import task_losses
from mtlrec.models import ESCM2, build_model

LABELS = {
    "click": np.array([1.0, 1.0, 0.0], "float32"),
    "conversion": np.array([1.0, 0.0, 0.0], "float32"),
}
# pCTR 0.02 is clipped to 0.05; e = BCE(conversion, pCVR) on the clicked rows
P_CVR = np.array([0.5, 0.9, 0.25])
OUTPUTS = {
    "ctr": np.array([0.5, 0.02, 0.8], "float32"),
    "cvr": P_CVR.astype("float32"),
    "cvr_logit": np.log(P_CVR / (1 - P_CVR)).astype("float32"),  # the loss reads the logit
    "cvr_imputation": np.array([0.2, 1.0, 0.3], "float32"),
}
PROPENSITY = np.array([0.5, 0.05, 0.8])
ERROR = np.array([math.log(2.0), -math.log(0.1), -math.log(0.75)])


def test_ips_risk_by_hand(tiny_funnel):
    model = ESCM2(tiny_funnel.schema, variant="ips", counterfactual_weight=0.5, tower_units=[4])
    assert "cvr_imputation" not in model.output
    losses = model.auxiliary_losses(LABELS, OUTPUTS)
    assert list(losses) == ["counterfactual_cvr"]
    # 1/N sum o e / p = (ln 2 / 0.5 + ln 10 / 0.05 + 0) / 3
    np.testing.assert_allclose(losses["counterfactual_cvr"], 0.5 * np.mean(LABELS["click"] * ERROR / PROPENSITY), rtol=1e-5)
    np.testing.assert_allclose(losses["counterfactual_cvr"], 0.5 * (2 * math.log(2) + 20 * math.log(10)) / 3, rtol=1e-5)


def test_dr_risk_and_imputation_loss_by_hand(tiny_funnel):
    model = ESCM2(tiny_funnel.schema, variant="dr", counterfactual_weight=1.0, propensity_clip=0.05, tower_units=[4])
    losses = model.auxiliary_losses(LABELS, OUTPUTS)
    imputed, o = OUTPUTS["cvr_imputation"], LABELS["click"]
    risk = np.mean(imputed + o * (ERROR - imputed) / PROPENSITY)
    imputation = np.mean(o * (ERROR - imputed) ** 2 / PROPENSITY)
    np.testing.assert_allclose(losses["counterfactual_cvr"], risk, rtol=1e-5)
    np.testing.assert_allclose(losses["imputation"], imputation, rtol=1e-5)


def test_evaluation_reports_the_share_of_clipped_propensities(tiny_funnel):
    from mtlrec.data_pipeline import make_dataset
    from mtlrec.training.evaluation import evaluate_model
    from mtlrec.training.run.metrics_log import metric_rows

    model = ESCM2(tiny_funnel.schema, variant="ips", propensity_clip=0.05, tower_units=[4])
    # by hand: pCTR 0.02 of row 1 (clicked) is below 0.05, rows 0 and 2 are not
    assert model.evaluation_counts(LABELS, OUTPUTS) == {
        ("cvr", "propensity_clipped_share"): (1, 3),
        ("cvr", "propensity_clipped_share_clicked"): (1, 2),
    }
    # over a day: pCTR of the untrained model, clip at its median -> about half clipped
    features, labels = tiny_funnel.evaluate(batch_size=256)
    p_ctr = np.concatenate([np.asarray(model(f)["ctr"]).reshape(-1) for f in features])
    model.propensity_clip = float(np.median(p_ctr))
    clipped = p_ctr < model.propensity_clip
    clicked = labels["click"] == 1
    dataset = make_dataset(tiny_funnel.root, tiny_funnel.eval_day, tiny_funnel.schema, batch_size=256)
    result = evaluate_model(model, model.task_specs, dataset)
    cvr = result.metrics["cvr"]
    assert 0.3 < cvr["propensity_clipped_share"] < 0.7
    assert cvr["propensity_clipped_share"] == pytest.approx(clipped.mean(), abs=1e-12)
    assert cvr["propensity_clipped_share_clicked"] == pytest.approx((clipped & clicked).sum() / clicked.sum(), abs=1e-12)
    assert "auc" in cvr  # beside the CVR task's own metrics
    rows = {(r["task"], r["metric"]): r["value"] for r in metric_rows("2024-01-01", 9, result)}
    assert rows[("cvr", "propensity_clipped_share")] == cvr["propensity_clipped_share"]
    assert rows[("cvr", "propensity_clipped_share_clicked")] == cvr["propensity_clipped_share_clicked"]


def test_gradients_follow_the_paper(tiny_funnel):
    """The propensity takes no gradient; R moves pCVR only; L_imp moves e^ only."""
    model = ESCM2(tiny_funnel.schema, variant="dr", tower_units=[4])
    tensors = {k: tf.constant(v) for k, v in OUTPUTS.items()}
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(list(tensors.values()))
        losses = model.auxiliary_losses(LABELS, tensors)
    watched = [tensors["ctr"], tensors["cvr_logit"], tensors["cvr_imputation"]]
    risk_grads = tape.gradient(losses["counterfactual_cvr"], watched)
    assert risk_grads[0] is None and risk_grads[2] is None
    # dR/dz_i = o_i / p_i * (sigmoid(z_i) - r_i) / N (a weight of 0.5): row 3 (no click) gets nothing
    want = 0.5 * LABELS["click"] * (P_CVR - LABELS["conversion"]) / PROPENSITY / 3
    np.testing.assert_allclose(risk_grads[1], want, rtol=1e-5)
    imp_grads = tape.gradient(losses["imputation"], watched)
    assert imp_grads[0] is None and imp_grads[1] is None
    np.testing.assert_allclose(imp_grads[2], -2 * 0.5 * LABELS["click"] * (ERROR - OUTPUTS["cvr_imputation"]) / PROPENSITY / 3, rtol=1e-5)


def test_compute_loss_adds_the_counterfactual_terms(tiny_funnel):
    model = ESCM2(tiny_funnel.schema, variant="dr", tower_units=[4], seed=1)
    features, labels = tiny_funnel.batch(64)
    outputs = model(features)
    per_task = task_losses(model.task_specs, labels, outputs)
    extra = model.auxiliary_losses(labels, outputs)
    want = sum(float(v) for v in per_task.values()) + sum(float(v) for v in extra.values())
    np.testing.assert_allclose(float(model.compute_loss(y=labels, y_pred=outputs)), want, rtol=1e-5)
    assert set(extra) == {"counterfactual_cvr", "imputation"}


@pytest.mark.parametrize("variant", ["ips", "dr"])
def test_outputs_and_round_trip(tiny_funnel, keras_roundtrip, variant):
    model = ESCM2(tiny_funnel.schema, variant=variant, tower_units=[4], seed=3)
    features, _ = tiny_funnel.batch(16)
    out = {k: np.asarray(v) for k, v in model(features).items()}
    np.testing.assert_allclose(out["ctcvr"], out["ctr"] * out["cvr"], rtol=1e-5)
    if variant == "dr":
        assert out["cvr_imputation"].shape == (16,) and np.all(out["cvr_imputation"] >= 0)
    restored = keras_roundtrip(model)
    assert restored.get_config() == model.get_config()
    for name, value in restored(features).items():
        np.testing.assert_array_equal(np.asarray(value), out[name])
    assert model.probability_names() == ["ctr", "cvr", "ctcvr"]


@pytest.mark.parametrize("options, message", [
    ({"variant": "snips"}, r"^model\.variant: .*Received: variant='snips'"),
    ({"propensity_clip": 0}, r"^model\.propensity_clip: .*\(0, 1\]\. Received: propensity_clip=0"),
    ({"counterfactual_weight": -0.1}, r"^model\.counterfactual_weight: .*Received: counterfactual_weight=-0\.1"),
])
def test_bad_options_name_their_key(tiny_funnel, options, message):
    tasks = [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}]
    with pytest.raises(ValueError, match=message):
        build_model({"type": "escm2", **options}, tiny_funnel.schema, tasks)


def test_needs_one_click_to_conversion_step(tiny_funnel):
    with pytest.raises(ValueError, match="ESCM2 needs exactly one funnel step"):
        ESCM2(tiny_funnel.schema, [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion"}])
