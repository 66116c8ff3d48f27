"""Writes `mean_pooling_models.npz` (run once, with the code of main at 1ad00ee, before
behavior histories could be read by other encoders than their mean):

    PYTHONPATH=<that checkout> python tests/models/data/write_mean_pooling_fixture.py

For each case of `CASES` (every model type but DUPN, over a schema with two behavior
sequences; the interaction blocks fm, dot and dcn among them) it records the model's
weights, in `model.weights` order, and its outputs on `INPUTS`. A model built today from
the same arguments (no `sequence_encoders`: every history mean-pooled) must give both
bit for bit (`tests/models/test_mean_pooling_unchanged.py`).
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "mean_pooling_models.npz"

SCHEMA = {
    "categorical": [
        {"name": "user_id", "dtype": "int64", "num_buckets": 20, "dim": 4},
        {"name": "item_id", "dtype": "int64", "num_buckets": 30, "dim": 4},
        {"name": "category", "dtype": "string", "num_buckets": 8, "dim": 4},
    ],
    "numeric": [{"name": "price", "normalize": "log1p"}],
    "sequence": [
        {"name": "hist_item_id", "dtype": "int64", "max_len": 5, "shared_with": "item_id"},
        {"name": "hist_behavior", "dtype": "int64", "max_len": 5, "num_buckets": 4, "dim": 2},
    ],
    "labels": [{"name": "click"}, {"name": "conversion"}],
}

FUNNEL = [{"name": "ctr", "label": "click"},
          {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}]
TWO_TASKS = [{"name": "ctr", "label": "click"},
             {"name": "cvr", "label": "conversion", "sample_space": "click"}]

#: name -> (model type, tasks, hyperparameters)
CASES = {
    "single_task": ("single_task", [{"name": "ctr", "label": "click"}], {"tower_units": [6]}),
    "shared_bottom": ("shared_bottom", TWO_TASKS, {"bottom_units": [8], "tower_units": [4]}),
    "esmm_fm": ("esmm", FUNNEL, {"tower_units": [6], "interaction": {"type": "fm"}}),
    "escm2": ("escm2", FUNNEL, {"tower_units": [6]}),
    "aitm": ("aitm", [{"name": "ctr", "label": "click"}, {"name": "ctcvr", "label": "conversion"}],
             {"tower_units": [6]}),
    "mmoe_dot": ("mmoe", TWO_TASKS, {"num_experts": 2, "expert_units": [6], "tower_units": [4],
                                     "interaction": {"type": "dot"}}),
    "ple_dcn": ("ple", TWO_TASKS, {"expert_units": [6], "tower_units": [4],
                                   "interaction": {"type": "dcn", "num_layers": 1}}),
    "cross_stitch": ("cross_stitch", TWO_TASKS, {"column_units": [6], "tower_units": [4]}),
    "soft_sharing": ("soft_sharing", TWO_TASKS, {"column_units": [6], "tower_units": [4]}),
}

SEED = 11

#: Six rows: full, partly padded and empty histories; a null inside a history.
INPUTS = {
    "user_id": np.array([1, 2, 3, 4, 5, 6], "int64"),
    "item_id": np.array([3, 7, 11, 29, 0, 15], "int64"),
    "category": np.array(["a", "b", "c", "", "a", "zz"]),
    "price": np.array([1.0, 20.0, 0.0, 3.5, 100.0, 7.0], "float32"),
    "hist_item_id": np.array(
        [[1, 2, 3, 4, 5], [7, 8, -1, -1, -1], [-1, -1, -1, -1, -1], [9, -1, 12, -1, -1],
         [29, 28, 27, 26, 25], [15, -1, -1, -1, -1]], "int64"),
    "hist_behavior": np.array(
        [[0, 1, 2, 3, 0], [1, 1, -1, -1, -1], [-1, -1, -1, -1, -1], [2, -1, 3, -1, -1],
         [0, 0, 0, 0, 0], [3, -1, -1, -1, -1]], "int64"),
}


def build(case):
    from mtlrec.models import build_model

    kind, tasks, options = CASES[case]
    return build_model({"type": kind, "seed": SEED, **options}, SCHEMA, tasks)


def main():
    import keras

    record = {}
    for case in CASES:
        keras.utils.set_random_seed(0)
        model = build(case)
        for i, w in enumerate(model.weights):
            record[f"{case}/weight_{i:03d}"] = np.asarray(w)
        outputs = model({k: keras.ops.convert_to_tensor(v) for k, v in INPUTS.items()})
        for name, value in outputs.items():
            record[f"{case}/out_{name}"] = np.asarray(value)
        keras.backend.clear_session()
    np.savez_compressed(FIXTURE, **record)
    print(f"wrote {FIXTURE} ({len(record)} arrays)")


if __name__ == "__main__":
    main()
