"""training.jit_compile (XLA on the network after the embedding) and
training.mixed_precision (bfloat16): the same step, the embedding kept in float32, and one
line for what cannot apply."""

from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from mtlrec.data_pipeline import make_dataset
from mtlrec.training.config import ConfigError, load_config
from mtlrec.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
MMOE = {"type": "mmoe", "num_experts": 3, "expert_units": [8], "tower_units": [4], "seed": 1}


def _trainer(write_config, training, name="exp.yaml"):
    schema = yaml.safe_load(write_config().read_text())["schema"]
    for f in schema["numeric"]:
        if f.get("normalize") == "standardize":
            f["mean"], f["std"] = 0.08, 0.05
    config = load_config(write_config({"schema": schema, "model": MMOE, "training": training}, name))
    return Trainer(config, schema), schema


def _batch(funnel_root, tiny, schema):
    return next(iter(make_dataset(funnel_root, [tiny.days[0]], schema, batch_size=64)))


def test_a_jit_compiled_step_trains_like_the_plain_one(write_config, funnel_root, tiny):
    plain, schema = _trainer(write_config, {})
    compiled, _ = _trainer(write_config, {"jit_compile": True}, "jit.yaml")
    features, labels = _batch(funnel_root, tiny, schema)
    initial = [np.asarray(v) for v in plain.model.weights]
    steps = [t._build_step() for t in (plain, compiled)]
    for _ in range(2):
        (a, a_tasks, a_n, _), (b, b_tasks, b_n, _) = [s(features, labels) for s in steps]
        np.testing.assert_allclose(float(b), float(a), rtol=1e-5)
        for name in a_tasks:
            np.testing.assert_allclose(float(b_tasks[name]), float(a_tasks[name]), rtol=1e-5)
        assert int(a_n) == int(b_n) == 64
    # the sequences, the string ids and the tables took the same updates
    for va, vb in zip(plain.model.weights, compiled.model.weights):
        np.testing.assert_allclose(np.asarray(vb), np.asarray(va), rtol=1e-4, atol=1e-6)
    assert sum(not np.allclose(np.asarray(v), w) for v, w in zip(plain.model.weights, initial)) > 10


def test_bfloat16_computes_the_network_keeps_the_embedding_and_variables_in_float32(
    write_config, funnel_root, tiny
):
    trainer, schema = _trainer(write_config, {"mixed_precision": "bfloat16"})
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    model = trainer.model
    assert model.feature_embedding.dtype_policy.name == "float32"
    assert model.mixture.dtype_policy.name == "mixed_bfloat16"
    assert model.mixture.compute_dtype == "bfloat16"
    assert {v.dtype for v in model.weights} == {"float32"}
    features, labels = _batch(funnel_root, tiny, schema)
    outputs = model(features, training=False)
    # probabilities, logits and the funnel joint in float32 (outputs, and what the losses read)
    assert {keras.backend.standardize_dtype(outputs[k].dtype) for k in ("ctr", "ctr_logit", "cvr_logit", "ctcvr", "ctcvr_logit")} == {"float32"}
    total, per_task, _, _ = trainer._build_step()(features, labels)
    assert np.isfinite(float(total)) and set(per_task) == {"ctr", "cvr"}


@pytest.mark.parametrize("training, line, message", [
    ({"jit_compile": "yes"}, "training.jit_compile: expected true or false, got 'yes'", None),
    ({"mixed_precision": "float8"}, "training.mixed_precision: expected one of bfloat16, float16 "
     "or null, got 'float8'", None),
    ({"mixed_precision": "float16"}, "training.mixed_precision: float16 needs loss scaling, which "
     "the training step does not do (the loss weightings take per-task gradients); use bfloat16 "
     "(float32's exponent range, no scaling)", None),
    ({"jit_compile": True, "strategy": "parameter_server"}, "training.jit_compile: XLA cannot "
     "compile a step whose variables live on parameter servers; set it to false under strategy "
     "parameter_server", None),
])
def test_what_cannot_apply_is_refused_in_one_line(write_config, training, line, message):
    path = write_config({"training": training})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.split(": ", 1)[1] == line


def test_a_model_whose_network_reads_more_than_the_embedding_is_refused_in_one_line():
    from mtlrec.models import build_model
    from mtlrec.training.accelerator_options import DenseObjective
    from mtlrec.conventions.key_paths import KeyPathError

    config = load_config(REPO / "experiments" / "dupn.yaml")
    schema = config.to_dict()["schema"]
    for f in schema.get("numeric", []):
        f.update(mean=0.0, std=1.0)
    model = build_model(dict(config.model), schema, config.tasks)
    with pytest.raises(KeyPathError) as info:
        DenseObjective(model)
    assert info.value.path == "training.jit_compile"
    assert str(info.value).endswith("DUPN's network does not start from the embedding's outputs "
                                    "alone, so it cannot be compiled apart from the embedding; set "
                                    "it to false for this model")


def test_the_options_enter_the_training_digest_only_when_set(write_config):
    """Run directories compare this digest on resume: at their defaults the options leave the
    digest of runs written before them as it was."""
    def digest(training, name):
        return load_config(write_config({"training": training}, name)).training_digest()

    plain = digest({}, "plain.yaml")
    assert digest({"jit_compile": False}, "off.yaml") == plain
    jit, bf16 = digest({"jit_compile": True}, "jit.yaml"), digest({"mixed_precision": "bfloat16"}, "bf.yaml")
    assert len({plain, jit, bf16}) == 3
