"""The trainer hands the loss weightings the variable groups the model names: PCGrad
projects over every shared parameter (the embedding tables' touched rows included) and the
funnel parent's tower, GradNorm balances on the model's last shared layer."""

import numpy as np
import tensorflow as tf
import yaml

from mtlrec.data_pipeline import make_dataset
from mtlrec.losses import FixedWeighting, project_conflicting, task_losses
from mtlrec.training.config import load_config
from mtlrec.training.trainer import Trainer


def _trainer(write_config, overrides):
    """A Trainer of the tiny config with `overrides` (the numerics' stats given)."""
    schema = yaml.safe_load(write_config().read_text())["schema"]
    for f in schema["numeric"]:
        if f.get("normalize") == "standardize":
            f["mean"], f["std"] = 0.08, 0.05
    config = load_config(write_config(dict(overrides, schema=schema)))
    return Trainer(config, schema), schema


def test_pcgrad_on_esmm_projects_the_embedding_rows(write_config, funnel_root, tiny):
    trainer, schema = _trainer(write_config, {"loss_weighting": {"type": "pcgrad", "seed": 0}})
    shared = trainer.shared_variables
    tables = trainer.model.variable_groups().embedding_tables
    # ESMM shares nothing but the tables: before, PCGrad had no shared variable at all
    assert {id(v) for v in shared} == {id(v) for v in tables}

    features, labels = next(iter(make_dataset(funnel_root, [tiny.days[0]], schema, batch_size=64)))
    # every row clicked, none converted: the CTR loss pulls pCTR up, the CTCVR loss pulls
    # pCTR x pCVR down, so the two tasks' gradients on the shared rows conflict
    labels = {"click": tf.ones_like(labels["click"]), "conversion": tf.zeros_like(labels["click"])}
    with tf.GradientTape(persistent=True) as tape:
        losses = task_losses(trainer.tasks, labels, trainer.model(features, training=True))
    grads, _ = trainer.weighting.gradients(tape, losses, shared, trainer.task_variables, step=0)
    fixed, _ = FixedWeighting(trainer.tasks).gradients(tape, losses, shared, trainer.task_variables)
    # the CTR tower is a task variable, but pCTCVR = pCTR x pCVR: the CTCVR loss reaches it too
    position = {id(v): i for i, v in enumerate(shared + trainer.task_variables)}
    parent_tower = list(trainer.model.variable_groups().task["ctr"])
    theta = shared + parent_tower
    per_task = [
        [tf.convert_to_tensor(g) for g in tape.gradient(losses[t.name], theta)]
        for t in trainer.tasks
    ]
    for g in grads[: len(shared)]:
        assert isinstance(g, tf.IndexedSlices)  # sparse rows, not dense tables
    dense = [tf.convert_to_tensor(grads[position[id(v)]]).numpy() for v in theta]
    # two tasks: the visiting order does not matter
    projected = project_conflicting(per_task, [[0, 1], [1, 0]])
    want = [sum(p[v] for p in projected).numpy() for v in range(len(theta))]
    for got, ref in zip(dense, want):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    assert sum(float(tf.reduce_sum(a * b)) for a, b in zip(*per_task)) < 0
    plain = [tf.convert_to_tensor(fixed[position[id(v)]]).numpy() for v in theta]
    for part in (slice(0, len(shared)), slice(len(shared), len(theta))):
        assert any(  # so the update of the touched rows, and of the CTR tower, differs from fixed weighting
            not np.allclose(got, f) for got, f in zip(dense[part], plain[part])
        )
    # the CVR tower: the CTCVR loss alone reaches it, it gets its plain gradient
    for v in trainer.model.variable_groups().task["cvr"]:
        np.testing.assert_allclose(
            tf.convert_to_tensor(grads[position[id(v)]]).numpy(), tf.convert_to_tensor(fixed[position[id(v)]]).numpy(),
            rtol=1e-6, atol=1e-8,
        )


def test_gradnorm_balances_on_the_models_last_shared_layer(write_config):
    trainer, _ = _trainer(
        write_config,
        {
            "model": {"type": "mmoe", "num_experts": 3, "expert_units": [8, 6], "tower_units": [4],
                      "expert_batch_norm": True, "seed": 1},
            "loss_weighting": {"type": "gradnorm"},
        },
    )
    experts = trainer.model.mixture.experts
    # each expert's output layer: its Dense and the batch norm after it
    last = [(e.mlp.dense_layers[-1], e.mlp.norm_layers[-1]) for e in experts]
    assert all(norm is not None for _, norm in last)
    want = [v for layers in last for layer in layers for v in layer.trainable_variables]
    assert [id(v) for v in trainer.balance_variables] == [id(v) for v in want]


def test_checkpoint_restores_batch_norm_moving_statistics(write_config, tmp_path):
    """MMoE's experts batch-normalise (here set): their moving statistics are non-trainable, so no
    optimizer slot carries them; the trainer's checkpoint must."""
    overrides = {"model": {"type": "mmoe", "num_experts": 2, "expert_units": [4], "tower_units": [4],
                           "expert_batch_norm": True, "seed": 1}}
    trainer, _ = _trainer(write_config, overrides)
    moving = [v for v in trainer.model.non_trainable_variables if "moving_mean" in v.path]
    assert len(moving) == 2
    for i, v in enumerate(moving):
        v.assign(np.full(v.shape, 0.25 + i, dtype="float32"))
    path = trainer.checkpoint.write(str(tmp_path / "ckpt"))

    fresh, _ = _trainer(write_config, overrides)
    fresh_moving = [v for v in fresh.model.non_trainable_variables if "moving_mean" in v.path]
    assert all(np.all(v.numpy() == 0.0) for v in fresh_moving)
    fresh.checkpoint.read(path).assert_existing_objects_matched()
    for i, v in enumerate(fresh_moving):
        np.testing.assert_array_equal(v.numpy(), np.full(v.shape, 0.25 + i, dtype="float32"))
