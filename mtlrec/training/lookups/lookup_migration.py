"""``--migrate-lookups``: restore a run into a model whose changed tables start afresh.

The model of the run's saved schema is built and restored from the newest checkpoint;
everything of it is then copied into the trainer of the migrated schema (model weights
by path, the optimizers' variables, the loss weighting's, the global step, the id maps of
the unchanged tables) except what belongs to a migrated table: its rows keep the seeded
initialisation of a new table (``derive_seed(model seed, "embedding_<table>")``, exactly
what a new run would start with), its optimizer slots their initial values, its id map
(or out-of-range counters) starts empty. Both models live in memory during the copy.
A ``kept`` table (only a dynamic table's admission settings changed: ``min_count``,
``ttl_days``, ``count_half_life_days``, ``max_waiting``) is
copied like the unchanged ones.

One exception, the warm start of a table that becomes ``identity``: every id of it is
known (the row numbers), so row ``r`` starts from the old row id ``r`` read: its hashed
row (``hash_ids(r, old num_buckets)``) from ``hash``, row ``r`` itself from ``identity``
(when ``r`` was in range); the out-of-vocabulary rows, and rows with no old row, keep
the seeded initialisation. A table that becomes ``dynamic`` starts cold: its ids are
not known before they are admitted, days later, by when the old table is gone.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from mtlrec.training.errors import RunError
from mtlrec.training.lookups.lookup_changes import FLAG

logger = logging.getLogger("mtlrec.training")


def restore_migrated(run, trainer, saved_schema: dict, changes) -> dict | None:
    """Restore the newest checkpoint of ``run`` into ``trainer`` (built with the migrated
    schema), leaving the tables of ``changes`` (``TableChange``) as built (or warm-started;
    ``kept`` ones are restored like the others).

    Returns:
        The restored checkpoint's meta (None: no checkpoint yet, nothing to copy).

    Raises:
        RunError: the newest checkpoint is taken mid-day (finish that day first).
    """
    from mtlrec.training.run.checkpoints import CheckpointManager
    from mtlrec.training.trainer import Trainer

    latest = run.latest_checkpoint()
    if latest is None:
        return None
    path, meta = latest
    if not meta.get("completed", False):
        raise RunError(
            f"{path}: day {meta.get('day')} was interrupted at step {meta.get('steps')} of the day; "
            f"finish it with the lookups it was trained with (the same command, without the changed "
            f"lookups) before {FLAG}"
        )
    old = Trainer(trainer.config, saved_schema, strategy=trainer.strategy)
    CheckpointManager(run.checkpoint_dir, old.checkpoint, is_chief=False).restore(path)
    copy_unchanged(old, trainer, {c.table for c in changes if not c.kept})
    for change in changes:
        if change.warm:
            warm_start(old, trainer, change)
    log_migration(changes, path)
    return meta


def log_migration(changes, source) -> None:
    """One line: how each changed table starts; everything else comes from ``source``."""
    names = ", ".join(f"{c.table} ({_START[c.start]})" for c in changes)
    logger.info("%s: migrated tables %s; everything else restored from %s", FLAG, names, source)


_START = {"kept": "rows and id map kept", "warm": "warm-started from its old rows", "fresh": "fresh rows"}


def warm_start(old, new, change) -> None:
    """Row ``r < num_buckets`` of ``change``'s new ``identity`` table := the old table's row
    of id ``r`` (every ``FeatureEmbedding`` of the model holding that table)."""
    from mtlrec.layers.embedding._id_hashing import hash_ids

    ids = tf.range(change.after["num_buckets"], dtype=tf.int64)
    was = change.before["num_buckets"]
    if change.before["lookup"] == "hash":
        rows, source = ids, hash_ids(ids, was)
    else:
        rows = source = ids[:was]
    old_layers = _embedding_layers(old.model)
    for path, layer in _embedding_layers(new.model).items():
        if change.table in layer.tables:
            values = tf.gather(old_layers[path].tables[change.table].value, source)
            layer.tables[change.table].value.scatter_update(tf.IndexedSlices(values, rows))


def _embedding_layers(model) -> dict:
    """Path -> every ``FeatureEmbedding`` layer of ``model``."""
    from mtlrec.layers import FeatureEmbedding

    return {layer.path: layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, FeatureEmbedding)}


def migrated_variables(trainer, tables: set) -> list:
    """The variables of ``trainer`` that belong to the tables in ``tables``: the tables,
    their optimizer slots, their id maps' variables, their out-of-range counters."""
    from mtlrec.optimizers.slot_rows import slots_of

    found = []
    for layer in _embedding_layers(trainer.model).values():
        for owner in tables & set(layer.tables):
            table = layer.tables[owner]
            found.append(table)
            found += [slot for slot, _ in slots_of(trainer.embedding_optimizer, table)]
            if owner in layer.id_maps:
                found += list(layer.id_maps[owner].variables)
            if owner in layer.lookup_counts:
                found.append(layer.lookup_counts[owner])
    return found


def _pairs(old: list, new: list, what: str):
    """``(old, new)`` variables of two optimizers (or weightings) built alike, in order."""

    def name(v):
        return v.path.split("/", 1)[-1]

    if [name(v) for v in old] != [name(v) for v in new]:
        raise RunError(f"{FLAG}: the {what} of the run and of the migrated model differ")
    return zip(old, new)


def copy_unchanged(old, new, tables: set) -> None:
    """Copy every variable and id map of trainer ``old`` into trainer ``new`` except
    those of the tables in ``tables``."""
    fresh = {id(v) for v in migrated_variables(new, tables)}
    by_path = {v.path: v for v in old.model.variables}
    for variable in new.model.variables:
        if id(variable) in fresh:
            continue
        source = by_path.get(variable.path)
        if source is None or tuple(source.shape) != tuple(variable.shape):
            raise RunError(f"{FLAG}: {variable.path} of the migrated model has no counterpart in the run's checkpoint")
        variable.assign(source.value)
    for what in ("dense_optimizer", "embedding_optimizer"):
        for a, b in _pairs(getattr(old, what).variables, getattr(new, what).variables, what):
            if id(b) not in fresh:
                b.assign(a.value)
    for a, b in _pairs(old.weighting.variables, new.weighting.variables, "loss weighting"):
        b.assign(a.value)
    new.global_step.assign(old.global_step)
    old_layers = _embedding_layers(old.model)
    for path, layer in _embedding_layers(new.model).items():
        for owner, id_map in layer.id_maps.items():
            if owner not in tables:
                keys, values = old_layers[path].id_maps[owner].table.export()
                id_map.table.insert(keys, values)
