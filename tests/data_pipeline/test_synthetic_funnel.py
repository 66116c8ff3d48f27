import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from mtlrec.data_pipeline import funnel_schema_dict, generate_funnel, make_dataset, validate_day
from mtlrec.data_pipeline.synthetic.synthetic_funnel import ITEM_ID_OFFSET, USER_ID_OFFSET
from mtlrec.schema import Schema


def read_day(root, day):
    files = sorted((root / f"dt={day}").glob("part-*.parquet"))
    return pq.ParquetFile(files[0]).read().to_pandas() if len(files) == 1 else \
        __import__("pandas").concat([pq.ParquetFile(f).read().to_pandas() for f in files], ignore_index=True)


def test_schema_matches_columns_and_days_validate(funnel_root, funnel_schema, funnel_days):
    s = Schema.from_dict(funnel_schema)
    assert s.key == "impression_id"
    assert s.table_size(s.sequence[0]) == s.table_size(s.categorical[3])  # hist_item_id shares item_id
    df = read_day(funnel_root, funnel_days[0])
    assert set(df.columns) == {s.key, *s.column_names, "true_ctr", "true_cvr"}
    assert "true_ctr" not in s.column_names and "true_cvr" not in s.column_names
    for day in funnel_days:
        assert validate_day(funnel_root, day, funnel_schema) == 3000
    assert len(list((funnel_root / f"dt={funnel_days[0]}").glob("part-*.parquet"))) == 2


def test_rows_are_consistent(funnel_root, funnel_days, funnel_knobs):
    df = read_day(funnel_root, funnel_days[1])
    assert (df.conversion <= df.click).all()
    assert set(df.purchasing_power) <= set(range(7)) and df.purchasing_power.nunique() > 3
    assert df.true_ctr.between(0, 1, inclusive="neither").all() and df.true_cvr.between(0, 1, inclusive="neither").all()
    assert set(df.scene) == {"search", "recommend"} and set(df.user_gender) <= {"female", "male", "unknown"}
    assert df.impression_id.is_unique
    lengths = df.hist_item_id.map(len)
    assert lengths.max() <= funnel_knobs["max_len"] and (lengths == 0).any()
    for col in ("hist_category", "hist_behavior", "hist_time_bucket", "hist_scene"):
        assert (df[col].map(len) == lengths).all()
    assert all((np.diff(t) <= 0).all() for t in df.hist_time_bucket)  # most recent last: time-since shrinks
    assert set(np.concatenate(df.hist_behavior.to_numpy())) == {0, 1, 2, 3}
    # the category of a history item is that item's category
    item_cat = dict(zip(df.item_id, df.item_category))
    pairs = [(i, c) for ids, cats in zip(df.hist_item_id, df.hist_category) for i, c in zip(ids, cats) if i in item_cat]
    assert pairs and all(item_cat[i] == c for i, c in pairs)


def test_true_ctr_and_cvr_match_empirical_rates(funnel_root, funnel_days):
    import pandas as pd

    df = pd.concat([read_day(funnel_root, d) for d in funnel_days], ignore_index=True)
    bins = pd.qcut(df.true_ctr, 4, labels=False)
    for _, g in df.groupby(bins):
        p = g.true_ctr.mean()
        assert abs(g.click.mean() - p) < 4 * np.sqrt(p * (1 - p) / len(g)) + 0.005
    clicked = df[df.click == 1]
    p = clicked.true_cvr.mean()
    assert abs(clicked.conversion.mean() - p) < 4 * np.sqrt(p * (1 - p) / len(clicked))
    assert roc_auc_score(df.click, df.true_ctr) > 0.65  # there is signal to learn


def test_deterministic_by_seed(tmp_path, funnel_root, funnel_days, funnel_knobs):
    generate_funnel(tmp_path / "a", funnel_days[0], 2, 3000, seed=7, **funnel_knobs)
    generate_funnel(tmp_path / "b", funnel_days[0], 1, 3000, seed=8, **funnel_knobs)
    for day in funnel_days[:2]:
        assert read_day(tmp_path / "a", day).equals(read_day(funnel_root, day))
    assert not read_day(tmp_path / "b", funnel_days[0]).equals(read_day(funnel_root, funnel_days[0]))


def test_new_items_and_popularity_drift(tmp_path):
    knobs = dict(num_users=200, num_items=100, initial_items=0.5, new_items_per_day=0.1, popularity_drift=1.0, max_len=3)
    days = generate_funnel(tmp_path, "2024-01-30", 3, 20000, seed=1, **knobs)
    assert days == ["2024-01-30", "2024-01-31", "2024-02-01"]
    items = [read_day(tmp_path, d).item_id.to_numpy() - ITEM_ID_OFFSET for d in days]
    assert items[0].max() < 50 and set(range(50, 60)) & set(items[1]) and items[1].max() < 60
    assert items[2].max() >= 60
    share = [np.bincount(i, minlength=100)[:50] / len(i) for i in items]
    half = [np.bincount(items[0][s], minlength=100)[:50] / 10000 for s in (slice(0, 10000), slice(10000, None))]
    noise = np.abs(half[0] - half[1]).sum()
    assert np.abs(share[0] - share[2]).sum() > 3 * noise  # popularity moved beyond sampling noise


def test_churn_knobs_retire_old_items_and_bring_new_users(tmp_path):
    knobs = dict(num_users=200, num_items=100, initial_items=0.5, new_items_per_day=0.1, retired_items_per_day=0.2,
                 initial_users=0.5, new_users_per_day=0.25, max_len=3)
    days = generate_funnel(tmp_path, "2024-01-01", 3, 4000, seed=1, **knobs)
    frames = [read_day(tmp_path, d) for d in days]
    items = [f.item_id.to_numpy() - ITEM_ID_OFFSET for f in frames]
    users = [f.user_id.to_numpy() - USER_ID_OFFSET for f in frames]
    assert [(int(i.min()) >= lo, int(i.max()) < hi) for i, lo, hi in zip(items, (0, 20, 40), (50, 60, 70))] == [(True, True)] * 3
    assert items[1].min() < 25 and items[2].max() >= 65  # the live range is used end to end
    hist = [np.concatenate(f.hist_item_id.to_numpy()) - ITEM_ID_OFFSET for f in frames]
    assert hist[2].min() >= 40  # retired items leave behaviour histories too
    assert [int(u.max()) for u in users] == [99, 149, 199]


def test_relatedness_couples_ctr_and_cvr(tmp_path):
    corr = {}
    for r in (0.0, 1.0):
        generate_funnel(tmp_path / str(r), "2024-01-01", 1, 6000, seed=3, relatedness=r, num_users=500, num_items=300)
        df = read_day(tmp_path / str(r), "2024-01-01")
        logit = lambda p: np.log(p / (1 - p))  # noqa: E731
        corr[r] = np.corrcoef(logit(df.true_ctr), logit(df.true_cvr))[0, 1]
    assert corr[1.0] > corr[0.0] + 0.2


def test_tfrecord_output_reads_like_parquet(tmp_path, funnel_root, funnel_schema, funnel_days, funnel_knobs):
    generate_funnel(tmp_path, funnel_days[0], 1, 3000, seed=7, fmt="tfrecord", **dict(funnel_knobs, compression="GZIP"))
    assert sorted(p.name for p in (tmp_path / f"dt={funnel_days[0]}").iterdir()) == ["part-00000.tfrecord.gz", "part-00001.tfrecord.gz"]
    kw = dict(batch_size=4096, extra_columns=("true_cvr",))
    (fa, la), = list(make_dataset(funnel_root, funnel_days[0], funnel_schema, **kw))
    (fb, lb), = list(make_dataset(tmp_path, funnel_days[0], funnel_schema, fmt="tfrecord", **kw))
    for k in fa:
        np.testing.assert_array_equal(fa[k].numpy(), fb[k].numpy(), err_msg=k)
    for k in la:
        np.testing.assert_array_equal(la[k].numpy(), lb[k].numpy(), err_msg=k)


def test_schema_sizes_follow_knobs():
    s = funnel_schema_dict(num_users=100, num_items=40, dim=4, property_dim=2, max_len=7)
    cat = {c["name"]: c for c in s["categorical"]}
    assert cat["user_id"]["num_buckets"] == 200 and cat["item_id"]["num_buckets"] == 80 and cat["item_id"]["dim"] == 4
    seq = {c["name"]: c for c in s["sequence"]}
    assert seq["hist_behavior"]["dim"] == 2 and all(c["max_len"] == 7 for c in s["sequence"])
    assert [label["name"] for label in s["labels"]] == ["click", "conversion", "purchasing_power", "follow"]


def test_knob_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown synthetic funnel knobs \['users'\]"):
        generate_funnel(tmp_path, "2024-01-01", 1, 10, users=3)
    with pytest.raises(ValueError, match="Received: retired_items_per_day=-0.1"):
        generate_funnel(tmp_path, "2024-01-01", 1, 10, retired_items_per_day=-0.1)
    with pytest.raises(ValueError, match="Received: relatedness=1.5"):
        generate_funnel(tmp_path, "2024-01-01", 1, 10, relatedness=1.5)
    with pytest.raises(ValueError, match="Received: rows_per_day=0"):
        generate_funnel(tmp_path, "2024-01-01", 1, 0)
    with pytest.raises(ValueError, match="Received: start_day='01/01/2024'"):
        generate_funnel(tmp_path, "01/01/2024", 1, 10)
    with pytest.raises(ValueError, match="Received: fmt='csv'"):
        generate_funnel(tmp_path, "2024-01-01", 1, 10, fmt="csv")
