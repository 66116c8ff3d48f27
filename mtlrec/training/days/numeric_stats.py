"""What the first training day tells the numeric features, in a schema dict: the mean and
standard deviation of standardized ones, the bucket boundaries of bucketized ones
(``bucketize``, ``piecewise_linear``)."""

from __future__ import annotations

import json
import logging

logger = logging.getLogger("mtlrec.training")


def _standardized(schema: dict):
    return [f for f in schema.get("numeric", []) if f.get("normalize") == "standardize"]


#: The normalize modes whose features take boundaries from the first day.
_BUCKETED = ("bucketize", "piecewise_linear")


def _bucketed(schema: dict):
    return [f for f in schema.get("numeric", []) if f.get("normalize") in _BUCKETED]


def standardize_stats(schema: dict) -> dict:
    """``{column: (mean, std)}`` of the standardized features whose statistics are set."""
    return {
        f["name"]: (float(f["mean"]), float(f["std"]))
        for f in _standardized(schema)
        if f.get("mean") is not None and f.get("std") is not None
    }


def needs_stats(schema: dict) -> bool:
    """A standardized feature has no ``mean`` or ``std`` yet, or a bucketized one no
    ``boundaries``."""
    return any(f.get("mean") is None or f.get("std") is None for f in _standardized(schema)) or any(
        f.get("boundaries") is None for f in _bucketed(schema)
    )


def without_stats(schema: dict) -> dict:
    """A copy of ``schema`` with the statistics of standardized features and the
    boundaries of bucketized ones removed."""
    out = json.loads(json.dumps(schema))
    for feature in _standardized(out):
        feature.pop("mean", None)
        feature.pop("std", None)
    for feature in _bucketed(out):
        feature.pop("boundaries", None)
    return out


def stats_from_day(config, schema: dict, day: str) -> dict:
    """``schema`` with the statistics of its standardized features and the boundaries of
    its bucketized ones computed from ``day``. A bucketized feature whose values there
    give no boundaries (constant) is a ``ConfigError`` on its ``normalize`` line."""
    import mtlrec.data_pipeline as data
    from mtlrec.conventions.key_paths import KeyPathError
    from mtlrec.schema import compute_numeric_stats
    from mtlrec.training.config import config_error

    logger.info("computing numeric statistics from day %s", day)
    dataset = data.make_dataset(
        config.data.root, [day], schema, fmt=config.data.format, batch_size=8192, deterministic=True
    )
    try:
        return compute_numeric_stats(schema, (features for features, _ in dataset))
    except KeyPathError as err:
        raise config_error(config, err.path, f"{err.detail} (first training day {day})") from None
