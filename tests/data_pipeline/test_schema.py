import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from mtlrec.schema import Schema, compute_numeric_stats

API_YAML = textwrap.dedent("""
    schema:
      key: impression_id
      categorical:
        - {name: user_id, dtype: int64, num_buckets: 20000, dim: 16}
        - {name: item_id, dtype: int64, num_buckets: 50000, dim: 16}
        - {name: scene, dtype: string, num_buckets: 8, dim: 16}
        - {name: item_brand, dtype: int64, num_buckets: 2000, dim: 16, shared_with: null}
      numeric:
        - {name: price, normalize: log1p, default: 0.0}
        - {name: item_hist_ctr, normalize: standardize, mean: 0.05, std: 0.02}
      sequence:
        - {name: hist_item_id, dtype: int64, max_len: 20, shared_with: item_id}
        - {name: hist_behavior, dtype: int64, max_len: 20, num_buckets: 8, dim: 8}
      labels:
        - {name: click, kind: binary}
        - {name: conversion, kind: binary}
        - {name: purchasing_power, kind: multiclass, num_classes: 7}
""")


def base():
    return yaml.safe_load(API_YAML)["schema"]


def test_api_yaml_parses_and_roundtrips():
    s = Schema.from_dict(base())
    assert s.key == "impression_id"
    assert [f.name for f in s.categorical] == ["user_id", "item_id", "scene", "item_brand"]
    assert s.numeric[1].mean == 0.05 and s.numeric[1].std == 0.02 and s.numeric[0].default == 0.0
    assert s.table_size(s.sequence[0]) == (50000, 16)
    assert s.table_size(s.sequence[1]) == (8, 8)
    assert s.labels[2].num_classes == 7
    d = s.to_dict()
    assert Schema.from_dict(d) == s
    assert d["sequence"][0] == {"name": "hist_item_id", "dtype": "int64", "max_len": 20, "shared_with": "item_id"}
    assert s.column_names[:3] == ["user_id", "item_id", "scene"] and s.label_names == ["click", "conversion", "purchasing_power"]


def _edit(path, value):
    d = base()
    section, index, key = path
    if value is KeyError:
        del d[section][index][key]
    else:
        d[section][index][key] = value
    return d


@pytest.mark.parametrize("edit, message", [
    (("categorical", 2, "num_buckets", 0), r"^schema.categorical\[2\].num_buckets: expected a positive integer, got 0$"),
    (("categorical", 0, "dim", "16"), r"schema.categorical\[0\].dim: expected a positive integer, got '16'"),
    (("categorical", 0, "dtype", "float"), r"schema.categorical\[0\].dtype: expected one of int64, string, got 'float'"),
    (("categorical", 1, "colour", 1), r"schema.categorical\[1\].colour: unknown key"),
    (("categorical", 1, "shared_with", "nope"), r"schema.categorical\[1\].shared_with: expected a categorical feature with its own table, got 'nope'"),
    (("numeric", 0, "normalize", "zscore"), r"schema.numeric\[0\].normalize: expected one of none, log1p, standardize, bucketize, piecewise_linear, got 'zscore'"),
    (("numeric", 1, "std", 0), r"schema.numeric\[1\].std: expected a positive number, got 0"),
    (("sequence", 0, "shared_with", "hist_behavior"), r"schema.sequence\[0\].shared_with: expected a categorical feature with its own table, got 'hist_behavior'"),
    (("sequence", 0, "dim", 8), r"schema.sequence\[0\].dim: expected 16 \(the dim of 'item_id'\) or nothing, got 8"),
    (("sequence", 0, "dtype", "string"), r"schema.sequence\[0\].dtype: expected 'int64' like 'item_id'"),
    (("sequence", 1, "num_buckets", KeyError), r"schema.sequence\[1\].num_buckets: expected a positive integer \(or shared_with a categorical feature\)"),
    (("sequence", 1, "max_len", -2), r"schema.sequence\[1\].max_len: expected a positive integer, got -2"),
    (("labels", 2, "num_classes", KeyError), r"schema.labels\[2\].num_classes: expected a positive integer, got None"),
    (("labels", 0, "kind", "ranking"), r"schema.labels\[0\].kind: expected one of binary, multiclass, regression"),
    (("labels", 1, "name", "click"), r"schema.labels\[1\].name: duplicate name 'click' \(already declared at schema.labels\[0\].name\)"),
])
def test_errors_name_key_path(edit, message):
    with pytest.raises(ValueError, match=message):
        Schema.from_dict(_edit(edit[:3], edit[3]))


def test_top_level_errors():
    with pytest.raises(ValueError, match=r"^schema.extra: unknown key"):
        Schema.from_dict({**base(), "extra": 1})
    with pytest.raises(ValueError, match="expected at least one feature"):
        Schema.from_dict({"labels": [{"name": "y"}]})
    with pytest.raises(ValueError, match=r"^cfg.schema.categorical: expected a list, got 3"):
        Schema.from_dict({"categorical": 3}, path="cfg.schema")
    shared_chain = base()
    shared_chain["categorical"][3] = {"name": "item_brand", "shared_with": "item_id"}
    shared_chain["sequence"][0]["shared_with"] = "item_brand"
    with pytest.raises(ValueError, match=r"'item_brand' itself shares another table"):
        Schema.from_dict(shared_chain)


@pytest.mark.parametrize("keys, message", [
    ({"lookup": "dyn"}, r"^schema.categorical\[1\].lookup: expected one of hash, identity, dynamic, got 'dyn'$"),
    ({"lookup": "dynamic", "min_count": 0}, r"^schema.categorical\[1\].min_count: expected a positive integer, got 0$"),
    ({"lookup": "dynamic", "ttl_days": "7"}, r"^schema.categorical\[1\].ttl_days: expected a positive integer, got '7'$"),
    ({"lookup": "dynamic", "oov_buckets": True}, r"^schema.categorical\[1\].oov_buckets: expected a positive integer, got True$"),
    ({"min_count": 2}, r"^schema.categorical\[1\].min_count: only allowed with lookup: dynamic, got lookup 'hash'$"),
    ({"lookup": "identity", "ttl_days": 3}, r"^schema.categorical\[1\].ttl_days: only allowed with lookup: dynamic, got lookup 'identity'$"),
    ({"oov_buckets": 3}, r"^schema.categorical\[1\].oov_buckets: only allowed with lookup: identity or dynamic, got lookup 'hash'$"),
    ({"lookup": "dynamic", "count_half_life_days": 2.5}, r"^schema.categorical\[1\].count_half_life_days: expected a positive integer, got 2.5$"),
    ({"lookup": "dynamic", "max_waiting": -1}, r"^schema.categorical\[1\].max_waiting: expected a positive integer, got -1$"),
    ({"lookup": "identity", "max_waiting": 4}, r"^schema.categorical\[1\].max_waiting: only allowed with lookup: dynamic, got lookup 'identity'$"),
])
def test_lookup_errors_name_key_path(keys, message):
    d = base()
    d["categorical"][1].update(keys)
    with pytest.raises(ValueError, match=message):
        Schema.from_dict(d)


def test_lookup_of_tables_shared_features_and_identity_of_strings():
    d = base()
    d["categorical"][1].update(lookup="dynamic", min_count=3, ttl_days=7)
    d["sequence"][1].update(lookup="identity", oov_buckets=2)
    s = Schema.from_dict(d)
    assert s.lookup_of(s.sequence[0]) == s.categorical[1].lookup  # shared: the owner's map
    assert (s.lookup_of(s.sequence[0]).admission_count, s.lookup_of(s.sequence[0]).oov_rows) == (3, 1)
    assert (s.categorical[1].lookup.half_life_days, s.categorical[1].lookup.waiting_bound(50000)) == (7, 50000)  # defaults
    tuned = Schema.from_dict({**d, "categorical": [dict(d["categorical"][1], count_half_life_days=3, max_waiting=9)]})
    assert (tuned.categorical[0].lookup.half_life_days, tuned.categorical[0].lookup.waiting_bound(50000)) == (3, 9)
    assert tuned.to_dict()["categorical"][0]["max_waiting"] == 9 and Schema.from_dict(tuned.to_dict()) == tuned
    assert s.lookup_of(s.sequence[1]).oov_rows == 2 and s.lookup_of(s.categorical[0]).oov_rows == 0
    assert s.to_dict()["categorical"][1] == {"name": "item_id", "dtype": "int64", "num_buckets": 50000, "dim": 16,
                                             "lookup": "dynamic", "min_count": 3, "ttl_days": 7}
    assert "lookup" not in s.to_dict()["categorical"][0]  # hash stays implicit
    assert Schema.from_dict(s.to_dict()) == s
    d["sequence"][0]["lookup"] = "dynamic"
    with pytest.raises(ValueError, match=r"^schema.sequence\[0\].lookup: not allowed with shared_with \(the lookup is that of 'item_id'"):
        Schema.from_dict(d)
    d = base()
    d["categorical"][2]["lookup"] = "identity"
    with pytest.raises(ValueError, match=r"^schema.categorical\[2\].lookup: expected hash or dynamic for string ids"):
        Schema.from_dict(d)


def test_shared_categorical_inherits_size():
    d = {"categorical": [{"name": "a", "num_buckets": 9, "dim": 4}, {"name": "b", "shared_with": "a"}]}
    s = Schema.from_dict(d)
    assert s.table_size(s.categorical[1]) == (9, 4)
    assert s.to_dict()["categorical"][1] == {"name": "b", "dtype": "int64", "shared_with": "a"}
    with pytest.raises(ValueError, match=r"schema.categorical\[1\].num_buckets: expected 9"):
        Schema.from_dict({"categorical": [d["categorical"][0], {"name": "b", "shared_with": "a", "num_buckets": 3}]})


def test_compute_numeric_stats_streams_batches():
    d = {"numeric": [
        {"name": "x", "normalize": "standardize", "default": 10.0},
        {"name": "y", "normalize": "standardize", "mean": 1.0, "std": 2.0},
        {"name": "z", "normalize": "log1p"},
    ]}
    batches = [
        pa.record_batch({"x": pa.array([1.0, None, 3.0]), "y": pa.array([0.0, 0.0, 0.0])}),  # null -> default 10
        {"x": np.array([6.0]), "y": np.array([5.0])},
        pd.DataFrame({"x": [np.nan], "y": [1.0]}),  # NaN -> default 10
        {"x": np.array([np.inf, -np.inf]), "y": np.array([0.0, 0.0])},  # +-inf -> default 10, as the model reads them
    ]
    values = np.array([1.0, 10.0, 3.0, 6.0, 10.0, 10.0, 10.0])
    out = compute_numeric_stats(d, batches)
    x = out["numeric"][0]
    assert x["mean"] == pytest.approx(values.mean()) and x["std"] == pytest.approx(values.std())
    assert out["numeric"][1] == {"name": "y", "dtype": "float32", "normalize": "standardize", "mean": 1.0, "std": 2.0, "default": 0.0}
    assert "mean" not in out["numeric"][2]
    again = compute_numeric_stats(d, [{"x": np.array([2.0, 4.0]), "y": np.array([2.0, 4.0])}], overwrite=True)
    assert again["numeric"][1]["mean"] == 3.0 and again["numeric"][1]["std"] == 1.0
    assert "mean" not in d["numeric"][0]  # input untouched
    with pytest.raises(ValueError, match="column 'x' missing"):
        compute_numeric_stats(d, [{"y": np.array([1.0])}])


def _numeric(**keys):
    d = base()
    d["numeric"][0] = {"name": "price", **keys}
    return d


@pytest.mark.parametrize("keys, message", [
    ({"normalize": "bucketize", "num_buckets": 1},
     r"^schema.numeric\[0\].num_buckets: expected an integer >= 2 for normalize: bucketize, got 1$"),
    ({"normalize": "piecewise_linear", "num_buckets": 2},
     r"^schema.numeric\[0\].num_buckets: expected an integer >= 3 for normalize: piecewise_linear, got 2$"),
    ({"normalize": "bucketize", "boundaries": [0.5, 2, 2]},
     r"^schema.numeric\[0\].boundaries: expected strictly increasing numbers, got 2 after 2 at index 2$"),
    ({"normalize": "bucketize", "boundaries": [3, 1]},
     r"^schema.numeric\[0\].boundaries: expected strictly increasing numbers, got 1 after 3 at index 1$"),
    ({"normalize": "bucketize", "boundaries": [1.0, 1.00000001]},
     r"^schema.numeric\[0\].boundaries: expected strictly increasing numbers, got 1.00000001 after 1.0 as float32 "
     r"\(the model compares float32 values\) at index 1$"),
    ({"normalize": "bucketize", "boundaries": []},
     r"^schema.numeric\[0\].boundaries: expected a list of 1 or more strictly increasing numbers for normalize: bucketize, got \[\]$"),
    ({"normalize": "piecewise_linear", "boundaries": [1]},
     r"^schema.numeric\[0\].boundaries: expected a list of 2 or more strictly increasing numbers for normalize: piecewise_linear, got \[1\]$"),
    ({"normalize": "bucketize", "boundaries": 5},
     r"^schema.numeric\[0\].boundaries: expected a list of 1 or more strictly increasing numbers for normalize: bucketize, got 5$"),
    ({"normalize": "bucketize", "boundaries": [0, ".5"]}, r"^schema.numeric\[0\].boundaries\[1\]: expected a finite number, got '.5'$"),
    ({"normalize": "bucketize", "boundaries": [0, float("nan")]}, r"^schema.numeric\[0\].boundaries\[1\]: expected a finite number, got nan$"),
    ({"normalize": "bucketize", "num_buckets": 3, "boundaries": [1, 2, 3]},
     r"^schema.numeric\[0\].boundaries: expected at most num_buckets - 1 = 2 cuts, got 3 \(or leave num_buckets out\)$"),
    ({"normalize": "log1p", "num_buckets": 8},
     r"^schema.numeric\[0\].num_buckets: only allowed with normalize: bucketize or piecewise_linear, got normalize 'log1p'$"),
    ({"boundaries": [1, 2]}, r"^schema.numeric\[0\].boundaries: only allowed with normalize: bucketize or piecewise_linear, got normalize 'none'$"),
    ({"normalize": "bucketize", "dim": 0}, r"^schema.numeric\[0\].dim: expected a positive integer, got 0$"),
])
def test_embedded_numeric_errors_name_key_path(keys, message):
    with pytest.raises(ValueError, match=message):
        Schema.from_dict(_numeric(**keys))


def test_embedded_numeric_dim_defaults_to_the_categorical_dim():
    s = Schema.from_dict(_numeric(normalize="bucketize", boundaries=[1, 10]))
    assert s.numeric_dim(s.numeric[0]) == 16 and s.numeric[0].bucket_count == 3
    assert s.numeric[0].to_dict() == {"name": "price", "dtype": "float32", "normalize": "bucketize", "default": 0.0, "boundaries": [1.0, 10.0]}
    s = Schema.from_dict(_numeric(normalize="piecewise_linear", dim=4))
    assert s.numeric_dim(s.numeric[0]) == 4 and s.numeric[0].bucket_count == 32  # the default buckets
    mixed = _numeric(normalize="bucketize")
    mixed["categorical"][2]["dim"] = 8
    with pytest.raises(ValueError, match=(
        r"^schema.numeric\[0\].dim: expected a positive integer for normalize: bucketize "
        r"\(the categorical features' dims are \[8, 16\], no one dim to default to\)$"
    )):
        Schema.from_dict(mixed)
    with pytest.raises(ValueError, match=r"there is no categorical feature, no one dim to default to"):
        Schema.from_dict({"numeric": [{"name": "x", "normalize": "piecewise_linear"}]})


def test_compute_numeric_stats_fills_boundaries_and_refuses_a_constant_feature():
    schema = {
        "numeric": [
            {"name": "x", "normalize": "bucketize", "num_buckets": 4, "dim": 2},
            {"name": "y", "normalize": "piecewise_linear", "boundaries": [0, 1, 2], "dim": 2},
            {"name": "z", "normalize": "standardize"},
        ],
        "labels": [{"name": "click"}],
    }
    batches = [
        {"x": np.array([8, 1, np.nan, 7, 2]), "y": np.zeros(5), "z": np.array([1.0, 3.0, 1, 3, 2])},
        pa.record_batch({"x": pa.array([6.0, 3.0, None, 5.0, 4.0]), "y": pa.array([0.0] * 5), "z": pa.array([2.0] * 5)}),
    ]
    out = compute_numeric_stats(schema, batches)
    assert out["numeric"][0]["boundaries"] == [3.0, 5.0, 7.0]  # NaN and null skipped: 1..8
    assert out["numeric"][1]["boundaries"] == [0.0, 1.0, 2.0]  # given: kept
    assert out["numeric"][2]["mean"] == 2.0
    flat = {"x": np.full(6, 4.25), "y": np.zeros(6), "z": np.ones(6)}
    with pytest.raises(ValueError, match=(
        r"^schema.numeric\[0\].normalize: feature 'x': expected values that give at least 1 quantile cut for "
        r"normalize: bucketize, got 6 values where every value is 4.25 \(constant\); give boundaries, or another normalize$"
    )):
        compute_numeric_stats(schema, [flat])
    schema["numeric"][1] = {"name": "y", "normalize": "piecewise_linear", "dim": 2}
    with pytest.raises(ValueError, match=(
        r"^schema.numeric\[1\].normalize: feature 'y': expected values that give at least 2 quantile cuts for "
        r"normalize: piecewise_linear, got 6 values where values from 0 to 1 give 1 cut; give boundaries"
    )):
        compute_numeric_stats(schema, [{"x": np.arange(6.0), "y": np.array([0, 1] * 3), "z": np.ones(6)}])
