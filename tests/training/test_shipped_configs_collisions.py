"""The demo and the shipped experiment configs, on the data they document, share no
embedding row between ids: their day checks log no collision warning."""

import logging
from pathlib import Path

import pytest

from mtlrec.data_pipeline import generate_funnel
from mtlrec.training import demo
from mtlrec.training.config import config_from_dict, load_config, load_configs
from mtlrec.training.days.day_validation import validate_days

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml"))
COLLISION = "share an embedding row"


def collision_lines(caplog):
    return [r.getMessage() for r in caplog.records if COLLISION in r.getMessage()]


def test_the_demo_configs_log_no_collision_warning_on_the_demo_data(tmp_path, caplog):
    generate_funnel(tmp_path / "data", demo.START_DAY, 1, demo.ROWS_PER_DAY, seed=0, **demo.KNOBS)
    configs = load_configs(demo.DEMO_CONFIG, base_dir=tmp_path)
    assert [c.name for c in configs] == ["esmm", "mmoe"]
    for config in configs:
        with caplog.at_level(logging.INFO, logger="mtlrec.training"):
            checks = validate_days(config, None, [demo.START_DAY])
        assert checks[demo.START_DAY].rows == demo.ROWS_PER_DAY
        assert any("validating day" in r.getMessage() for r in caplog.records)  # the checks did log
        assert collision_lines(caplog) == []
        assert checks[demo.START_DAY].id_collisions == {}  # no hashed table left


@pytest.fixture(scope="module")
def funnel_day(tmp_path_factory):
    """A day of the funnel the experiments document (the generator's default knobs);
    50,000 rows already show nearly all of its 10,000 users and 5,000 items."""
    root = tmp_path_factory.mktemp("funnel")
    return root, generate_funnel(root, "2024-01-01", 1, 50_000, seed=0)[0]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_shipped_experiments_log_no_collision_warning_on_their_data(path, funnel_day, caplog):
    root, day = funnel_day
    config = load_config(path)
    config = config_from_dict({**config.to_dict(), "data": {**config.to_dict()["data"], "root": str(root)}})
    with caplog.at_level(logging.WARNING, logger="mtlrec.training"):
        checks = validate_days(config, None, [day])
    assert collision_lines(caplog) == []
    assert checks[day].id_collisions == {}
