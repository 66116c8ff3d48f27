"""Writes the trainer checkpoints of `old_checkpoints/` (run once, with the code of main at
479db59, before the trainer took its variables from `MultiTaskModel.variable_groups()`):

    PYTHONPATH=<that checkout> python tests/training/data/write_old_checkpoints.py

Every variable the checkpoint holds (model weights, optimizer slots, the weighting's state,
BatchNorm statistics) is filled with `fill_value(its name)` first, so a restore that put a
value into another variable of the same shape is caught. Keras names an optimizer's slot
after the variable it belongs to, so the slots are checked too.
"""

import copy
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from conftest import BASE, merge  # noqa: E402

_DUPN_SCHEMA_KNOBS = dict(num_users=20, num_items=20, max_len=3, dim=2, property_dim=2)

#: name -> config overrides of the tiny ESMM config (tasks in the order of the outputs).
CASES = {
    "escm2_uncertainty": {
        "model": {"type": "escm2", "variant": "dr", "tower_units": [4], "seed": 2},
        "loss_weighting": {"type": "uncertainty"},
    },
    "soft_sharing_fixed": {
        "model": {"type": "soft_sharing", "column_units": [4], "tower_units": [4], "seed": 2},
    },
    "aitm_fixed": {
        "tasks": [{"name": "ctr", "label": "click"}, {"name": "ctcvr", "label": "conversion"}],
        "model": {"type": "aitm", "tower_units": [4], "seed": 2},
    },
    "mmoe_metabalance": {
        "tasks": [{"name": "ctr", "label": "click"},
                  {"name": "cvr", "label": "conversion", "sample_space": "click"}],
        # written when MMoE's experts always batch-normalised (model format 3)
        "model": {"type": "mmoe", "num_experts": 2, "expert_units": [4], "tower_units": [],
                  "expert_batch_norm": True, "seed": 2},
        "loss_weighting": {"type": "metabalance", "target": "cvr"},
    },
    "ple_pcgrad": {
        "model": {"type": "ple", "expert_units": [4], "tower_units": [4], "seed": 2},
        "loss_weighting": {"type": "pcgrad", "seed": 0},
    },
    "dupn_gradnorm": {
        "tasks": [{"name": "ctr", "label": "click"}, {"name": "follow", "label": "follow"}],
        "model": {"type": "dupn", "lstm_units": 4, "attention_units": 4, "representation_dim": 4,
                  "tower_units": [4], "seed": 2},
        "loss_weighting": {"type": "gradnorm"},
    },
}


def config_of(case: str) -> dict:
    """The full config dict of `case` (its schema's numeric statistics filled)."""
    overrides = copy.deepcopy(CASES[case])
    config = merge(BASE, {k: v for k, v in overrides.items() if k != "tasks"})
    if "tasks" in overrides:
        config["tasks"] = overrides["tasks"]
    if config["model"]["type"] == "dupn":
        from mtlrec.data_pipeline import funnel_schema_dict

        config["schema"] = funnel_schema_dict(**_DUPN_SCHEMA_KNOBS)
        config["data"]["funnel"] = [["click", "conversion"]]
    for feature in config["schema"]["numeric"]:
        if feature.get("normalize") == "standardize":
            feature["mean"], feature["std"] = 0.08, 0.05
    return config


def trainer_of(case: str, directory: Path):
    from mtlrec.training.config import load_config
    from mtlrec.training.trainer import Trainer

    config = config_of(case)
    path = directory / f"{case}.yaml"
    path.write_text(yaml.safe_dump(config))
    return Trainer(load_config(path), config["schema"])


def fill_value(name: str) -> float:
    return 0.25 + (zlib.crc32(name.encode()) % 10007) / 1000.0


def checkpointed_variables(trainer):
    """(name, variable) of everything the trainer's checkpoint holds but the step counters."""
    out = []
    own = {id(v) for v in trainer.weighting.variables}
    model = trainer.model.trainable_variables + trainer.model.non_trainable_variables
    for prefix, variables in (
        ("model", [v for v in model if id(v) not in own]),
        ("weighting", trainer.weighting.variables),
        ("dense", trainer.dense_optimizer.variables[2:]),  # past iterations, learning rate
        ("embedding", trainer.embedding_optimizer.variables[2:]),
    ):
        for variable in variables:
            path = variable.path
            if prefix != "model":  # "adam_3/<slot>": the prefix counts the objects made
                path = path.split("/", 1)[-1]
            name = f"{prefix}:{path}"
            if variable.dtype in ("float32", "float64") and "seed_generator" not in name:
                out.append((name, variable))
    return out


def main():
    out = HERE / "old_checkpoints"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            trainer = trainer_of(case, Path(tmp))
            for name, variable in checkpointed_variables(trainer):
                variable.assign(np.full(variable.shape, fill_value(name), dtype=variable.dtype))
            trainer.checkpoint.write(str(out / case / "ckpt"))
            print(case, len(checkpointed_variables(trainer)), "variables")


if __name__ == "__main__":
    main()
