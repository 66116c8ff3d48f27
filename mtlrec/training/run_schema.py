"""The schema a run's model is built with: the one saved in the run, else the config's."""

from __future__ import annotations

from mtlrec.training.errors import RunError
from mtlrec.training.numeric_stats import needs_stats, stats_from_day, without_stats


def resolve_schema(config, run, first_day: str | None) -> dict:
    """The run's ``schema.json`` when there is one (refused when the config's differs), else
    the config's schema with the numeric statistics computed from ``first_day``.

    Args:
        config: the ``ExperimentConfig``.
        run: the ``RunDirectory``.
        first_day: the first day to train (None: only an existing run's schema will do).
    """
    from mtlrec.training.run_directory import SCHEMA_FILE

    path = run.path / SCHEMA_FILE
    wanted = config.schema.to_dict()
    saved = run.saved_schema()
    if saved is not None:
        _refuse_lookup_change(path, saved, wanted)
        if without_stats(saved) != without_stats(wanted):
            raise RunError(
                f"{path}: the config's schema differs from the schema this run "
                f"directory was trained with; use a new run_dir for a new schema"
            )
        return saved
    if not needs_stats(wanted):
        return wanted
    if first_day is None:
        raise RunError(f"{run.path}: no trained model here (no {SCHEMA_FILE})")
    return stats_from_day(config, wanted, first_day)


def _refuse_lookup_change(path, saved: dict, wanted: dict) -> None:
    """One clear error when a feature's lookup differs from the one the run was trained with."""
    from mtlrec.schema import Schema

    before = {f.name: f.lookup.lookup for f in Schema.from_dict(saved).features if hasattr(f, "lookup")}
    for f in Schema.from_dict(wanted).features:
        if hasattr(f, "lookup") and f.name in before and before[f.name] != f.lookup.lookup:
            raise RunError(
                f"{path}: feature {f.name!r} was trained with lookup {before[f.name]}, the config "
                f"asks for {f.lookup.lookup}; changing a feature's lookup on an existing run is "
                f"refused (its rows would no longer mean the same ids); use a new run_dir"
            )
