"""Check the days of a command before anything is written, and keep what the checks found."""

from __future__ import annotations

import dataclasses
import logging

from mtlrec.training.days.numeric_stats import standardize_stats

logger = logging.getLogger("mtlrec.training")


@dataclasses.dataclass(frozen=True)
class DayCheck:
    """What validating one day found.

    Attributes:
        rows: the day's rows (the progress total, the steps of a worker's file shard).
        non_finite: ``{column: NaN/infinite values replaced by the feature default}``.
        id_collisions: the hashed tables' report (``data_pipeline.collision_report``).
    """

    rows: int
    non_finite: dict
    id_collisions: dict


def validate_days(config, saved_schema: dict | None, days) -> dict[str, DayCheck]:
    """``{day: DayCheck}``; raises ``DataValidationError`` naming the file and column of
    the first bad value. ``saved_schema``: the run's ``schema.json`` (its statistics tell
    numeric values far outside training), None before the first day."""
    import mtlrec.data_pipeline as data

    stats = standardize_stats(saved_schema if saved_schema is not None else config.schema.to_dict())
    schema = config.schema
    checks = {}
    for day in days:
        logger.info("validating day %s", day)
        counts, far, id_counts = {}, {}, {}
        rows = data.validate_day(
            config.data.root,
            day,
            config.schema,
            fmt=config.data.format,
            funnel=tuple(tuple(p) for p in config.data.funnel),
            non_finite=config.data.non_finite_numeric,
            counts=counts,
            stats=stats,
            far=far,
            id_counts=id_counts,
            weight_columns=_weight_columns(config),
        )
        checks[day] = DayCheck(rows, counts, data.collision_report(schema, id_counts))
        _warn(day, checks[day], far, data)
    return checks


def _weight_columns(config) -> list:
    """The columns of the tasks' row weights, each with the config key that names it."""
    from mtlrec.data_pipeline.weight_columns import WeightColumn

    found = {}
    for i, task in enumerate(config.tasks):
        if task.sample_weight is not None and task.sample_weight not in found:
            key = "data.sample_weight" if task.sample_weight == config.data.sample_weight else f"tasks[{i}].sample_weight"
            found[task.sample_weight] = WeightColumn(task.sample_weight, "sample_weight", key)
        if task.negative_keep_rate_column is not None:
            column = task.negative_keep_rate_column
            found[column] = WeightColumn(column, "keep_rate", f"tasks[{i}].negative_keep_rate_column")
    return list(found.values())


def _warn(day: str, check: DayCheck, far: dict, data) -> None:
    for line in data.collision_warnings(check.id_collisions):
        logger.warning("day %s: %s", day, line)
    if far:
        logger.warning(
            "day %s: numeric values far outside the training statistics (more than %g "
            "standard deviations from the mean; they saturate the model): %s",
            day, data.validation.FAR_STDS,
            ", ".join(f"{k} {n} values (largest {v:g})" for k, (n, v) in sorted(far.items())),
        )
    if check.non_finite:
        logger.warning(
            "day %s: NaN/infinite numeric values replaced by the feature default: %s",
            day,
            ", ".join(f"{k} {v}" for k, v in sorted(check.non_finite.items())),
        )
