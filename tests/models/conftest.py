"""Shared fixtures of the model tests: small synthetic funnels written by the data
pipeline's generator and read back with `make_dataset`."""

import numpy as np
import pytest

from mtlrec.data_pipeline import funnel_schema_dict, generate_funnel, make_dataset

#: A tiny world for build / fit / round-trip tests (every feature kind of the funnel schema).
TINY = dict(
    num_users=30, num_items=40, num_categories=4, num_brands=8, num_shops=4,
    max_len=4, dim=4, property_dim=2, base_ctr=0.3, base_cvr=0.3,
)
#: The features the tiny schema keeps: int64 and string ids, a numeric, int64 and string
#: sequences and a sequence sharing the item table (fewer features trace faster).
TINY_FEATURES = (
    "user_id", "user_gender", "item_id", "scene", "price",
    "hist_item_id", "hist_behavior", "hist_scene",
)
EXTRAS = ("true_ctr", "true_cvr", "user_id")


class Funnel:
    """Two days of generated impressions: day 0 to train on, day 1 to evaluate on."""

    def __init__(self, root, schema, days):
        self.root = root
        self.schema = schema
        self.train_day, self.eval_day = days

    def train(self, batch_size=256, seed=0):
        return make_dataset(
            self.root, self.train_day, self.schema, batch_size=batch_size,
            shuffle_buffer=100_000, seed=seed,
        )

    def evaluate(self, batch_size=4096):
        """(features dataset, numpy labels + extras) of the evaluation day, same row order."""
        ds = make_dataset(
            self.root, self.eval_day, self.schema, batch_size=batch_size, extra_columns=EXTRAS
        )
        labels = {}
        for _, batch in ds:
            for name, value in batch.items():
                labels.setdefault(name, []).append(value.numpy())
        labels = {k: np.concatenate(v) for k, v in labels.items()}
        return ds.map(lambda features, _: features), labels

    def batch(self, batch_size=64):
        """One (features, labels) batch of the training day (for eager checks)."""
        return next(iter(make_dataset(self.root, self.train_day, self.schema, batch_size=batch_size)))


def _generate(root, rows_per_day, bucket_scale=1, keep=None, **knobs):
    """Write two days; `bucket_scale` multiplies the id tables (the generator's schema gives
    2 buckets per id, so ~40% of the ids share a row with another through hashing: fine for
    realism, but it caps what a small test can learn); `keep` restricts the schema's features."""
    days = generate_funnel(root, "2024-01-01", 2, rows_per_day, seed=0, **knobs)
    schema = funnel_schema_dict(**knobs)
    for feature in schema["categorical"]:
        if feature["name"] in ("user_id", "item_id"):
            feature["num_buckets"] *= bucket_scale
    if keep is not None:
        for section in ("categorical", "numeric", "sequence"):
            schema[section] = [f for f in schema[section] if f["name"] in keep]
    return Funnel(str(root), schema, days)


@pytest.fixture(scope="session")
def tiny_funnel(tmp_path_factory):
    """600 rows a day of the TINY world, schema restricted to TINY_FEATURES."""
    return _generate(tmp_path_factory.mktemp("tiny_funnel"), 600, keep=TINY_FEATURES, **TINY)


@pytest.fixture(scope="session")
def funnel_factory(tmp_path_factory):
    """make(name, rows_per_day, bucket_scale=1, keep=None, **knobs) -> Funnel, cached."""
    cache = {}

    def make(name, rows_per_day, bucket_scale=1, keep=None, **knobs):
        if name not in cache:
            cache[name] = _generate(
                tmp_path_factory.mktemp(name), rows_per_day, bucket_scale, keep, **knobs
            )
        return cache[name]

    return make


@pytest.fixture
def tiny_tasks():
    """ctr -> cvr funnel plus the DUPN-style user tasks, all labels of the funnel schema."""
    return [
        {"name": "ctr", "label": "click"},
        {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
        {"name": "purchasing_power", "label": "purchasing_power", "kind": "multiclass",
         "num_classes": 7},
        {"name": "follow", "label": "follow"},
    ]
