import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from mtlrec.cli import main
from mtlrec.data_pipeline import generate_taste_days, taste_schema_dict, validate_day
from mtlrec.data_pipeline.synthetic.synthetic_taste import BOUND_COLUMNS, TasteWorld
from mtlrec.schema import Schema

KNOBS = dict(num_users=3000, num_items=2000, num_categories=40, max_len=12, history_per_day=2,
             row_group_size=4000)
DAYS = ["2024-05-01", "2024-05-02"]
ROWS = 10_000


@pytest.fixture(scope="module")
def taste_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("taste")
    assert generate_taste_days(root, DAYS[0], 2, ROWS, seed=3, **KNOBS) == DAYS
    return root


def read(root, day):
    return pq.ParquetFile(root / f"dt={day}" / "part-00000.parquet").read()


def test_days_validate_against_the_schema_and_are_written_by_row_group(taste_root):
    schema = taste_schema_dict(**KNOBS)
    parsed = Schema.from_dict(schema)
    assert [f.lookup.lookup for f in parsed.categorical] == ["identity"] * 4  # no id shares a row
    assert parsed.table_size(parsed.sequence[0]) == parsed.table_size(parsed.categorical[1])  # item_id's table
    assert [f.shared_with for f in parsed.sequence] == ["item_id", "item_category"]
    for day in DAYS:
        assert validate_day(taste_root, day, schema) == ROWS
    table = read(taste_root, DAYS[0])
    assert set(table.column_names) == {parsed.key, *parsed.column_names, "true_ctr", "true_cvr", *BOUND_COLUMNS}
    assert pq.ParquetFile(taste_root / f"dt={DAYS[0]}" / "part-00000.parquet").num_row_groups == 3  # 4000, 4000, 2000
    df = table.to_pandas()
    assert df.impression_id.is_unique and (df.conversion <= df.click).all()
    assert df.user_id.between(0, KNOBS["num_users"] - 1).all() and df.item_id.between(0, KNOBS["num_items"] - 1).all()
    lengths = df.hist_item_id.map(len)
    assert lengths.max() == KNOBS["max_len"] and (lengths == 0).any()
    world = TasteWorld(3, **KNOBS)
    for ids, cats in zip(df.hist_item_id[:200], df.hist_category[:200]):
        np.testing.assert_array_equal(world.item_category[ids], cats)


def test_same_seed_same_days_other_seed_other_days(taste_root, tmp_path):
    generate_taste_days(tmp_path / "same", DAYS[0], 2, ROWS, seed=3, **KNOBS)
    generate_taste_days(tmp_path / "other", DAYS[0], 1, ROWS, seed=4, **KNOBS)
    for day in DAYS:
        assert read(tmp_path / "same", day).equals(read(taste_root, day))
    other = read(tmp_path / "other", DAYS[0])
    assert other.column("click").to_pylist() != read(taste_root, DAYS[0]).column("click").to_pylist()


def test_the_history_reflects_the_taste(taste_root):
    """Score each history step by its user's true taste . the item's vector: against the
    same steps given to other users (a shuffled history) the true pairs score higher."""
    world = TasteWorld(3, **KNOBS)
    tastes = world.tastes(0, KNOBS["num_users"])
    df = read(taste_root, DAYS[0]).to_pandas().drop_duplicates("user_id")
    lengths = df.hist_item_id.map(len).to_numpy()
    users = np.repeat(df.user_id.to_numpy(), lengths)
    items = np.concatenate(df.hist_item_id.to_numpy())
    shuffled = np.random.default_rng(0).permutation(users)
    other = np.random.default_rng(1).permutation(users)

    def score(u):
        return np.einsum("ij,ij->i", tastes[u], world.v[items])

    label = np.r_[np.ones(len(items)), np.zeros(len(items))]
    assert roc_auc_score(label, np.r_[score(users), score(shuffled)]) > 0.6
    assert abs(roc_auc_score(label, np.r_[score(other), score(shuffled)]) - 0.5) < 0.02


def test_the_bounds_order_oracle_history_prior(taste_root):
    df = read(taste_root, DAYS[1]).to_pandas()
    click, ctcvr = df.click, df.click * df.conversion
    oracle = roc_auc_score(click, df.true_ctr)
    history = roc_auc_score(click, df.history_ctr)
    prior = roc_auc_score(click, df.prior_ctr)
    assert oracle > history > prior + 0.03, (oracle, history, prior)
    assert roc_auc_score(ctcvr, df.true_ctr * df.true_cvr) > roc_auc_score(ctcvr, df.history_ctcvr) \
        > roc_auc_score(ctcvr, df.prior_ctcvr)
    # the history's estimate is calibrated: its mean is the click rate (4 sd of the day's rate)
    rate = click.mean()
    assert abs(df.history_ctr.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / len(df))
    # an empty history gives the prior
    empty = df.hist_item_id.map(len) == 0
    np.testing.assert_allclose(df.history_ctr[empty], df.prior_ctr[empty], rtol=1e-6)


def test_each_day_appends_to_the_users_history(taste_root):
    first, second = (read(taste_root, d).to_pandas().drop_duplicates("user_id").set_index("user_id")
                     for d in DAYS)
    both = first.index.intersection(second.index)
    assert len(both) > 500
    T, k = KNOBS["max_len"], KNOBS["history_per_day"]
    for user in both[:300]:
        before, after = list(first.hist_item_id[user]), list(second.hist_item_id[user])
        assert len(after) == min(T, len(before) + k)
        assert after[:-k] == before[len(before) - (len(after) - k):]  # the oldest steps scroll out


def test_a_catalogue_with_empty_categories_draws_only_real_items(tmp_path):
    knobs = dict(num_users=50, num_items=6, num_categories=40, max_len=8)
    generate_taste_days(tmp_path, DAYS[0], 1, 200, seed=1, **knobs)
    df = read(tmp_path, DAYS[0]).to_pandas()
    world = TasteWorld(1, **knobs)
    items = np.concatenate(df.hist_item_id.to_numpy())
    assert len(items) > 100 and items.min() >= 0 and items.max() < 6
    np.testing.assert_array_equal(np.concatenate(df.hist_category.to_numpy()), world.item_category[items])


def test_bad_knobs_and_formats_are_one_line(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"Unknown taste world knobs \['relatedness'\]"):
        generate_taste_days(tmp_path, DAYS[0], 1, 10, relatedness=0.5)
    with pytest.raises(ValueError, match="The taste world writes parquet"):
        generate_taste_days(tmp_path, DAYS[0], 1, 10, fmt="tfrecord")
    with pytest.raises(ValueError, match="Expected taste_strength >= 0"):
        taste_schema_dict(taste_strength=-1.0)
    args = ["generate", "--world", "taste", "--root", str(tmp_path / "g"), "--days", "1", "--start", DAYS[0],
            "--rows", "10", "--knob", "max_len=0"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("mtlrec: error: ")


def test_the_cli_writes_the_taste_world(tmp_path, capsys):
    args = ["generate", "--world", "taste", "--root", str(tmp_path), "--days", "1", "--start", DAYS[0],
            "--rows", "50", "--seed", "3"] + [f"--knob={k}={v}" for k, v in KNOBS.items()]
    assert main(args) == 0
    assert f"wrote 1 days ({DAYS[0]} .. {DAYS[0]}), 50 rows each" in capsys.readouterr().out
    assert validate_day(tmp_path, DAYS[0], taste_schema_dict(**KNOBS)) == 50
