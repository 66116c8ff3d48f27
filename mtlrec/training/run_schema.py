"""The schema a run's model is built with: the one saved in the run, else the config's."""

from __future__ import annotations

import logging

from mtlrec.training.errors import RunError
from mtlrec.training.lookups.lookup_changes import FLAG, changed_tables, migrated_schema, refusal, same_apart_from_lookups
from mtlrec.training.lookups.numeric_changes import numeric_change, numeric_refusal
from mtlrec.training.days.numeric_stats import needs_stats, stats_from_day

logger = logging.getLogger("mtlrec.training")


def resolve_schema(config, run, first_day: str | None, migrate: bool = False) -> tuple[dict, list]:
    """The run's saved schema when there is one, else the config's schema with the
    numeric statistics computed from ``first_day``; with the tables to migrate.

    A changed numeric encoding (``normalize``, bucket ``boundaries``) is refused
    (``ConfigError``, ``mtlrec.training.lookups.numeric_changes``). A saved schema that
    differs from the config's in more than lookup settings is otherwise
    refused (``RunError``); changed lookup settings are refused (``ConfigError``, see
    ``mtlrec.training.lookups.lookup_changes``) unless ``migrate`` or they keep the rows'
    meaning (a dynamic table's admission settings: ``min_count``, ``ttl_days``,
    ``count_half_life_days``, ``max_waiting``): the schema is then the
    config's with the run's statistics.

    Args:
        config: the ``ExperimentConfig``.
        run: the ``RunDirectory``.
        first_day: the first day to train (None: only an existing run's schema will do).
        migrate: ``--migrate-lookups`` was given.

    Returns:
        ``(schema, changes)``: ``changes`` the ``TableChange`` of each table whose lookup
        settings change (only ``kept`` ones unless ``migrate``).
    """
    from mtlrec.training.run.run_directory import SCHEMA_FILE

    wanted = config.schema.to_dict()
    saved = run.saved_schema()
    if saved is not None:
        numeric = numeric_change(saved, wanted)
        if numeric is not None:
            raise numeric_refusal(config, run.path, numeric)
        if not same_apart_from_lookups(saved, wanted):
            raise RunError(
                f"{run.path / SCHEMA_FILE}: the config's schema differs from the schema this run "
                f"directory was trained with; use a new run_dir for a new schema"
            )
        changes = changed_tables(saved, wanted)
        restarted = [c for c in changes if not c.kept]
        if restarted and not migrate:
            raise refusal(config, run.path, restarted[0])
        if migrate and not restarted:
            logger.warning("%s: nothing to migrate (no table of %s changes its lookup, num_buckets or oov_buckets)", FLAG, run.path)
        return (migrated_schema(saved, wanted) if changes else saved), changes
    if migrate:
        logger.warning("%s: nothing to migrate (%s is a new run)", FLAG, run.path)
    if not needs_stats(wanted):
        return wanted, []
    if first_day is None:
        raise RunError(f"{run.path}: no trained model here (no {SCHEMA_FILE})")
    return stats_from_day(config, wanted, first_day), []
