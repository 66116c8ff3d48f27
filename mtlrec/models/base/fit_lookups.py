"""The `identity` / `dynamic` lookups of a model trained by `model.fit`: what the trainer
does around its steps and days (`mtlrec.training.trainer`), for Keras' own loop.

- each training step, before the forward pass, the whole batch's ids are counted and the
  dynamic tables admit the ids that are due (`FeatureEmbedding.observe`);
- `open_day(model, day)` opens a day: expired and evicted ids free their rows, which get
  fresh seeded values and reset optimizer slots (`FeatureEmbedding.start_day`,
  `mtlrec.optimizers.reset_slot_rows`).
"""

from __future__ import annotations

import datetime

from mtlrec.layers.embedding.feature_embedding import FeatureEmbedding
from mtlrec.optimizers.slot_rows import reset_slot_rows


def lookup_layers(model) -> list:
    """The model's `FeatureEmbedding` layers whose lookups keep state while training."""
    found = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, FeatureEmbedding) and layer.has_lookup_state and layer not in found:
            found.append(layer)
    return found


def observe(model, features) -> None:
    """Count one batch's ids and admit the due ones (call before the forward pass)."""
    for layer in lookup_layers(model):
        layer.observe(features)


def check_fit(model) -> None:
    """Refuse `fit` where Keras' loop cannot admit as the trainer does: with several
    replicas (each would admit its own part of the batch), or before a day is open."""
    layers = [layer for layer in lookup_layers(model) if layer.id_maps]
    if not layers:
        return
    tables = sorted(owner for layer in layers for owner in layer.id_maps)
    replicas = model.distribute_strategy.num_replicas_in_sync
    if replicas > 1:
        raise ValueError(
            f"model.fit cannot train the lookup: dynamic tables ({', '.join(tables)}) on "
            f"{replicas} replicas (each would admit the ids of its own part of a batch); "
            "train with `mtlrec train` or Experiment.train, which admit on the global batch"
        )
    closed = [owner for layer in layers for owner, id_map in layer.id_maps.items() if int(id_map.day.numpy()) == 0]
    if closed:
        raise ValueError(
            f"lookup: dynamic table {closed[0]!r} has no day open: call "
            "model.start_day('YYYY-MM-DD') before fitting each day's data (as `mtlrec train` "
            "does), so that ttl_days and evictions count days"
        )


def day_number(day) -> int:
    """A day (`datetime.date` or an ISO `YYYY-MM-DD` string) as the trainer numbers it."""
    if isinstance(day, datetime.date):
        return day.toordinal()
    try:
        return datetime.date.fromisoformat(str(day)).toordinal()
    except ValueError:
        raise ValueError(f"Expected day to be a date or a 'YYYY-MM-DD' string. Received: day={day!r}") from None


def open_day(model, day, seed=None) -> dict:
    """Open `day` in every identity/dynamic lookup of `model` (the trainer's `start_day`,
    with the model's optimizer): returns `{table: number of rows freed}`."""
    number = day_number(day)
    optimizer = getattr(model, "optimizer", None)
    freed = {}
    for layer in lookup_layers(model):
        for owner, rows in layer.start_day(number, seed=seed).items():
            if optimizer is not None and optimizer.built:
                reset_slot_rows(optimizer, layer.tables[owner], rows)
            freed[owner] = int(rows.shape[0])
    return freed
