"""The mean and standard deviation of standardized numeric features, in a schema dict."""

from __future__ import annotations

import json
import logging

logger = logging.getLogger("mtlrec.training")


def _standardized(schema: dict):
    return [f for f in schema.get("numeric", []) if f.get("normalize") == "standardize"]


def standardize_stats(schema: dict) -> dict:
    """``{column: (mean, std)}`` of the standardized features whose statistics are set."""
    return {
        f["name"]: (float(f["mean"]), float(f["std"]))
        for f in _standardized(schema)
        if f.get("mean") is not None and f.get("std") is not None
    }


def needs_stats(schema: dict) -> bool:
    """A standardized feature has no ``mean`` or ``std`` yet."""
    return any(f.get("mean") is None or f.get("std") is None for f in _standardized(schema))


def without_stats(schema: dict) -> dict:
    """A copy of ``schema`` with the statistics of standardized features removed."""
    out = json.loads(json.dumps(schema))
    for feature in _standardized(out):
        feature.pop("mean", None)
        feature.pop("std", None)
    return out


def stats_from_day(config, schema: dict, day: str) -> dict:
    """``schema`` with the statistics of its standardized features computed from ``day``."""
    import mtlrec.data_pipeline as data
    from mtlrec.schema import compute_numeric_stats

    logger.info("computing numeric statistics from day %s", day)
    dataset = data.make_dataset(
        config.data.root, [day], schema, fmt=config.data.format, batch_size=8192, deterministic=True
    )
    return compute_numeric_stats(schema, (features for features, _ in dataset))
