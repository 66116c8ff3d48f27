"""Which tables' lookup settings a config changes on an existing run, and the refusal.

A table's rows mean ids by its lookup settings (``lookup``, ``num_buckets``,
``oov_buckets``): a run trained with some settings cannot read its rows with others.
Changing them is refused (exit 2, naming the feature, both values and
``--migrate-lookups``) unless the migration is asked for; then the changed tables start
afresh (``mtlrec.training.lookups.lookup_migration``) and the run's schema becomes the config's
(with the run's numeric statistics). A dynamic table's ``min_count``, ``ttl_days``,
``count_half_life_days`` and ``max_waiting`` decide only which ids get rows from now on:
changing them alone keeps the table and its id map, no flag needed (recorded like a
migration, ``start: kept``).
"""

from __future__ import annotations

import dataclasses
import json

from mtlrec.schema import Schema
from mtlrec.training.days.numeric_stats import without_stats

#: The command-line flag that asks for the migration.
FLAG = "--migrate-lookups"

#: The keys of a table's lookup settings, in the order a refusal names the first changed one.
SETTINGS = ("lookup", "num_buckets", "oov_buckets", "min_count", "ttl_days", "count_half_life_days", "max_waiting")


@dataclasses.dataclass(frozen=True)
class TableChange:
    """A table whose lookup settings the config changes.

    Attributes:
        table: the feature owning the table.
        features: every feature reading it (the owner, then those ``shared_with`` it).
        path: the config key path of the first changed setting.
        before: the settings the run was trained with (effective values).
        after: the settings the config asks for.
    """

    table: str
    features: tuple
    path: str
    before: dict
    after: dict

    @property
    def key(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def kept(self) -> bool:
        """Whether the table keeps its rows and id map: only the admission settings of a
        dynamic table change (``min_count``, ``ttl_days``, ``count_half_life_days``,
        ``max_waiting``)."""
        return all(self.before.get(k) == self.after.get(k) for k in SETTINGS[:3])

    @property
    def warm(self) -> bool:
        """Whether the new table starts from the old one's rows: it becomes ``identity``
        (every id is known: the row numbers) from ``hash`` or ``identity``."""
        return self.after["lookup"] == "identity" and self.before["lookup"] in ("hash", "identity")

    @property
    def start(self) -> str:
        """How the table starts: ``kept``, ``warm`` or ``fresh``."""
        return "kept" if self.kept else "warm" if self.warm else "fresh"

    def as_dict(self) -> dict:
        return {"table": self.table, "features": list(self.features), "from": self.before, "to": self.after, "start": self.start}


def table_settings(schema: Schema, feature) -> dict:
    """The effective lookup settings of the table ``feature`` owns (defaults filled)."""
    lookup = schema.lookup_of(feature)
    num_buckets, _ = schema.table_size(feature)
    settings = {"lookup": lookup.lookup, "num_buckets": num_buckets}
    if lookup.lookup != "hash":
        settings["oov_buckets"] = lookup.oov_rows
    if lookup.lookup == "dynamic":
        settings.update(
            min_count=lookup.admission_count, ttl_days=lookup.ttl_days,
            count_half_life_days=lookup.half_life_days, max_waiting=lookup.waiting_bound(num_buckets),
        )
    return settings


def _owners(schema: Schema) -> list[tuple[str, int, object]]:
    """``(section, index, feature)`` of every feature owning a table."""
    return [
        (section, i, f)
        for section in ("categorical", "sequence")
        for i, f in enumerate(getattr(schema, section))
        if f.shared_with is None
    ]


def changed_tables(saved: dict, wanted: dict) -> list[TableChange]:
    """The tables of ``wanted`` whose lookup settings differ from those in ``saved``."""
    before, after = Schema.from_dict(saved), Schema.from_dict(wanted)
    old = {f.name: f for _, _, f in _owners(before)}
    changes = []
    for section, i, f in _owners(after):
        if f.name not in old:
            continue
        was, now = table_settings(before, old[f.name]), table_settings(after, f)
        if was == now:
            continue
        key = next(k for k in SETTINGS if was.get(k) != now.get(k))
        readers = [g.name for g in after.categorical + after.sequence if f.name in (g.name, g.shared_with)]
        changes.append(TableChange(f.name, tuple(readers), f"schema.{section}[{i}].{key}", was, now))
    return changes


def same_apart_from_lookups(saved: dict, wanted: dict) -> bool:
    """Whether the two schemas differ at most in numeric statistics and lookup settings."""

    def neutral(schema):
        out = without_stats(schema)
        for section in ("categorical", "sequence"):
            for feature in out.get(section) or []:
                for key in SETTINGS:
                    feature.pop(key, None)
        return json.dumps(out, sort_keys=True)

    return neutral(saved) == neutral(wanted)


def migrated_schema(saved: dict, wanted: dict) -> dict:
    """The config's schema with the numeric statistics the run was trained with."""
    return {**json.loads(json.dumps(wanted)), "numeric": json.loads(json.dumps(saved.get("numeric") or []))}


def refusal(config, run_dir, change: TableChange):
    """The ``ConfigError`` (exit 2) refusing ``change`` without the flag, on its config line."""
    from mtlrec.training.config import config_error

    sharing = [n for n in change.features if n != change.table]
    shared = f" (and {', '.join(repr(n) for n in sharing)}, sharing its table)" if sharing else ""
    message = (
        f"feature {change.table!r}{shared} was trained with {change.key} {change.before[change.key]} "
        f"in {run_dir}, the config asks for {change.after[change.key]}; changing a feature's "
        f"{change.key} on an existing run is refused (its rows would no longer mean the same ids); "
        f"pass {FLAG} to {'warm-start its table from its old rows' if change.warm else 'start its table afresh'} "
        f"(every other table and weight is kept), or use a new run_dir"
    )
    return config_error(config, change.path, message)


def migration_record(changes: list[TableChange], schema: dict, day: str, command: str) -> dict:
    """What a migration's first checkpoint carries (``meta.json``) and ``state.json`` keeps
    (without ``schema``): the day, the command, each table from -> to, the new schema."""
    return {"day": day, "command": command, "tables": [c.as_dict() for c in changes], "schema": schema}
