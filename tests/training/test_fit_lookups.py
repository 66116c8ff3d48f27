"""`model.fit` with `lookup: dynamic` tables admits, evicts and expires exactly the ids the
trainer does, given the same batches and days."""

import copy
import importlib.util
from pathlib import Path

import numpy as np
import tensorflow as tf

from mtlrec.models import build_model
from mtlrec.training.config import load_config
from mtlrec.training.days.day_datasets import train_dataset
from mtlrec.training.distribute.sharding import sharding_of
from mtlrec.training.experiment import Experiment

_spec = importlib.util.spec_from_file_location("mtlrec_training_conftest", Path(__file__).with_name("conftest.py"))
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
DAYS, SCHEMA = _fixtures.DAYS, _fixtures.SCHEMA

#: users by a map of capacity 64 forgetting them after a day away; the 50 items (and the
#: history sharing their table) by one of capacity 16, admitted on their 2nd sighting.
DYNAMIC = copy.deepcopy(SCHEMA)
DYNAMIC["categorical"][0].update(lookup="dynamic", num_buckets=64, ttl_days=1)
DYNAMIC["categorical"][1].update(lookup="dynamic", num_buckets=16, min_count=2, oov_buckets=1)


def _entries(id_map):
    keys, values = (t.numpy() for t in id_map.table.export())
    order = np.argsort(keys)
    return keys[order], values[order]


def test_fit_day_by_day_admits_and_evicts_as_the_trainer(tmp_path, funnel_root, make_config):
    config = load_config(make_config(tmp_path, funnel_root, {"schema": DYNAMIC}))
    experiment = Experiment(config)
    experiment.train(days=f"{DAYS[0]}:{DAYS[1]}")
    trainer = experiment.trainer

    model = build_model(dict(config.model), trainer.schema, config.tasks)
    model.compile(optimizer="adam")
    freed = {}
    for day in DAYS[:2]:
        freed[day] = model.start_day(day)
        batches = train_dataset(config, trainer.schema, sharding_of(tf.distribute.get_strategy()), day, None)
        model.fit(batches(0, 0), verbose=0)

    assert freed[DAYS[1]]["item_id"] > 0  # items waiting evict the least counted
    ours, theirs = model.feature_embedding.id_maps, trainer.model.feature_embedding.id_maps
    assert sorted(ours) == sorted(theirs) == ["item_id", "user_id"]
    for owner in ours:
        keys, values = _entries(ours[owner])
        want_keys, want_values = _entries(theirs[owner])
        np.testing.assert_array_equal(keys, want_keys, err_msg=owner)
        np.testing.assert_array_equal(values, want_values, err_msg=owner)
    report = model.lookup_report()
    assert report == trainer.lookup_report()
    assert report["item_id"]["rows_in_use"] > 0 and report["item_id"]["admitted"] > 0
