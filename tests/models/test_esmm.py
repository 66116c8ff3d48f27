"""ESMM: funnel outputs, entire-space training, and what it buys over a clicked-only CVR model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.metrics import truth_auc
from mtlrec.models import ESMM, SingleTask


def test_default_tasks_give_ctr_cvr_and_ctcvr(tiny_funnel, keras_roundtrip):
    model = ESMM(tiny_funnel.schema, tower_units=[4])
    assert [t["name"] for t in model.tasks] == ["ctr", "cvr"]
    features, _ = tiny_funnel.batch(32)
    out = {k: np.asarray(v) for k, v in model(features).items()}
    assert model.probability_names() == ["ctr", "cvr", "ctcvr"]
    assert sorted(out) == ["ctcvr", "ctcvr_logit", "ctr", "ctr_logit", "cvr", "cvr_logit"]
    np.testing.assert_allclose(out["ctcvr"], out["ctr"] * out["cvr"], rtol=1e-6)
    np.testing.assert_allclose(out["ctcvr_logit"], np.log(out["ctcvr"] / (1 - out["ctcvr"])), rtol=1e-4)
    restored = keras_roundtrip(model)
    assert restored.get_config() == model.get_config()


def test_cvr_conditional_gets_its_gradient_only_through_ctcvr(tiny_funnel):
    """L = BCE(pCTR, click) + BCE(pCTR x pCVR, conversion): on a batch with no click at all
    (where a clicked-only CVR model has no loss) the CVR tower still gets a gradient."""
    model = ESMM(tiny_funnel.schema, tower_units=[])
    features, labels = tiny_funnel.batch(64)
    labels = dict(labels)
    labels["click"] = tf.zeros_like(labels["click"])
    labels["conversion"] = tf.zeros_like(labels["conversion"])
    cvr_kernel = model.towers["cvr"].trainable_variables[0]
    with tf.GradientTape() as tape:
        loss = model.compute_loss(y=labels, y_pred=model(features, training=True))
    grad = tape.gradient(loss, cvr_kernel)
    assert grad is not None and float(tf.reduce_sum(tf.abs(grad))) > 0


def test_funnel_is_required_and_steps_have_no_sample_space(tiny_funnel):
    with pytest.raises(ValueError, match="ESMM needs a funnel"):
        ESMM(tiny_funnel.schema, [{"name": "ctr", "label": "click"}])
    with pytest.raises(ValueError, match="cannot have a sample space"):
        ESMM(tiny_funnel.schema, [
            {"name": "ctr", "label": "click"},
            {"name": "cvr", "label": "conversion", "parent": "ctr", "sample_space": "click"},
        ])
    with pytest.raises(ValueError, match="parent.*'impression' is not a task"):
        ESMM(tiny_funnel.schema, [
            {"name": "ctr", "label": "click", "parent": "impression"},
        ])


def test_entire_space_cvr_beats_a_clicked_only_cvr_model(funnel_factory):
    """ESMM's pCVR over all impressions ranks the true CVR better than a CVR model trained on
    clicked rows only (SingleTask with sample_space=click), same data, architecture and steps.

    Setting: 100 users x 100 items, 30k impressions a day, base_ctr 0.1 (the clicked-only
    model learns from ~10% of the rows), relatedness 1.0 (CTR and CVR share the user x item
    affinity u.v, signal 3: the largest term of the true pCVR), item popularity fixed
    across days; features user_id, item_id, price, position, scene. Both models are an FM
    over the embeddings with a logistic read-out (interaction fm, no hidden tower), so u.v
    is expressible by both; ESMM learns the shared embeddings on every impression, the
    clicked-only model on the clicked (and u.v-selected) rows. Metric: `truth_auc` of pCVR
    against conversions drawn from true_cvr for every impression of the next day (the entire
    space, as if all were clicked). Mean over four model seeds: on a single seed the
    3-epoch FM can land on either side (seed 1: 0.678 vs 0.683; seeds 2-6: ESMM ahead by
    0.02 to 0.08).
    """
    funnel = funnel_factory(
        "esmm_vs_clicked", 30_000, bucket_scale=10,
        keep=("user_id", "item_id", "price", "position", "scene"),
        num_users=100, num_items=100, num_categories=5, num_brands=10, num_shops=5,
        max_len=2, dim=8, base_ctr=0.1, base_cvr=0.2, relatedness=1.0, signal=3.0,
        popularity_drift=0.0, new_items_per_day=0.0,
    )
    eval_features, eval_labels = funnel.evaluate()
    models = {
        "esmm": lambda common: ESMM(funnel.schema, **common),
        "clicked_only": lambda common: SingleTask(
            funnel.schema, [{"name": "cvr", "label": "conversion", "sample_space": "click"}],
            **common,
        ),
    }
    truth = {name: [] for name in models}
    for seed in (1, 2, 3, 4):
        for name, make in models.items():
            keras.utils.set_random_seed(11)
            model = make(dict(tower_units=[], interaction={"type": "fm"}, seed=seed))
            model.compile(optimizer=keras.optimizers.Adam(0.03))
            model.fit(funnel.train(batch_size=512), epochs=3, verbose=0)
            pcvr = model.predict(eval_features, verbose=0)["cvr"]
            truth[name].append(truth_auc(pcvr, eval_labels["true_cvr"]))
    assert np.mean(truth["esmm"]) > np.mean(truth["clicked_only"]) + 0.02, truth
