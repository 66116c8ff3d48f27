import logging
import math

import pytest

from mtlrec.data_pipeline import collision_report, collision_warnings, validate_day
from mtlrec.data_pipeline.id_collisions import buckets_for_share, shared_row_share
from mtlrec.schema import Schema
from tests.data_pipeline.test_validation import DAY, _write

# hand_table's ids per table (nulls read as the feature default, so the default is an id)
HAND_COUNTS = {
    "uid": 8,  # 1, 2, 3, 5, 6, 7, 9 and the default -1 (rows 0, 4, 8 are null)
    "scene": 3,  # "search", "rec" and the default "none"
    "shop": 10,  # 100..109, ints declared string
    "hist": 9,  # 0..8 (row i holds range(i); row 5 is null)
    "hist_s": 3,  # s0, s1, s2
}


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_distinct_ids_per_table_are_exact(tmp_path, hand_schema, hand_table, fmt):
    _write(tmp_path, hand_table(), fmt)
    counts = {}
    assert validate_day(tmp_path, DAY, hand_schema, fmt=fmt, id_counts=counts) == 10
    assert counts == HAND_COUNTS


def test_a_shared_table_counts_the_ids_of_every_feature_using_it(tmp_path, hand_schema, hand_table):
    hand_schema["sequence"][0] = {"name": "hist", "dtype": "int64", "max_len": 3, "shared_with": "uid"}
    _write(tmp_path, hand_table(), "parquet")
    counts = {}
    validate_day(tmp_path, DAY, hand_schema, id_counts=counts)
    assert counts["uid"] == 11  # {-1, 1, 2, 3, 5, 6, 7, 9} | {0..8}
    assert "hist" not in counts
    report = collision_report(Schema.from_dict(hand_schema), counts)
    assert report["uid"]["features"] == ["uid", "hist"]


def test_report_gives_the_expected_shared_row_share(hand_schema):
    report = collision_report(Schema.from_dict(hand_schema), HAND_COUNTS)
    # 8 ids in 10 buckets: an id shares its row unless the 7 others all miss it
    assert report["uid"]["expected_shared_share"] == pytest.approx(1 - 0.9**7, abs=1e-6)
    assert report["uid"]["distinct_ids"] == 8
    assert report["uid"]["num_buckets"] == 10
    assert report["hist_s"]["expected_shared_share"] == pytest.approx(1 - 0.9**2, abs=1e-6)
    # under 1% for 8 ids: 1 - (1 - 1/m)^7 < 0.01  <=>  m > 697.0
    assert report["uid"]["num_buckets_for_1pct"] == 697


def test_share_formula_and_suggested_buckets():
    assert shared_row_share(1, 10) == 0.0
    assert shared_row_share(20000, 20000) == pytest.approx(1 - math.exp(-1), abs=1e-4)  # ~63%
    m = buckets_for_share(20000)
    assert shared_row_share(20000, m) < 0.01 <= shared_row_share(20000, m - 1)
    assert m == pytest.approx(20000 / -math.log(0.99), rel=1e-3)  # about 99.5x the ids


def test_warning_names_the_feature_and_the_size_that_fixes_it(hand_schema):
    report = collision_report(Schema.from_dict(hand_schema), HAND_COUNTS)
    lines = collision_warnings(report)
    assert lines[0] == (
        "feature uid: 8 distinct ids hashed into num_buckets=10: about 52.2% of ids share an embedding row "
        "with another id (num_buckets is a hash range, not a vocabulary size); "
        "num_buckets >= 697 brings this under 1%"
    )
    assert [line.split(":")[0] for line in lines] == ["feature uid", "feature scene", "feature shop", "feature hist", "feature hist_s"]
    report["uid"]["num_buckets"], report["uid"]["expected_shared_share"] = 1000, 0.0070
    assert not any(line.startswith("feature uid") for line in collision_warnings(report))
