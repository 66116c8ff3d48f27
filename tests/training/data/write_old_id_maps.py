"""Writes `old_id_maps/`: a trainer checkpoint, a `.keras` file and a SavedModel export of a
model with two `lookup: dynamic` tables (int64 items with a shared history, string scenes),
taken mid-day with ids admitted, waiting and evicted. Run once, with the code of main at
58a7741 (before the id maps held `ids_dropped`, aged their counts and bounded their waiting
ids):

    PYTHONPATH=<that checkout> python tests/training/data/write_old_id_maps.py

`test_old_checkpoints.py` reads them with today's code.
"""

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from conftest import BASE, merge  # noqa: E402

OUT = HERE / "old_id_maps"
DAYS = ("2024-01-01", "2024-01-02")


def config() -> dict:
    """The tiny ESMM config with dynamic item and scene tables."""
    out = merge(BASE, {})
    categorical = out["schema"]["categorical"]
    categorical[1].update(lookup="dynamic", num_buckets=6, min_count=2, oov_buckets=2, ttl_days=3)
    categorical[2].update(lookup="dynamic", num_buckets=3)
    for feature in out["schema"]["numeric"]:
        if feature.get("normalize") == "standardize":
            feature["mean"], feature["std"] = 0.08, 0.05
    return out


#: The ids each day's batches bring, in data order.
BATCHES = {
    DAYS[0]: [
        {"item_id": [1, 1, 2, 2, 3, 3, 4, 4], "hist_item_id": [[5, 5, 6, 6], [-1, -1, -1, -1]],
         "scene": ["home", "home", "cart", "search"]},
        {"item_id": [7, 7, 7, 8, 12], "hist_item_id": [[12, -1, -1, -1]], "scene": ["promo", "search"]},
    ],
    DAYS[1]: [{"item_id": [1, 10, 10, 11], "hist_item_id": [[9, -1, -1, -1]], "scene": ["promo", "home"]}],
}

#: Rows scored by the test (raw features of the serving signature).
PROBE = {
    "user_id": np.array([3, 4, 5], np.int64),
    "item_id": np.array([7, 1, 99], np.int64),
    "scene": np.array(["home", "promo", "unseen"]),
    "price": np.array([2.0, 0.5, 9.0], np.float32),
    "item_hist_ctr": np.array([0.1, 0.05, 0.2], np.float32),
    "hist_item_id": np.array([[5, 6, -1, -1], [12, -1, -1, -1], [-1, -1, -1, -1]], np.int64),
}


def trainer_of(directory: Path):
    from mtlrec.training.config import load_config
    from mtlrec.training.trainer import Trainer

    path = directory / "old_id_maps.yaml"
    path.write_text(yaml.safe_dump(config()))
    return Trainer(load_config(path), config()["schema"])


def main():
    import tensorflow as tf

    from mtlrec.training.export import export_model

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_of(Path(tmp))
        layer = trainer.lookup_layers[0]
        for day, batches in BATCHES.items():
            trainer.start_day(day)
            for batch in batches:
                layer.observe({k: tf.constant(v, tf.string if k == "scene" else tf.int64) for k, v in batch.items()})
        trainer.checkpoint.write(str(OUT / "ckpt"))
        trainer.model.save(str(OUT / "model.keras"))
        export_model(trainer.model, OUT / "export", metadata={"schema": config()["schema"], "key": "impression_id"})
        outputs = trainer.model({k: tf.constant(v) for k, v in PROBE.items()}, training=False)
        np.savez(OUT / "probe_outputs.npz", **{k: np.asarray(v) for k, v in outputs.items()})
        for owner, id_map in layer.id_maps.items():
            print(owner, id_map.report())


if __name__ == "__main__":
    main()
